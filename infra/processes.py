"""The processes the local stack starts and the ports they listen on.

A service is spawned in its own process group with its output in a log file, so it outlives the
command that started it; `up` records its pid and start time, and only a process that is still
that one (`alive`) is ever stopped, with every process it started (`stop_tree`).

The Celery broker (Redis) is the operator's: `redis_answers` asks it, `celery_nodes_answering`
asks the workers through it, and `task_hostname` is what a worker's task instances record as
their hostname.
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


def spawned_entry(process: subprocess.Popen, log_path: Path, **fields) -> dict:
    """What the stack record keeps of a process `spawn` started."""
    return {"managed": True, "pid": process.pid, "started": create_time(process.pid),
            "log": str(log_path), **fields}  # fmt: skip


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


# -- Redis and the Celery workers -------------------------------------------------------------------
def redis_answers(url: str) -> str | None:
    """None when the Redis server at `url` answers PING, otherwise why not (no secrets in it)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        password = client.connection_pool.connection_kwargs.get("password")
        return reason.replace(password, "***") if password else reason
    finally:
        client.close()
    return None


def celery_nodes_answering(broker_url: str, nodes: list[str], *, timeout_s: float = 2) -> set[str]:
    """The Celery worker nodes among `nodes` that answer a ping through the broker."""
    from celery import Celery

    app = Celery(broker=broker_url, set_as_current=False)
    try:
        replies = app.control.ping(destination=nodes, timeout=timeout_s)
    except Exception:  # a broker that stopped answering: no worker answers either
        return set()
    finally:
        app.close()
    return {node for reply in replies for node in reply}


def task_hostname() -> str:
    """Airflow's `[core] hostname_callable` on the local stack's Celery workers: the worker's node
    name (`gpu@host`), so a task instance records which of two workers on one machine ran it."""
    return os.environ.get("CATALOGUE_WORKER_NODE") or socket.getfqdn()
