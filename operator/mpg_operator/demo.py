"""``mpg-operator demo``: the whole product on one machine, no cluster and no account needed.

Starts the ClickHouse Cloud simulator (real PostgreSQL behind it, the real rate limit), a local
Kubernetes API emulator and the operator; applies an example ManagedPostgres; waits for Ready;
shows the Secret (password masked) and ``SELECT version()`` over the Secret's URI; deletes the
resource and shows that the remote service is gone.

With ``--keep`` it stops before the deletion and leaves all three running until Ctrl-C, printing
``export KUBECONFIG=...`` so that real ``kubectl`` (and ``helm``) can be used against the emulator
while the operator works: ``kubectl get mpg -A``, ``kubectl apply``, ``kubectl delete``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

EXAMPLE = {
    "apiVersion": "clickhouse.cloud/v1alpha1",
    "kind": "ManagedPostgres",
    "metadata": {"name": "orders-db", "namespace": "shop"},
    "spec": {
        "provider": "aws",
        "region": "us-west-2",
        "size": "r8gd.large",
        "postgresVersion": "18",
        "haType": "none",
        "serviceName": "orders db",
        "tags": {"team": "orders"},
        "credentialsRef": {"name": "clickhouse-cloud"},
        "connectionSecret": {"name": "orders-db-connection"},
        "deletionPolicy": "Delete",
    },
}
"""The same resource as deploy/examples/orders-db.yaml (a test keeps them equal)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--create-seconds", type=float, default=3.0, help="simulated provisioning time")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up waiting after this many seconds")
    parser.add_argument("--verbose", "-v", action="store_true", help="show the operator's logs")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="do not delete the example at the end: keep simulator, emulator and operator running "
        "(print a KUBECONFIG for kubectl) until Ctrl-C",
    )


def _mask(key: str, value: str, password: str) -> str:
    """A Secret value fit to print: the password masked wherever it stands (``uri``, ``poolerUri``, any
    key a later version adds, URL-encoded too), the CA shortened."""
    if key == "ca.crt":
        return value.splitlines()[0] + " ... (" + str(len(value)) + " bytes)"
    if not password:
        return value
    for form in (password, quote(password, safe="")):
        value = value.replace(form, "*" * 8)
    return value


