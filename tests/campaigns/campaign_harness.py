"""The campaigns' harness: the operator as its own process, kill points chosen from outside it,
and the invariants checked with real connections.

Nothing here touches the operator's code: kill points are observers on the simulator (a request
arriving or answered) and on the Kubernetes emulator (a write arriving); the operator is
``mpg-operator run`` in a subprocess, killed with SIGKILL and started again.

* :class:`OperatorProcess` -- ``mpg-operator run`` (through ``operator_debug.py``: every logger at
  DEBUG), its stderr kept line by line for the secret-leak scan.
* :class:`KillSwitch` -- arms one kill point: the next matching simulator request (``before``: the
  request is dropped unapplied and the operator killed; ``after``: applied and answered, killed
  after a random delay) or Kubernetes write (killed when it arrives, after a random delay).
* :class:`Campaign` -- one Sandbox (simulator with real PostgreSQL, emulator), the operator
  process, an API key per case, and the invariant checks.
* :class:`LeakLog` -- what the session produced (log lines, operator stderr, events, statuses) and
  the secrets known to the simulator and the connection Secrets, for the final leak scan.

Seeds: every random choice comes from ``random.Random(seed)``; the seed is printed and written into
assertion messages so that a failing run can be replayed with ``MPG_CAMPAIGN_SEED``.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpg_operator.resource import API_VERSION, KIND
from mpg_operator.sandbox import Sandbox

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NS = "campaigns"
TAG_UID = "mpg-operator.uid"
FINALIZER = "clickhouse.cloud/mpg-operator"

FULL = os.environ.get("MPG_CAMPAIGN", "").lower() == "full"
TIMEOUT = 3600 if FULL else 300  # per campaign test (pytest-timeout)


def campaign_seed() -> int:
    """The run's seed: ``MPG_CAMPAIGN_SEED`` or, in the reduced form, a fixed one (CI is repeatable);
    the full form draws a fresh one unless told."""
    value = os.environ.get("MPG_CAMPAIGN_SEED")
    if value:
        return int(value)
    return random.SystemRandom().randrange(1, 10**6) if FULL else 7


def mask(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


# --------------------------------------------------------------------------- the operator process


class OperatorProcess:
    """``mpg-operator run`` as a child process (killable with SIGKILL)."""

    def __init__(self, env: dict[str, str], workdir: Path, lines: list[str]) -> None:
        self.env = env
        self.workdir = workdir
        self.lines = lines  # every stderr/stdout line of every incarnation (leak scan)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "operator already running"
        env = {**os.environ, **self.env}
        other = os.environ.get("MPG_CAMPAIGN_OPERATOR_SOURCE")
        if other:  # another version of the operator (e.g. an old commit's operator/ folder) under test
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [other, env.get("PYTHONPATH")]))
        command = [
            sys.executable,
            str(HERE / "operator_debug.py"),
            "run",
            "--all-namespaces",
            "--metrics-port",
            "0",
            "--verbose",
        ]
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(ROOT))
        self.starts += 1
        proc = self.proc
        log_path = self.workdir / f"operator-{self.starts}.log"

        def read() -> None:
            assert proc.stdout is not None
            with open(log_path, "w", encoding="utf-8") as out:
                for raw in proc.stdout:
                    line = raw.decode("utf-8", "replace").rstrip("\n")
                    self.lines.append(line)
                    out.write(line + "\n")

        self._reader = threading.Thread(target=read, name=f"operator-log-{self.starts}", daemon=True)
        self._reader.start()

    def kill(self) -> None:
        """SIGKILL, at once (safe to call from any thread, and when already dead)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
                self.kills += 1
            except ProcessLookupError:
                pass

    def wait_dead(self, timeout: float = 30) -> None:
        if self.proc is not None:
            self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(10)

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._reader is not None:
            self._reader.join(10)
        self.proc = None


# --------------------------------------------------------------------------- kill points


@dataclass(frozen=True)
class KillPoint:
    """Where to kill: ``side`` 'api' (simulator) or 'kube' (emulator)."""

    name: str
    step: str  # create | update | password | delete
    side: str
    method: str
    path: str = ""  # api: regular expression searched in the request path
    when: str = "after"  # api: before (dropped unapplied) | after (applied and answered)
    plural: str = ""  # kube: resource plural
    subresource: str | None = None
    match: Callable[[Any], bool] | None = None  # kube: predicate on the decoded body
    what: str = ""


