#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback for the test suite: etcd, kube-apiserver and
kube-controller-manager, built from Go modules at the versions pinned in ``tools/controlplane/``.

    python scripts/control_plane.py build        # build the binaries once (cached, keyed by version)
    python scripts/control_plane.py up [--dir D] # start them; prints the admin kubeconfig's path
    python scripts/control_plane.py down [--dir D]

The binaries go to ``~/.cache/mpg-operator/control-plane/<kubernetes>-<etcd>/`` (or
``$MPG_CONTROL_PLANE_CACHE/<kubernetes>-<etcd>/``), outside the work tree; a second ``build`` costs
nothing. Tests use :class:`ControlPlane` (``start()``, ``stop()``, ``kubeconfig``).

The API server serves TLS with a CA made on the fly (SAN 127.0.0.1), authenticates client
certificates, authorizes with RBAC and issues ServiceAccount tokens; the controller manager runs
every controller that needs no node (the garbage collector and the namespace controller among
them). There is no kubelet: pods are never scheduled.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import datetime
import fcntl
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIR = REPO_ROOT / "tools" / "controlplane"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
GO_PACKAGES = ("k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kube-controller-manager", "./etcd")
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_CLUSTER_FIRST_IP = "10.0.0.1"
# Controllers that need nodes or bootstrap tokens, neither of which exists here.
CONTROLLERS = "*,-nodeipam,-nodelifecycle,-ttl,-bootstrapsigner,-tokencleaner"
# The release date of the pinned Kubernetes version (the module proxy's timestamp): the build date
# stamped into the binaries, so that a build is reproducible.
KUBERNETES_RELEASE_DATES = {"v1.36.3": "2026-07-22T18:07:38Z"}


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started."""


# --- versions and the cache --------------------------------------------------------------------


def versions() -> tuple[str, str]:
    """(Kubernetes version, etcd version) as pinned in ``tools/controlplane/go.mod``."""
    text = (SOURCE_DIR / "go.mod").read_text()
    found = {}
    for module in ("k8s.io/kubernetes", "go.etcd.io/etcd/server/v3"):
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
        if not match:
            raise ControlPlaneError(f"{module} is not required in {SOURCE_DIR / 'go.mod'}")
        found[module] = match.group(1)
    return found["k8s.io/kubernetes"], found["go.etcd.io/etcd/server/v3"]


def cache_dir() -> Path:
    """Where the binaries of the pinned versions live (created by :func:`build`)."""
    root = os.environ.get("MPG_CONTROL_PLANE_CACHE") or Path.home() / ".cache" / "mpg-operator" / "control-plane"
    kubernetes, etcd = versions()
    return Path(root) / f"{kubernetes}-{etcd}"


def _ldflags(kubernetes: str) -> str:
    """Linker flags: stripped, with the version stamps ``/version`` reports (else v0.0.0)."""
    release = re.match(r"v(\d+)\.(\d+)\.", kubernetes)
    if release is None:
        raise ControlPlaneError(f"not a Kubernetes release version: {kubernetes}")
    major, minor = release.groups()
    stamps = {
        "gitVersion": kubernetes,
        "gitMajor": major,
        "gitMinor": minor,
        "gitCommit": "",  # the module proxy's source carries no commit id
        "gitTreeState": "clean",
        "buildDate": KUBERNETES_RELEASE_DATES.get(kubernetes, "1970-01-01T00:00:00Z"),
    }
    return " ".join(["-s", "-w"] + [f"-X k8s.io/component-base/version.{k}={v}" for k, v in stamps.items()])


def _source_digest() -> str:
    """A digest of what the binaries are built from, so a changed pin or etcd/main.go rebuilds."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "etcd/main.go"):
        digest.update((SOURCE_DIR / name).read_bytes())
    digest.update(_ldflags(versions()[0]).encode())
    return digest.hexdigest()


def built(directory: Path | None = None) -> bool:
    """Whether the binaries of the current sources are in ``directory`` (default :func:`cache_dir`)."""
    directory = directory or cache_dir()
    stamp = directory / "SOURCE-DIGEST"
    return (
        all((directory / b).is_file() for b in BINARIES) and stamp.is_file() and stamp.read_text() == _source_digest()
    )


def go_available() -> bool:
    """Whether the Go toolchain is on PATH."""
    return shutil.which("go") is not None


