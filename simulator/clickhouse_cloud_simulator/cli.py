"""``clickhouse-cloud-simulator``: serve the ClickHouse Cloud API simulator until interrupted.

Only argparse/stdlib at module top: the simulator (aiohttp) is imported inside :func:`main`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the ``simulator`` sub-command."""
    d = "default"
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8123, help="port (0 = any free port; default 8123)")
    parser.add_argument("--org-id", help="organization id (uuid; generated when omitted)")
    parser.add_argument("--key-id", help="API key id (generated when omitted)")
    parser.add_argument("--key-secret", help="API key secret (generated when omitted)")
    timing = parser.add_argument_group("state machine durations (seconds)")
    for flag, default, text in (
        ("create", 5.0, "creating -> running"),
        ("replica", 5.0, "read replica creating -> running"),
        ("restore-phase", 2.0, "each restore phase"),
        ("restart", 3.0, "restarting -> running"),
        ("resize", 5.0, "size/haType change lands"),
        ("delete", 2.0, "deleting -> gone"),
        ("promote", 1.0, "replica promotion lands"),
        ("first-backup", 10.0, "first backup of a new service (read replicas/restores wait for it)"),
        ("backup-interval", 86400.0, "base backups after the first one"),
    ):
        timing.add_argument(f"--{flag}-seconds", type=float, default=default, help=f"{text} ({d} {default:g})")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--rate-limit", type=int, default=10, help="requests per window per API key (default 10)")
    limits.add_argument("--rate-window", type=float, default=10.0, help="rate-limit window in seconds (default 10)")
    limits.add_argument("--no-rate-limit", action="store_true", help="switch the rate limit off")
    limits.add_argument("--service-quota", type=int, default=500, help="services per organization (default 500)")
    limits.add_argument(
        "--retention-days",
        type=float,
        default=7.0,
        help="backup retention: the point-in-time restore window (default 7)",
    )
    behaviour = parser.add_argument_group("behaviour")
    behaviour.add_argument("--no-postgres", action="store_true", help="no real PostgreSQL servers behind services")
    behaviour.add_argument("--require-postgres", action="store_true", help="fail unless real PostgreSQL is available")
    behaviour.add_argument("--postgres-dir", help="directory for the PostgreSQL data directories")
    behaviour.add_argument(
        "--no-redact", action="store_true", help="return password/connectionString on every response"
    )
    behaviour.add_argument("--tags-merge-patch", action="store_true", help="a PATCH without tags keeps them")
    behaviour.add_argument(
        "--strict-pg-config",
        action="store_true",
        help="refuse unknown pgConfig keys, nulls and values outside an enum with 400 (the live API drops them)",
    )
    behaviour.add_argument(
        "--unsupported-pg-config",
        help="comma-separated pgConfig keys this API drops silently (a server older than its OpenAPI document)",
    )
    behaviour.add_argument("--regions", help="comma-separated supported regions")
    behaviour.add_argument("--sizes", help="comma-separated supported sizes (default: the OpenAPI pgSize enum)")
    behaviour.add_argument("--quiet", action="store_true", help="no access log")


def _config(args: argparse.Namespace):  # -> SimulatorConfig
    from clickhouse_cloud_simulator.config import DEFAULT_REGIONS, SimulatorConfig

    real_pg = False if args.no_postgres else (True if args.require_postgres else None)
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        org_id=args.org_id,
        key_id=args.key_id,
        key_secret=args.key_secret,
        create_seconds=args.create_seconds,
        replica_seconds=args.replica_seconds,
        restore_phase_seconds=args.restore_phase_seconds,
        restart_seconds=args.restart_seconds,
        resize_seconds=args.resize_seconds,
        delete_seconds=args.delete_seconds,
        promote_seconds=args.promote_seconds,
        first_backup_seconds=args.first_backup_seconds,
        backup_interval_seconds=args.backup_interval_seconds,
        rate_limit=None if args.no_rate_limit else args.rate_limit,
        rate_window=args.rate_window,
        service_quota=args.service_quota,
        retention_days=args.retention_days,
        real_postgres=real_pg,
        postgres_base_dir=args.postgres_dir,
        redact=not args.no_redact,
        tags_merge_patch=args.tags_merge_patch,
        strict_pg_config=args.strict_pg_config,
        unsupported_pg_config=tuple(k for k in (args.unsupported_pg_config or "").split(",") if k),
        regions=tuple(r.strip() for r in args.regions.split(",") if r.strip()) if args.regions else DEFAULT_REGIONS,
        sizes=tuple(s.strip() for s in args.sizes.split(",") if s.strip()) if args.sizes else None,
        access_log=not args.quiet,
    )


def banner(sim) -> str:
    """What the user needs to talk to the simulator (it prints the key secret: local use only)."""
    rl = (
        "off"
        if not sim.config.rate_limited
        else f"{sim.config.rate_limit} requests / {sim.config.rate_window:g} s per key"
    )
    return "\n".join(
        [
            "ClickHouse Cloud API simulator is running",
            f"  URL:          {sim.url}",
            f"  org id:       {sim.org_id}",
            f"  key id:       {sim.key_id}",
            f"  key secret:   {sim.key_secret}",
            f"  postgres:     {'real PostgreSQL servers' if sim.real_postgres else 'simulated (no servers)'}",
            f"  rate limit:   {rl}",
            "Try:",
            f"  curl --user '{sim.key_id}:{sim.key_secret}' {sim.url}/organizations/{sim.org_id}/postgres",
            "Press Ctrl+C to stop.",
        ]
    )


def main(args: argparse.Namespace) -> int:
    """Run the simulator until SIGINT/SIGTERM."""
    import asyncio
    import logging
    import signal
    import sys

    from clickhouse_cloud_simulator.server import Simulator

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def serve() -> int:
        try:
            sim = await Simulator(_config(args)).start()
        except (OSError, RuntimeError) as exc:
            print(f"simulator: cannot start: {exc}", file=sys.stderr)
            return 1
        print(banner(sim), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("stopping simulator", flush=True)
        await sim.stop()
        return 0

    return asyncio.run(serve())


def run(argv: list[str] | None = None) -> int:
    """``clickhouse-cloud-simulator``: the console script."""
    parser = argparse.ArgumentParser(
        prog="clickhouse-cloud-simulator",
        description="Serve a local ClickHouse Cloud API (Managed Postgres) until interrupted.",
    )
    add_arguments(parser)
    return int(main(parser.parse_args(argv)) or 0)