def _status_has(key: str) -> Callable[[Any], bool]:
    return lambda data: isinstance(data, dict) and (data.get("status") or {}).get(key) not in (None, "", 0)


def _removes_finalizer(data: Any) -> bool:
    """A merge patch leaving the finalizer out, or a JSON patch removing/replacing finalizers (kopf's way)."""
    if isinstance(data, list):
        return any(
            isinstance(op, dict)
            and op.get("op") in ("remove", "replace")
            and str(op.get("path", "")).startswith("/metadata/finalizers")
            for op in data
        )
    if not isinstance(data, dict) or "finalizers" not in (data.get("metadata") or {}):
        return False
    fins = data["metadata"]["finalizers"]
    return fins is None or (isinstance(fins, list) and FINALIZER not in fins)


SVC = r"/postgres/[^/]+"
KILL_POINTS: list[KillPoint] = [
    # create
    KillPoint(
        "create/pending-recorded",
        "create",
        "kube",
        "PATCH",
        plural="managedpostgreses",
        subresource="status",
        match=_status_has("createPendingSince"),
        what="status patch recording createPendingSince arrives (before the POST)",
    ),
    KillPoint(
        "create/post-arrives",
        "create",
        "api",
        "POST",
        r"/postgres$",
        when="before",
        what="POST /postgres arrives; dropped unapplied",
    ),
    KillPoint(
        "create/post-answered",
        "create",
        "api",
        "POST",
        r"/postgres$",
        when="after",
        what="POST /postgres applied and answered (the one-time password in flight)",
    ),
    KillPoint(
        "create/secret-written",
        "create",
        "kube",
        "*",
        plural="secrets",
        what="first write of the connection Secret arrives",
    ),
    # update
    KillPoint(
        "update/patch-arrives",
        "update",
        "api",
        "PATCH",
        SVC + "$",
        when="before",
        what="PATCH /postgres/{id} arrives; dropped unapplied",
    ),
    KillPoint(
        "update/patch-answered",
        "update",
        "api",
        "PATCH",
        SVC + "$",
        when="after",
        what="PATCH /postgres/{id} applied and answered",
    ),
    KillPoint(
        "update/status-written",
        "update",
        "kube",
        "PATCH",
        plural="managedpostgreses",
        subresource="status",
        what="first status patch after the spec change arrives",
    ),
    # password (the connection Secret deleted: a new password is written first, then set)
    KillPoint(
        "password/secret-written",
        "password",
        "kube",
        "*",
        plural="secrets",
        what="the new password's Secret write arrives",
    ),
    KillPoint(
        "password/patch-arrives",
        "password",
        "api",
        "PATCH",
        SVC + "/password$",
        when="before",
        what="PATCH /password arrives; dropped unapplied",
    ),
    KillPoint(
        "password/patch-answered",
        "password",
        "api",
        "PATCH",
        SVC + "/password$",
        when="after",
        what="PATCH /password applied and answered",
    ),
    # delete
    KillPoint(
        "delete/delete-arrives",
        "delete",
        "api",
        "DELETE",
        SVC + "$",
        when="before",
        what="DELETE /postgres/{id} arrives; dropped unapplied",
    ),
    KillPoint(
        "delete/delete-answered",
        "delete",
        "api",
        "DELETE",
        SVC + "$",
        when="after",
        what="DELETE /postgres/{id} applied and answered",
    ),
    KillPoint(
        "delete/finalizer-removed",
        "delete",
        "kube",
        "PATCH",
        plural="managedpostgreses",
        match=_removes_finalizer,
        what="the patch removing the finalizer arrives",
    ),
]
STEPS = ("create", "update", "password", "delete")


class _ObservedList(list):
    """The emulator's request log, calling ``hook`` with each request as it arrives."""

    hook: Callable[[Any], None] | None = None

    def append(self, item: Any) -> None:  # type: ignore[override]
        super().append(item)
        hook = self.hook
        if hook is not None:
            try:
                hook(item)
            except Exception:  # noqa: BLE001 -- never break the emulator
                logging.getLogger("campaigns").exception("kill hook failed")


