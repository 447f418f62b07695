"""The processes the local stack starts and the ports they listen on.

A service is spawned in its own process group with its output in a log file, so it outlives the
command that started it; `up` records its pid and start time, and only a process that is still
that one (`alive`) is ever stopped, with every process it started (`stop_tree`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import CatalogueError


class StackError(CatalogueError, RuntimeError):
    """A local service could not be started or reached; the message says what to do."""


def stop_process(entry: dict) -> bool:
    """Stop a process `up` recorded, if it is still that process; True when one was stopped."""
    if entry.get("managed") and alive(entry):
        stop_tree(entry["pid"])
        return True
    return False


def executable(name: str, package: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"`{name}` is not installed: pip install {package} (make install)")
    return found


def spawn(command: list[str], log_path: Path, *, cwd: Path, env: dict | None = None):
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives `catalogue up`; `down` stops the whole group
        )


def run_command(command: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise StackError(f"{what} failed (exit {result.returncode}):\n{tail}")


def create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def alive(entry: dict) -> bool:
    """Is the process `up` recorded still the same one running (not a reused pid)?"""
    import psutil

    pid = entry.get("pid")
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        started = entry.get("started")
        return started is None or abs(process.create_time() - started) < 1.0
    except psutil.Error:
        return False


def stop_tree(pid: int, *, timeout_s: float = 20) -> None:
    """Stop a process group started by `spawn` and every descendant, waiting for them to exit.

    SIGINT first (Airflow standalone shuts its components down cleanly on it), then SIGTERM,
    then SIGKILL for whatever is left.
    """
    import psutil

    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    alive = family
    for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)
        _, alive = psutil.wait_procs(alive, timeout=wait_s)
        if not alive:
            return


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen, what: str, log_path: str, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(
                f"{what} exited with code {process.returncode} while starting:\n"
                f"{_tail(log_path)}\nsee {log_path}"
            )
        if ready():
            return
        time.sleep(1)
    stop_tree(process.pid)
    raise StackError(f"{what} did not become ready in {timeout_s:.0f}s; see {log_path}")


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- ports ------------------------------------------------------------------------------------------
def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def refuse_taken_port(port: int, what: str, setting: str) -> None:
    if port_open(port):
        raise StackError(
            f"port {port} for {what} is already taken by another program: stop that program "
            f"or set {setting} to a free port"
        )


def free_ports(count: int) -> list[int]:
    """Ports the OS reports free, each with port+10000 free too (gRPC defaults)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in ports and port < 55000 and not port_open(port + 10000):
            ports.append(port)
    return ports