def build(directory: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Build the three binaries into ``directory`` (default :func:`cache_dir`) unless they are there.

    Runs ``go build`` at the lowest CPU priority; concurrent callers take turns (a file lock)."""
    directory = directory or cache_dir()
    if built(directory):
        return directory
    go = shutil.which("go")
    if go is None:
        raise ControlPlaneError("the Go toolchain (go) is not on PATH: the control plane cannot be built")
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if built(directory):  # another process built it while this one waited
            return directory
        kubernetes, etcd = versions()
        log(f"building kube-apiserver, kube-controller-manager {kubernetes} and etcd {etcd} into {directory}")
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=directory))
        try:
            env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"}
            command = [go, "build", "-trimpath", "-ldflags", _ldflags(kubernetes), "-o", f"{staging}/", *GO_PACKAGES]
            started = time.monotonic()
            result = subprocess.run(command, cwd=SOURCE_DIR, env=env, preexec_fn=lambda: os.nice(19))
            if result.returncode != 0:
                raise ControlPlaneError(f"go build failed (exit {result.returncode})")
            for name in BINARIES:
                os.replace(staging / name, directory / name)
            (directory / "SOURCE-DIGEST").write_text(_source_digest())
            log(f"built in {time.monotonic() - started:.0f} s")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return directory


# --- certificates ------------------------------------------------------------------------------


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.write_bytes(data)


def _make_pki(directory: Path) -> None:
    """A CA, the API server's serving certificate, client certificates for the admin (group
    system:masters) and the controller manager, and the ServiceAccount signing key pair."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str, organization: str | None = None) -> x509.Name:
        parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
        if organization:
            parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        return x509.Name(parts)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("mpg-operator test control plane CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(filename: str, subject: x509.Name, usage: Any, sans: list[x509.GeneralName] | None = None) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        (directory / f"{filename}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(directory / f"{filename}.key", _pem_key(key))

    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    dns.append("kubernetes.default.svc.cluster.local")
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", SERVICE_CLUSTER_FIRST_IP)]
    leaf("apiserver", name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    leaf("admin", name("admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
    leaf("controller-manager", name("system:kube-controller-manager"), ExtendedKeyUsageOID.CLIENT_AUTH)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(directory / "service-account.key", _pem_key(sa_key))
    (directory / "service-account.pub").write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _kubeconfig(server: str, pki: Path, user: str) -> str:
    """A kubeconfig (JSON, which is YAML) with the CA and the user's client certificate inline."""

    def inline(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "control-plane",
                    "cluster": {"server": server, "certificate-authority-data": inline(pki / "ca.crt")},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": inline(pki / f"{user}.crt"),
                        "client-key-data": inline(pki / f"{user}.key"),
                    },
                }
            ],
            "contexts": [{"name": "control-plane", "context": {"cluster": "control-plane", "user": user}}],
            "current-context": "control-plane",
        },
        indent=2,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the running control plane -----------------------------------------------------------------

AUDIT_LOG = "audit.log"
# Every resource request, once it is answered (a watch also when its stream starts): who, which verb
# on what, and the answer's code. The tests read it to see the operator's own calls (RBAC coverage,
# writes it must not make).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "None", "nonResourceURLs": ["*"]}, {"level": "Metadata"}],
}