class KillSwitch:
    """Arms one kill point at a time; ``fired`` is set when the operator was killed."""

    def __init__(self, sb: Sandbox, operator: OperatorProcess) -> None:
        self.sb = sb
        self.operator = operator
        self.fired = threading.Event()
        self._lock = threading.Lock()
        self._armed: tuple[KillPoint, float, str] | None = None
        sb.simulator.add_observer(self._on_api)
        handler = sb.kube.kmock
        observed = _ObservedList(handler._requests)  # noqa: SLF001 -- the emulator's request log
        observed.hook = self._on_kube
        handler._requests = observed  # noqa: SLF001

    def arm(self, point: KillPoint, delay: float, name: str) -> None:
        """Kill at ``point`` (for resource ``name``), ``delay`` seconds after it is seen."""
        self.fired.clear()
        with self._lock:
            self._armed = (point, delay, name)
        if point.side == "api" and point.when == "before":
            self.sb.simulator.faults.drop(count=1, when="before", method=point.method, path=point.path)

    def disarm(self) -> None:
        with self._lock:
            armed, self._armed = self._armed, None
        if armed is not None and armed[0].side == "api" and armed[0].when == "before":
            faults = self.sb.simulator.faults
            with faults._lock:  # noqa: SLF001 -- an unused drop rule must not hit the next run
                faults.drops.clear()

    def _take(self, check: Callable[[KillPoint, str], bool]) -> float | None:
        with self._lock:
            if self._armed is None:
                return None
            point, delay, name = self._armed
            if not check(point, name):
                return None
            self._armed = None
        return delay

    def _kill_after(self, delay: float) -> None:
        def kill() -> None:
            self.operator.kill()
            self.fired.set()

        if delay <= 0:
            kill()
        else:
            threading.Timer(delay, kill).start()

    def _on_api(self, ex: Any) -> None:
        def check(point: KillPoint, name: str) -> bool:
            if point.side != "api" or point.method != ex.method or not re.search(point.path, ex.path):
                return False
            return ex.dropped if point.when == "before" else (not ex.dropped and ex.status < 500)

        delay = self._take(check)
        if delay is not None:
            self._kill_after(0.0 if ex.dropped else delay)

    def _on_kube(self, request: Any) -> None:
        def check(point: KillPoint, name: str) -> bool:
            if point.side != "kube" or request.resource is None or request.method == "GET":
                return False
            if point.method != "*" and request.method != point.method:
                return False
            if request.resource.plural != point.plural or request.subresource != point.subresource:
                return False
            if point.plural == "secrets":
                target = request.name or ((request.data or {}).get("metadata") or {}).get("name")
                if target != f"{name}-connection":
                    return False
            elif request.name != name:
                return False
            return point.match is None or point.match(request.data)

        delay = self._take(check)
        if delay is not None:
            self._kill_after(delay)


# --------------------------------------------------------------------------- the campaign sandbox


