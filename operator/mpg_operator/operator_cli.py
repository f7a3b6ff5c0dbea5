"""``mpg-operator run``: run the operator (kopf underneath) against the current cluster."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="serve only this namespace (repeatable; globs allowed)",
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="serve every namespace (default)")
    parser.add_argument("--liveness", metavar="URL", help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics port (0 disables)")
    parser.add_argument("--metrics-host", default="0.0.0.0", help="address of the metrics server")
    parser.add_argument("--peering", metavar="NAME", help="kopf peering name (hot standby); default: standalone")
    parser.add_argument(
        "--priority",
        type=int,
        default=0,
        help="kopf peering priority: with --peering, the highest-priority operator serves, others stand by",
    )
    parser.add_argument("--log-format", choices=["json", "text"], default="text", help="log format")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def configure_logging(fmt: str, verbose: bool) -> None:
    import logging

    level = logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler()
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter  # a kopf dependency

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def without_kubernetes_client() -> None:
    """Keep kopf from importing the ``kubernetes`` package when it happens to be installed.

    The operator does not use it (:mod:`~mpg_operator.controller.kube` talks through its own aiohttp
    session, :mod:`~mpg_operator.controller.kubehttp`), but kopf imports it, if present, to recognise its models and to offer its login:
    about 20 MiB for nothing. Only for this process's ``run``: it must happen before kopf's import.
    """
    import sys

    if "kopf" not in sys.modules:
        sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]  # None: "import kubernetes" fails


def main(args: argparse.Namespace) -> int:
    import asyncio

    without_kubernetes_client()

    import kopf

    from mpg_operator.controller import handlers  # registers the handlers

    configure_logging(args.log_format, args.verbose)
    if args.metrics_port:
        handlers.METRICS_ADDRESS = (args.metrics_host, args.metrics_port)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespaces,
            namespaces=args.namespaces or [],
            liveness_endpoint=args.liveness,
            standalone=not args.peering,
            peering_name=args.peering,
            priority=args.priority,
        )
    )
    return 0