def main(args: argparse.Namespace) -> int:
    try:
        import clickhouse_cloud_simulator  # noqa: F401
        import kubeemu  # noqa: F401
    except ImportError:
        print(
            "mpg-operator demo needs the simulator and the Kubernetes emulator: from a checkout, "
            "run `make demo` (or pip install ./simulator[postgres] ./emulator 'mpg-operator[demo]')",
            file=sys.stderr,
        )
        return 2
    import logging
    import time

    from clickhouse_cloud_simulator.postgres import PostgresFleet
    from mpg_operator.sandbox import Sandbox

    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="  | %(name)s: %(message)s")
    if not args.verbose:
        for name in ("kopf", "aiohttp.access", "httpx", "mpg_operator"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    if not PostgresFleet.available():
        print("PostgreSQL binaries are not available: install the 'demo' extra (pip install 'mpg-operator[demo]').")
        return 1

    t0 = time.monotonic()

    def step(text: str) -> None:
        print(f"[{time.monotonic() - t0:5.1f}s] {text}", flush=True)

    name, ns = EXAMPLE["metadata"]["name"], EXAMPLE["metadata"]["namespace"]
    options = {"create_seconds": args.create_seconds, "delete_seconds": 1.0, "real_postgres": True}
    step("Starting the ClickHouse Cloud simulator (real PostgreSQL, rate limit 10 requests / 10 s),")
    step("a local Kubernetes API emulator, and the operator ...")
    with Sandbox(simulator_options=options, namespaces=(ns,)) as sb:
        step(f"Simulator at {sb.simulator.url} (organization {sb.simulator.org_id})")
        step(f"Created Secret {ns}/clickhouse-cloud with the API key")
        sb.apply(EXAMPLE)
        step(
            f"Applied ManagedPostgres {ns}/{name} (size {EXAMPLE['spec']['size']}, region {EXAMPLE['spec']['region']})"
        )

        last_state = None

        def ready() -> bool:
            nonlocal last_state
            status = (sb.get(name, ns) or {}).get("status") or {}
            if status.get("state") != last_state:
                last_state = status.get("state")
                step(f"  state: {last_state}")
            return sb.is_ready(name, ns)

        sb.wait_for(ready, timeout=args.timeout, interval=0.2, what="Ready")
        obj = sb.get(name, ns)
        status = obj["status"]
        step("Ready=True. `kubectl get mpg -n shop`:")
        print(f"    {'NAME':<10} {'READY':<6} {'STATE':<8} {'SIZE':<11} {'REGION':<10} HOST")
        print(
            f"    {name:<10} {'True':<6} {status['state']:<8} {status['size']:<11} {obj['spec']['region']:<10} {status['hostname']}"
        )

        secret = sb.secret(status["connectionSecretName"], ns)
        step(f"Secret {ns}/{status['connectionSecretName']} (password masked):")
        for key in sorted(secret):
            print(f"    {key:<9} {_mask(key, secret[key], secret.get('password', ''))}")

        import psycopg

        with psycopg.connect(secret["uri"], connect_timeout=10) as conn:
            version = conn.execute("SELECT version()").fetchone()[0]
        step(f"SELECT version() over the Secret's uri (TLS, SCRAM): {version}")

        if getattr(args, "keep", False):
            return _keep_running(sb, ns, name, step)

        service_id = status["serviceId"]
        step(f"Deleting ManagedPostgres {ns}/{name} (deletionPolicy: Delete) ...")
        sb.delete(name, ns)
        sb.wait_for(lambda: sb.get(name, ns) is None, timeout=args.timeout, what="deletion")
        remaining = [s.id for s in sb.remote_services()]
        gone = service_id not in remaining
        step(
            f"Resource deleted; service {service_id} {'is gone from' if gone else 'is STILL in'} ClickHouse Cloud (simulated)"
        )
        calls = [r for r in sb.simulator.requests]
        status_429 = sum(1 for r in calls if r.status == 429)
        step(f"API requests sent by the operator: {len(calls)}, of which HTTP 429: {status_429}")
        return 0 if gone else 1


def _kubectl_hint() -> str:
    """Where a kubectl binary is: on PATH, or the one ``scripts/fetch-helm.py --kubectl`` fetched."""
    import shutil
    from pathlib import Path

    fetched = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "kubectl"
    if fetched.exists():
        return str(fetched)
    return shutil.which("kubectl") or "kubectl   # none found: scripts/fetch-helm.py --kubectl fetches one"


def _keep_running(sb: Any, ns: str, name: str, step: Callable[[str], None]) -> int:
    """Leave the sandbox up for kubectl until Ctrl-C (or SIGTERM)."""
    import signal
    import threading

    kubectl = _kubectl_hint()
    step(
        f"Keeping the simulator ({sb.simulator.url}), the Kubernetes emulator ({sb.kube.url}) "
        "and the operator running. In another terminal:"
    )
    print(
        f"""
    export KUBECONFIG={sb.kubeconfig}
    alias kubectl={kubectl}
    kubectl get mpg -A                     # printer columns: READY, STATE, SIZE, REGION, HOST
    kubectl get events -n {ns}
    kubectl patch mpg {name} -n {ns} --type=merge -p '{{"spec":{{"size":"r8gd.xlarge"}}}}'
    kubectl apply -f deploy/examples/orders-db.yaml
    kubectl delete mpg {name} -n {ns}       # the operator deletes the service first

  The API key is in Secret {ns}/clickhouse-cloud (other namespaces need their own copy).
  Press Ctrl-C to stop.""",
        flush=True,
    )
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    step("Stopping.")
    return 0