class ControlPlane:
    """etcd, kube-apiserver and kube-controller-manager on loopback, with their state in ``workdir``.

    ``start()`` returns once ``/readyz`` answers ok and the controllers have created the default
    ServiceAccount; ``kubeconfig`` is then an admin kubeconfig (group system:masters). Unless
    ``outlive_parent``, the servers get SIGTERM when this process dies without calling ``stop()``
    (a test run killed by a timeout leaves no server behind; Linux)."""

    def __init__(self, workdir: Path, binaries: Path | None = None, outlive_parent: bool = False) -> None:
        self.workdir = Path(workdir)
        self.binaries = binaries or cache_dir()
        self.outlive_parent = outlive_parent
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.audit_log = self.workdir / AUDIT_LOG
        self.server = ""
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 90) -> ControlPlane:
        """Start the three servers and wait until they serve; on failure stop what started."""
        if not built(self.binaries):
            raise ControlPlaneError(f"the control plane is not built in {self.binaries}: run `make control-plane`")
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        _make_pki(pki)
        etcd_url = f"http://127.0.0.1:{_free_port()}"
        self._spawn(
            "etcd",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-url={etcd_url}",
            f"--listen-peer-url=http://127.0.0.1:{_free_port()}",
        )
        self._wait("etcd", deadline, lambda: _get(f"{etcd_url}/health"))
        audit_policy = self.workdir / "audit-policy.yaml"
        audit_policy.write_text(json.dumps(AUDIT_POLICY))
        port = _free_port()
        self.server = f"https://127.0.0.1:{port}"
        self._spawn(
            "kube-apiserver",
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'service-account.pub'}",
            f"--service-account-signing-key-file={pki / 'service-account.key'}",
            f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--profiling=false",
            f"--audit-policy-file={audit_policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
        )
        self.kubeconfig.touch(mode=0o600)
        self.kubeconfig.write_text(_kubeconfig(self.server, pki, "admin"))
        controller_kubeconfig = self.workdir / "controller-manager.kubeconfig"
        controller_kubeconfig.touch(mode=0o600)
        controller_kubeconfig.write_text(_kubeconfig(self.server, pki, "controller-manager"))
        self._wait("kube-apiserver", deadline, lambda: self._get("/readyz") is not None)
        self._spawn(
            "kube-controller-manager",
            f"--kubeconfig={controller_kubeconfig}",
            f"--authentication-kubeconfig={controller_kubeconfig}",
            f"--authorization-kubeconfig={controller_kubeconfig}",
            f"--service-account-private-key-file={pki / 'service-account.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=true",
            f"--controllers={CONTROLLERS}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={_free_port()}",
            f"--cert-dir={pki}",
            "--profiling=false",
        )
        # The service account controller creating "default" shows the controllers are running.
        self._wait(
            "kube-controller-manager", deadline, lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default")
        )

    def stop(self) -> None:
        """Stop the servers (controller manager first, etcd last); idempotent."""
        for name in reversed(list(self._processes)):
            process = self._processes.pop(name)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def pids(self) -> dict[str, int]:
        """The process ids of the running servers."""
        return {name: p.pid for name, p in self._processes.items()}

    def _spawn(self, binary: str, *args: str) -> None:
        log = open(self.workdir / f"{binary}.log", "wb")  # noqa: SIM115 - the child keeps it open
        with log:
            self._processes[binary] = subprocess.Popen(
                [str(self.binaries / binary), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches the test runner, which stops them in order
                preexec_fn=None if self.outlive_parent else _terminate_with_parent,
            )

    def _wait(self, binary: str, deadline: float, ready: Callable[[], object]) -> None:
        while time.monotonic() < deadline:
            if self._processes[binary].poll() is not None:
                raise ControlPlaneError(
                    f"{binary} exited ({self._processes[binary].returncode}):\n{self._log_tail(binary)}"
                )
            if ready():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{binary} not ready in time:\n{self._log_tail(binary)}")

    def _log_tail(self, binary: str, lines: int = 30) -> str:
        path = self.workdir / f"{binary}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _get(self, path: str) -> bytes | None:
        """GET ``path`` as the admin; the body on 200, else None."""
        pki = self.workdir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return _get(self.server + path, context)


def _terminate_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 == PR_SET_PDEATHSIG


def _get(url: str, context: ssl.SSLContext | None = None) -> bytes | None:
    """The body of ``url`` if it answers 200, else None (refused, timed out, another status)."""
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.read() if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None


# --- command line ------------------------------------------------------------------------------


def _default_run_dir() -> Path:
    return Path(tempfile.gettempdir()) / "mpg-operator-control-plane"


def _up(workdir: Path) -> None:
    if (workdir / "pids.json").exists():
        raise ControlPlaneError(f"a control plane may be running from {workdir}: run `down` first")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    plane = ControlPlane(workdir, outlive_parent=True)
    started = time.monotonic()
    plane.start()
    (workdir / "pids.json").write_text(json.dumps(plane.pids()))
    print(f"ready in {time.monotonic() - started:.1f} s at {plane.server}", file=sys.stderr)
    print(plane.kubeconfig)


def _down(workdir: Path) -> None:
    pids_file = workdir / "pids.json"
    if not pids_file.exists():
        print(f"nothing running from {workdir}", file=sys.stderr)
        return
    pids: dict[str, int] = json.loads(pids_file.read_text())
    for name in reversed(list(pids)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[name], signal.SIGTERM)
        for _ in range(150):
            try:
                os.kill(pids[name], 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[name], signal.SIGKILL)
    shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="build the binaries unless they are cached")
    build_command.add_argument(
        "--skip-without-go", action="store_true", help="exit 0 with a note when go is not on PATH"
    )
    commands.add_parser("path", help="print the directory of the binaries")
    for name, text in (("up", "start a control plane and print its kubeconfig's path"), ("down", "stop it")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--dir", type=Path, default=_default_run_dir(), help="its state directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            if args.skip_without_go and not go_available() and not built():
                print(
                    "go is not on PATH: the real control plane is not built; the tests that need it skip (fail under CI)"
                )
                return 0
            build()
        elif args.command == "path":
            print(cache_dir())
        elif args.command == "up":
            _up(args.dir)
        else:
            _down(args.dir)
    except ControlPlaneError as e:
        print(f"control plane: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
