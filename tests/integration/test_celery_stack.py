"""`catalogue up --executor celery`: Airflow's CeleryExecutor on Redis with a default and a `gpu`
worker, started for real and driven through Airflow's REST API; what ran where is read back from
Airflow's own records (each task instance's hostname is its worker's Celery node name)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import psutil
import pytest

from pipeline.config import describe_url
from tests.cli import catalogue
from tests.integration.test_local_stack import (
    _api,
    _asset_runs_after,
    _free_port,
    _now,
    _post,
    _processes_under,
    _stack_env,
    _tasks,
    _token,
    _wait_for_run,
)

SAMPLE_SIZE = 60
SHARDS = 3  # more than the default worker's 2 slots: the gpu worker must take some


@pytest.fixture
def redis_url():
    """An empty database of the Redis in CATALOGUE_TEST_REDIS_URL (default 127.0.0.1:6379), so a
    developer's own stack on that server keeps its queues; emptied after the test."""
    import redis

    from infra.processes import redis_answers

    server = os.environ.get("CATALOGUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    problem = redis_answers(server)
    if problem is not None:
        pytest.skip(
            f"no Redis answers at {describe_url(server)} ({problem}): install redis-server "
            "(.ci/run does) or set CATALOGUE_TEST_REDIS_URL"
        )
    base = server.rsplit("/", 1)[0] if server.count("/") > 2 else server
    for database in secrets.SystemRandom().sample(range(1, 16), 15):
        client = redis.Redis.from_url(f"{base}/{database}")
        try:
            if client.dbsize() == 0:
                break
        finally:
            client.close()
    else:
        pytest.skip(f"every database of the Redis at {describe_url(server)} holds keys")
    url = f"{base}/{database}"
    yield url
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def test_celery_executor_without_redis_is_one_line_naming_the_setting(services, tmp_path):
    env = _stack_env(services, tmp_path / "state")
    env["CATALOGUE_REDIS_URL"] = f"redis://:hunter2-secret@127.0.0.1:{_free_port()}/0"
    result = catalogue(env, "up", "--executor", "celery", timeout=60)
    assert result.returncode == 1
    assert "CATALOGUE_REDIS_URL" in result.stderr and "no Redis answers" in result.stderr
    assert "Traceback" not in result.stderr and "hunter2" not in result.stdout + result.stderr
    assert not (tmp_path / "state" / "postgres").exists()  # nothing was started
    assert _processes_under(tmp_path / "state") == []


def _tries(url: str, token: str, run: dict, task_id: str, map_index: int) -> list[dict]:
    path = (f"/api/v2/dags/predict_catalogue/dagRuns/{run['dag_run_id']}/taskInstances/"
            f"{task_id}/{map_index}/tries")  # fmt: skip
    return sorted(_api(url, token, path)["task_instances"], key=lambda t: t["try_number"])


def _at(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


def _kill_tree(pid: int) -> None:
    """SIGKILL a worker and every process under it at once, as when its machine dies: Airflow
    runs each task in a process group of its own, under the worker."""
    root = psutil.Process(pid)
    family = [root, *root.children(recursive=True)]
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(family, timeout=10)


def _one_row(env, sql: str) -> list[str]:
    result = catalogue(env, "sql", sql)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[1].split("\t")


def _scored_exactly_once_since(env, since: str) -> None:
    """Every picture has one prediction per champion and attribute, all written since `since`
    (the run that lost a worker rescored everything), and one marketplace row with both."""
    images, kept, fresh, shown, products, filled = _one_row(
        env,
        f"""SELECT (SELECT count(*) FROM raw.images),
        (SELECT count(*) FROM catalogue.model_predictions mp JOIN catalogue.model_versions v
           ON v.id = mp.model_version_id WHERE v.status = 'champion'),
        (SELECT count(*) FROM catalogue.model_predictions mp JOIN catalogue.model_versions v
           ON v.id = mp.model_version_id WHERE v.status = 'champion'
           AND mp.predicted_at >= '{since}'),
        (SELECT count(DISTINCT (p.image_id, p.attribute)) FROM catalogue.predictions p
           JOIN catalogue.model_versions v ON v.version = p.model_version
           AND v.attribute = p.attribute WHERE v.status = 'champion'),
        (SELECT count(*) FROM marketplace.products),
        (SELECT count(*) FROM marketplace.products
           WHERE colour IS NOT NULL AND category IS NOT NULL)""",
    )
    images = int(images)
    assert images > 0
    assert (int(kept), int(fresh)) == (2 * images, 2 * images), (images, kept, fresh)
    assert int(shown) == 2 * images
    assert int(products) == int(filled) == images


@pytest.mark.stack
def test_celery_workers_train_on_gpu_spread_predict_and_survive_a_killed_worker(
    services, dataset, redis_url, tmp_path
):
    # outside pytest's temporary folders, which another pytest session may close to all but their
    # owner while the embedded Postgres (its own user when we are root) still needs to reach them
    state_dir = Path(tempfile.mkdtemp(prefix="catalogue-celery-stack-"))
    state_dir.chmod(0o755)
    env = _stack_env(services, state_dir)
    env.update(
        CATALOGUE_REDIS_URL=redis_url,
        CATALOGUE_GPU_QUEUE_BACKEND="jax",
        # the sample's pictures in SHARDS shards when a promotion starts predict_catalogue
        CATALOGUE_PREDICT_MIN_SHARD_IMAGES=str(SAMPLE_SIZE // SHARDS - 1),
        CATALOGUE_PREDICT_MAX_SHARDS=str(SHARDS),
        CATALOGUE_PREDICT_RETRY_DELAY_S="5",  # the lost shard's retry: not a minute's wait
    )
    try:
        up = catalogue(env, "up", "--executor", "celery", timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        status = catalogue(env, "status")
        rows = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()}
        assert rows == {
            "postgres": "running", "s3": "running", "redis": "external", "airflow": "running",
            "web": "running", "worker-default": "running", "worker-gpu": "running",
        }, status.stdout  # fmt: skip
        assert "KERAS_BACKEND=jax" in status.stdout and "celery executor" in status.stdout
        record = json.loads((state_dir / "stack.json").read_text())
        workers = record["workers"]
        node = {name: workers[name]["node"] for name in ("default", "gpu")}
        airflow = record["airflow"]
        url = airflow["url"]
        password = json.loads(Path(airflow["password_file"]).read_text())[airflow["user"]]
        token = _token(url, airflow["user"], password)

        again = catalogue(env, "up", "--executor", "celery", timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "worker gpu: already running" in again.stdout, again.stdout
        assert json.loads((state_dir / "stack.json").read_text())["workers"] == workers

        # collection: CPU work, on the default worker only. Two accounts through Airflow (its
        # pool collects one account at a time), the others imported beforehand
        archive, by_airflow = tmp_path / "archive", tmp_path / "by-airflow"
        made = catalogue(env, "samples", str(archive), "--size", str(SAMPLE_SIZE))
        assert made.returncode == 0, made.stderr
        by_airflow.mkdir()
        for account in sorted(p for p in archive.iterdir() if p.is_dir())[:2]:
            account.rename(by_airflow / account.name)
        imported = catalogue(env, "import-archive", str(archive))
        assert imported.returncode == 0, imported.stdout + imported.stderr
        run = _post(url, token, "/api/v2/dags/collect_posts/dagRuns",
                    {"logical_date": None, "conf": {"archive_dir": str(by_airflow)}})  # fmt: skip
        collected = _wait_for_run(url, token, "collect_posts", run["dag_run_id"])
        tasks = _tasks(url, token, "collect_posts", collected)
        assert collected["state"] == "success", tasks
        assert {t["hostname"] for t in tasks if t["state"] == "success"} == {node["default"]}
        assert len([t for t in tasks if t["task_id"] == "collect"]) == 2
        # the new images started predict_catalogue, which skips without a champion; once those
        # runs are over, the next one is the promotion's
        _asset_runs_after(url, token, "predict_catalogue", collected["start_date"], quiet=5)

        # the labels, without telling Airflow: the retraining is triggered here, with tiny inputs
        quiet = {**env, "CATALOGUE_AIRFLOW_URL": f"http://127.0.0.1:{_free_port()}"}
        labelled = catalogue(quiet, "labels", "import", str(archive / "labels.csv"))
        assert labelled.returncode == 0, labelled.stderr
        trained_after = _now()
        run = _post(url, token, "/api/v2/dags/retrain_models/dagRuns", {
            "logical_date": None,
            "conf": {"network": "compact_80x60", "epochs": 1, "steps_per_epoch": 2, "force": True},
        })  # fmt: skip
        retrained = _wait_for_run(url, token, "retrain_models", run["dag_run_id"])
        tasks = _tasks(url, token, "retrain_models", retrained)
        assert retrained["state"] == "success", tasks
        training = [t for t in tasks if t["task_id"] == "train"]
        assert training and {(t["queue"], t["hostname"]) for t in training} == {
            ("gpu", node["gpu"])
        }
        assert {t["hostname"] for t in tasks if t["task_id"] != "train"} == {node["default"]}
        backends = _one_row(env, "SELECT string_agg(DISTINCT backend, ',') "
                            "FROM catalogue.model_versions WHERE status = 'champion'")  # fmt: skip
        assert backends == ["jax"]  # the gpu worker's KERAS_BACKEND trained them

        # the promotion's predict run: its shards spread over both workers
        (predicted,) = _asset_runs_after(url, token, "predict_catalogue", trained_after, quiet=10)
        tasks = _tasks(url, token, "predict_catalogue", predicted)
        assert predicted["state"] == "success", tasks
        shards = [t for t in tasks if t["task_id"] == "score"]
        assert len(shards) == SHARDS and {t["queue"] for t in shards} == {"score"}
        assert {t["hostname"] for t in shards} == set(node.values()), shards

        # a rescoring run loses the worker of a running shard to SIGKILL
        rescored_after = _now()
        run = _post(url, token, "/api/v2/dags/predict_catalogue/dagRuns",
                    {"logical_date": None, "conf": {"rescore_all": True, "shards": SHARDS}})  # fmt: skip
        deadline, victim = time.monotonic() + 240, None
        while victim is None and time.monotonic() < deadline:
            running = [t for t in _tasks(url, token, "predict_catalogue", run)
                       if t["task_id"] == "score" and t["state"] == "running" and t["hostname"]]  # fmt: skip
            if running:
                time.sleep(3)  # inside the task: loading its models, or scoring
                victim = next(n for n, h in node.items() if h == running[0]["hostname"])
            time.sleep(0.5)
        assert victim is not None, "no score shard started running"
        survivor = next(name for name in node if name != victim)
        killed_at = _now()
        _kill_tree(workers[victim]["pid"])

        status = catalogue(env, "status")
        assert f"worker-{victim}" in status.stdout and status.returncode == 1
        rows = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()}
        assert rows[f"worker-{victim}"] == "stopped" and rows[f"worker-{survivor}"] == "running"

        # the lost shards are retried on the survivor; then `up` brings the killed worker back
        # for the run's last tasks, which are the default queue's
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            scores = [t for t in _tasks(url, token, "predict_catalogue", run)
                      if t["task_id"] == "score"]  # fmt: skip
            if len(scores) == SHARDS and all(t["state"] == "success" for t in scores):
                break
            time.sleep(3)
        else:
            raise AssertionError(f"the shards did not all succeed: {scores}")
        back = catalogue(env, "up", "--executor", "celery", timeout=300)
        assert back.returncode == 0, back.stdout + back.stderr
        assert f"worker {victim}: starting" in back.stdout, back.stdout
        assert f"worker {survivor}: already running" in back.stdout, back.stdout
        finished = _wait_for_run(url, token, "predict_catalogue", run["dag_run_id"], timeout=300)
        assert finished["state"] == "success", _tasks(url, token, "predict_catalogue", finished)
        retried = 0
        for shard in range(SHARDS):
            tries = _tries(url, token, finished, "score", shard)
            assert tries[-1]["state"] == "success", tries
            for earlier, later in pairwise(tries):
                # a try lost with the killed worker, retried on the one still running
                assert earlier["state"] in ("failed", "up_for_retry"), tries
                assert earlier["hostname"] == node[victim], tries
                assert later["hostname"] == node[survivor], tries
                retried += 1
            if tries[-1]["hostname"] == node[victim]:
                assert _at(tries[-1]["end_date"]) < _at(killed_at), tries  # done before the kill
        assert retried >= 1
        _scored_exactly_once_since(env, rescored_after)
    finally:
        down = catalogue(env, "down", timeout=300)
    assert down.returncode == 0, down.stderr
    assert "worker" in down.stdout and "airflow" in down.stdout, down.stdout
    assert _processes_under(state_dir) == []
    shutil.rmtree(state_dir, ignore_errors=True)
