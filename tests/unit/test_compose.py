"""docker-compose.yml, checked by parsing it (no Docker engine runs here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
AIRFLOW_COMPONENTS = [
    "airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
    "airflow-worker", "airflow-worker-gpu",
]  # fmt: skip
LONG_RUNNING = ["postgres", "s3", "redis", "web", *AIRFLOW_COMPONENTS]
ONE_SHOT = ["s3-init", "airflow-init"]


def test_the_stack_has_every_service():
    assert set(SERVICES) == set(LONG_RUNNING + ONE_SHOT)


@pytest.mark.parametrize("name", ["postgres", "s3", "redis"])
def test_third_party_images_are_pinned(name):
    image = SERVICES[name]["image"]
    repository, _, tag = image.rpartition(":")
    assert repository and tag and tag != "latest", image
    assert re.search(r"\d+\.\d+", tag), f"{image} is not pinned to a version"


def test_postgres_is_16_and_s3_is_seaweedfs():
    assert SERVICES["postgres"]["image"].startswith("pgvector/pgvector:")  # similar items
    assert SERVICES["postgres"]["image"].endswith("-pg16")
    assert SERVICES["s3"]["image"].startswith("chrislusf/seaweedfs:")


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_healthchecks(name):
    check = SERVICES[name]["healthcheck"]
    assert check["test"] and check["interval"] and check["retries"]


@pytest.mark.parametrize("name", [*AIRFLOW_COMPONENTS, *ONE_SHOT, "web"])
def test_airflow_images_are_built_from_infra(name):
    build = SERVICES[name]["build"]
    assert build["dockerfile"] == "infra/Dockerfile"
    assert (REPO / build["dockerfile"]).exists()
    assert f"AS {build['target']}" in (REPO / "infra" / "Dockerfile").read_text()


@pytest.mark.parametrize("name", AIRFLOW_COMPONENTS)
def test_airflow_waits_for_healthy_dependencies_and_the_init_job(name):
    depends = SERVICES[name]["depends_on"]
    for dependency in ("postgres", "redis", "s3"):
        assert depends[dependency]["condition"] == "service_healthy"
    assert depends["airflow-init"]["condition"] == "service_completed_successfully"


def test_airflow_components_share_one_jwt_secret_and_the_execution_api():
    environments = [SERVICES[name]["environment"] for name in AIRFLOW_COMPONENTS]
    secrets = {env["AIRFLOW__API_AUTH__JWT_SECRET"] for env in environments}
    assert len(secrets) == 1 and next(iter(secrets)).startswith("${AIRFLOW_JWT_SECRET")
    for env in environments:
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
            "http://airflow-api-server:8080/execution/"
        )
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
        assert "@postgres:5432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["CATALOGUE_S3_ENDPOINT"] == "http://s3:8333"


def _queues(service: str) -> set[str]:
    command = SERVICES[service]["command"]
    return set(command[command.index("--queues") + 1].split(","))


def test_gpu_worker_takes_the_gpu_queue_with_a_reserved_nvidia_device():
    worker = SERVICES["airflow-worker-gpu"]
    assert "gpu" in _queues("airflow-worker-gpu") and "gpu" not in _queues("airflow-worker")
    assert worker["command"][worker["command"].index("--concurrency") + 1] == "1"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert worker["environment"]["KERAS_BACKEND"] == "jax"
    assert worker["build"]["target"] == "gpu"


def test_the_workers_take_the_queues_the_local_stack_gives_them():
    """docker-compose.yml and `catalogue up --executor celery` run the same two workers: the
    default queue's CPU work never reaches the GPU machine, the predict shards reach both."""
    from infra.local_stack import celery_workers
    from pipeline.config import Settings

    local = {w.name: set(w.queues) for w in celery_workers(Settings.from_env({}))}
    assert _queues("airflow-worker") == local["default"] == {"default", "score"}
    assert _queues("airflow-worker-gpu") == local["gpu"] == {"gpu", "score"}


def test_the_dags_queues_are_ones_a_worker_takes():
    """Every queue a DAG file names has a worker: a task on no worker's queue waits forever."""
    named = set()
    for source in (REPO / "dags").glob("*.py"):
        named |= set(re.findall(r"queue=\"([a-z_]+)\"", source.read_text()))
    taken = _queues("airflow-worker") | _queues("airflow-worker-gpu")
    assert named and named <= taken, named - taken


def test_secrets_come_from_env_never_literals():
    text = (REPO / "docker-compose.yml").read_text()
    for variable in (
        "POSTGRES_PASSWORD",
        "CATALOGUE_DB_PASSWORD",
        "AIRFLOW_DB_PASSWORD",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_FERNET_KEY",
    ):
        assert f"${{{variable}:?" in text, f"{variable} is not required from .env"
    example = (REPO / ".env.example").read_text()
    for variable in re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text):  # $${X} is the container's
        assert re.search(rf"^#?\s*{variable}=", example, re.M), f"{variable} not in .env.example"


def test_pools_are_created_from_the_shared_pool_file():
    init = " ".join(SERVICES["airflow-init"]["command"])
    assert "airflow pools import /opt/catalogue/infra/airflow/pools.json" in init
    pools = json.loads((REPO / "infra" / "airflow" / "pools.json").read_text())
    assert pools["instagram"]["slots"] == 1 and pools["gpu"]["slots"] == 1


def test_bucket_init_job_runs_before_airflow():
    assert SERVICES["s3-init"]["command"] == ["buckets", "create"]
    assert SERVICES["s3-init"]["depends_on"]["s3"]["condition"] == "service_healthy"
    assert SERVICES["airflow-init"]["depends_on"]["s3-init"]["condition"] == (
        "service_completed_successfully"
    )