class LeakLog(logging.Handler):
    """Every log record of the session at DEBUG, formatted (the leak scan reads ``lines``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001
            pass


@dataclass
class Produced:
    """What the campaigns produced, for the secret-leak scan (filled as they run)."""

    log_lines: list[str] = field(default_factory=list)
    operator_lines: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)  # events and statuses (repr)
    secrets: set[str] = field(default_factory=set)


class Campaign:
    """One sandbox for all campaigns: simulator (real PostgreSQL, fast state machine, the API's
    10 requests / 10 s limit per key), the emulator, and the operator as its own process."""

    def __init__(
        self,
        produced: Produced,
        *,
        rate_limit: int | None = 10,
        real_postgres: bool = True,
        create_seconds: float = 0.3,
    ) -> None:
        self.produced = produced
        options = {
            "create_seconds": create_seconds,
            "resize_seconds": 0.5,
            "restart_seconds": 0.3,
            "delete_seconds": 0.3,
            "rate_limit": rate_limit,
            "rate_window": 10.0,
            "real_postgres": real_postgres,
        }
        # The simulator never flips an update back unless told (Faults.flip_back): one second of
        # confirmation is enough here and keeps the reduced campaigns short.
        self.sb = Sandbox(
            simulator_options=options, namespaces=(NS,), start_operator=False, operator_env={"MPG_UPDATE_CONFIRM": "1"}
        )
        self.sb.start()
        self.sim = self.sb.simulator
        self.kube = self.sb.kube
        self.operator = OperatorProcess(self.sb.operator_environment(), self.sb.workdir, produced.operator_lines)
        self.kill_switch = KillSwitch(self.sb, self.operator)
        self.produced.secrets.add(self.sim.key_secret)

    # -- lifecycle ------------------------------------------------------------------------
    def start_operator(self) -> None:
        self.operator.start()

    def restart_operator(self) -> None:
        self.operator.kill()
        self.operator.wait_dead()
        self.operator.start()

    def close(self) -> None:
        """Snapshot for the leak scan, then stop the operator and the sandbox (idempotent)."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        try:
            self.collect()
        finally:
            self.operator.stop()
            self.sb.stop()

    # -- set-up helpers -----------------------------------------------------------------
    def new_key(self, org_id: str | None = None) -> tuple[str, str, str]:
        """A fresh API key (a new organization unless ``org_id``): its own rate-limit budget."""
        key = self.sim.add_key(org_id=org_id)
        self.produced.secrets.add(key[1])
        return key

    def credentials(self, name: str, key: tuple[str, str, str], **overrides: str) -> None:
        key_id, key_secret, org_id = key
        data = {"keyId": key_id, "keySecret": key_secret, "organizationId": org_id, **overrides}
        self.produced.secrets.update(v for k, v in overrides.items() if k == "keySecret")
        self.kube.apply(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "stringData": data}
        )

    @staticmethod
    def manifest(name: str, credentials: str, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "provider": "aws",
                "region": "us-west-2",
                "size": "r8gd.large",
                "credentialsRef": {"name": credentials},
                **spec,
            },
        }

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self.kube.apply(manifest)

    def get(self, name: str) -> dict[str, Any] | None:
        return self.kube.get(API_VERSION, KIND, name, NS)

    def delete(self, name: str) -> None:
        self.kube.delete(API_VERSION, KIND, name, NS)

    def patch_spec(self, name: str, **spec: Any) -> None:
        obj = self.get(name)
        assert obj is not None
        self.kube.apply(
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": name, "namespace": NS},
                "spec": {**obj["spec"], **spec},
            }
        )

    def secret(self, name: str) -> dict[str, str] | None:
        obj = self.kube.get("v1", "Secret", name, NS)
        if obj is None:
            return None
        data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        if data.get("password"):
            self.produced.secrets.add(data["password"])
        return data

    def raw_secret(self, name: str) -> dict[str, Any] | None:
        return self.kube.get("v1", "Secret", name, NS)

    def condition(self, name: str, type_: str = "Ready") -> dict[str, Any]:
        obj = self.get(name) or {}
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return cond
        return {}

    def is_ready(self, name: str) -> bool:
        return self.condition(name).get("status") == "True"

    def uid(self, name: str) -> str:
        obj = self.get(name)
        assert obj is not None, name
        return obj["metadata"]["uid"]

    def services_tagged(self, uid: str, *, include_deleting: bool = False) -> list[Any]:
        out = []
        for svc in self.sim.services.values():
            if any(t.get("key") == TAG_UID and t.get("value") == uid for t in svc.tags):
                if include_deleting or svc.deleting_until is None:
                    out.append(svc)
        return out

    def services_in(self, org_id: str) -> list[Any]:
        return [s for s in self.sim.services.values() if s.org_id == org_id]

    def remember_service_secrets(self) -> None:
        for svc in self.sim.services.values():
            if svc.password:
                self.produced.secrets.add(svc.password)

    @staticmethod
    def wait_for(predicate: Callable[[], Any], timeout: float = 90.0, what: str = "", interval: float = 0.2) -> Any:
        return Sandbox.wait_for(predicate, timeout=timeout, interval=interval, what=what)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for group_version, kind in (("v1", "Event"),):
            for e in self.kube.list(group_version, kind, NS):
                if name is None or (e.get("involvedObject") or {}).get("name") == name:
                    out.append(e)
        return out

    def collect(self) -> None:
        """Snapshot events, statuses and known secrets for the leak scan."""
        self.remember_service_secrets()
        for e in self.events():
            self.produced.documents.append(repr(e))
        for obj in self.kube.list(API_VERSION, KIND, NS):
            self.produced.documents.append(repr(obj.get("status")))
        for s in self.kube.list("v1", "Secret", NS):
            data = s.get("data") or {}
            if "password" in data:
                self.produced.secrets.add(base64.b64decode(data["password"]).decode())
            if "keySecret" in data:
                self.produced.secrets.add(base64.b64decode(data["keySecret"]).decode())

    # -- invariants -------------------------------------------------------------------------
    def connects(self, uri: str) -> tuple[bool, str]:
        import psycopg

        try:
            with psycopg.connect(uri, connect_timeout=5) as conn:
                conn.execute("select 1").fetchone()
            return True, ""
        except Exception as e:  # noqa: BLE001
            return False, mask(f"{type(e).__name__}: {e}", sorted(self.produced.secrets, key=len, reverse=True))

    def check_ready_secret_works(self, name: str, secret_name: str | None = None) -> list[str]:
        """Ready=True means the Secret's uri connects (with the password the API accepted last)."""
        problems = []
        if not self.is_ready(name):
            return [f"{name}: not Ready ({self.condition(name).get('reason')})"]
        if secret_name is None:
            spec = (self.get(name) or {}).get("spec") or {}
            secret_name = (spec.get("connectionSecret") or {}).get("name") or f"{name}-connection"
        secret = self.secret(secret_name)
        if secret is None:
            return [f"{name}: Ready but its Secret {secret_name} is missing"]
        ok, why = self.connects(secret.get("uri", ""))
        if not ok:
            problems.append(f"{name}: Ready but the Secret does not connect: {why}")
        return problems

    def check_one_service(self, name: str) -> list[str]:
        uid = self.uid(name)
        services = self.services_tagged(uid)
        if len(services) != 1:
            return [f"{name}: {len(services)} services tagged with its uid ({[s.id for s in services]})"]
        return []

    def wait_converged(self, name: str, timeout: float = 120.0) -> list[str]:
        """Ready, the spec applied, one service, and the Secret connects; returns problems (or [])."""

        def done() -> bool:
            obj = self.get(name) or {}
            status = obj.get("status") or {}
            return (
                self.is_ready(name)
                and status.get("observedGeneration") == obj["metadata"]["generation"]
                and not self.check_ready_secret_works(name)
            )

        try:
            self.wait_for(done, timeout=timeout, what=f"{name} converged", interval=0.3)
        except TimeoutError as e:
            cond = self.condition(name)
            problems = [
                f"{e}; Ready={cond.get('status')} reason={cond.get('reason')} "
                f"message={mask(str(cond.get('message')), sorted(self.produced.secrets))}"
            ]
            problems += self.check_ready_secret_works(name)
            return problems + self.check_one_service(name)
        return self.check_one_service(name)

    def wait_gone(self, name: str, uid: str, *, orphan: bool = False, timeout: float = 120.0) -> list[str]:
        """The resource disappears (no stuck finalizer) and, unless Orphan, no tagged service is left."""
        problems = []
        try:
            self.wait_for(lambda: self.get(name) is None, timeout=timeout, what=f"{name} deleted")
        except TimeoutError as e:
            obj = self.get(name) or {}
            problems.append(
                f"{e}: stuck with finalizers {obj.get('metadata', {}).get('finalizers')}, "
                f"Ready reason {self.condition(name).get('reason')}"
            )
        if orphan:
            return problems
        try:
            self.wait_for(
                lambda: not self.services_tagged(uid, include_deleting=True),
                timeout=30,
                what=f"{name}'s service deleted",
            )
        except TimeoutError:
            left = self.services_tagged(uid, include_deleting=True)
            problems.append(
                f"{name}: orphaned service(s) {[(s.id, 'deleting' if s.deleting_until else 'live') for s in left]}"
            )
        return problems

    def requests_of(self, key_id: str, since: int = 0) -> list[Any]:
        return [r for r in self.sim.requests[since:] if r.key_id == key_id]

    @staticmethod
    def max_in_window(records: list[Any], window: float = 10.0) -> int:
        """The most requests in any ``window`` seconds (sliding, by arrival time)."""
        times = sorted(r.timestamp for r in records)
        best, j = 0, 0
        for i, t in enumerate(times):
            while times[j] <= t - window:
                j += 1
            best = max(best, i - j + 1)
        return best


@contextmanager
def own_campaign(produced: Produced, live: list[Campaign], **options: Any) -> Iterator[Campaign]:
    """A campaign sandbox of a module's own (``options`` as :class:`Campaign` takes them), its operator
    started, listed in ``live`` for the leak scan's collection and closed when the module is done."""
    c = Campaign(produced, **options)
    live.append(c)
    c.start_operator()
    try:
        yield c
        assert c.kube.server_errors == []
    finally:
        if c in live:
            live.remove(c)
            c.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
