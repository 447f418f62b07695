"""`catalogue up|status|down`: the local stack with no Docker, started for real."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from tests.cli import catalogue
from tests.conftest import dataset_dir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stack_env(services, state_dir: Path) -> dict[str, str]:
    """No database URL, no S3 endpoint: the embedded defaults a newcomer gets."""
    env = {
        k: v
        for k, v in services.env().items()
        if k
        not in (
            "CATALOGUE_DATABASE_URL",
            "CATALOGUE_S3_ENDPOINT",
            "CATALOGUE_S3_ACCESS_KEY",
            "CATALOGUE_S3_SECRET_KEY",
        )
    }
    env.update(
        # a 60-picture sample is enough to train on, briefly
        CATALOGUE_TRAIN_MIN_EXAMPLES="2",
        CATALOGUE_TRAIN_NETWORK="compact_80x60",
        CATALOGUE_TRAIN_EPOCHS="1",
        CATALOGUE_RETRAIN_MIN_CHANGED_LABELS="50",  # the sample's ~120 labels train, a rename not
        CATALOGUE_STATE_DIR=str(state_dir),
        CATALOGUE_S3_PORT=str(_free_port()),
        CATALOGUE_AIRFLOW_PORT=str(_free_port()),
        CATALOGUE_WEB_PORT=str(_free_port()),
    )
    return env


def _api(url: str, token: str, path: str) -> dict:
    request = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _post(url: str, token: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _wait_for_run(url: str, token: str, dag_id: str, run_id: str, timeout: float = 420) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _api(url, token, f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(3)
    others = [(r["dag_run_id"], r["run_type"], r["state"])
              for r in _api(url, token, f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
              if r["dag_run_id"] != run_id]  # fmt: skip
    raise AssertionError(
        f"{dag_id} run {run_id} did not finish in {timeout}s: {run['state']}; other runs: {others}"
    )


def _token(url: str, user: str, password: str) -> str:
    request = urllib.request.Request(
        f"{url}/auth/token",
        data=json.dumps({"username": user, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["access_token"]


def _processes_under(state_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            environ = process.info["environ"] or {}
        except psutil.Error:
            continue
        if str(state_dir) in cmdline or environ.get("CATALOGUE_STATE_DIR") == str(state_dir):
            found.append(process)
    return found


def _asset_runs_after(url: str, token: str, dag_id: str, after: str, timeout: float = 300,
                      quiet: float = 20) -> list[dict]:  # fmt: skip
    """The runs of `dag_id` that asset events queued after `after`, once all have finished and no
    new one came for `quiet` seconds (a DAG mapped over accounts announces once per account)."""
    deadline, settled = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        runs = _api(url, token, f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
        runs = [r for r in runs if r["run_type"] == "asset_triggered"
                and datetime.fromisoformat(r["queued_at"]) >= datetime.fromisoformat(after)]  # fmt: skip
        finished = runs and all(r["state"] in ("success", "failed") for r in runs)
        if not finished:
            settled = None
        elif settled is None or settled[1] != len(runs):
            settled = (time.monotonic(), len(runs))
        elif time.monotonic() - settled[0] >= quiet:
            return runs
        time.sleep(2)
    raise AssertionError(f"no asset event started {dag_id} after {after}, or its runs hang")


def _asset_run_after(url: str, token: str, dag_id: str, after: str) -> dict:
    runs = _asset_runs_after(url, token, dag_id, after)
    assert len(runs) == 1, runs
    return runs[0]


def _predicted_after(url: str, token: str, after: str, uri: str) -> None:
    """Every predict run that `uri`'s events started after `after` succeeded."""
    runs = _asset_runs_after(url, token, "predict_catalogue", after)
    assert all(r["state"] == "success" for r in runs), [
        _tasks(url, token, "predict_catalogue", r) for r in runs
    ]
    uris = set()
    for run in runs:
        events = _api(url, token, f"/api/v2/dags/predict_catalogue/dagRuns/"
                      f"{run['dag_run_id']}/upstreamAssetEvents")["asset_events"]  # fmt: skip
        uris |= {e["uri"].rstrip("/") for e in events}
    assert uri in uris, uris


def _tasks(url: str, token: str, dag_id: str, run: dict) -> list[dict]:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances"
    return _api(url, token, path)["task_instances"]


def _relabelling_retrains_and_predicts(env, url: str, token: str, tmp_path):
    """On the running scheduler, driven only by Assets: a moderators' label import reaches
    retrain_models through the REST API, which trains on queue and pool `gpu` (`dag.test()`
    ignores pools and queues) and promotes; the new champions start
    predict_catalogue, which fills the marketplace. A small relabelling starts a retrain run that
    skips, saying why."""
    archive = tmp_path / "archive"
    assert catalogue(env, "samples", str(archive), "--size", "60").returncode == 0
    assert catalogue(env, "import-archive", str(archive)).returncode == 0
    started = _now()
    labelled = catalogue(env, "labels", "import", str(archive / "labels.csv"))
    assert labelled.returncode == 0, labelled.stderr
    assert "told Airflow" in labelled.stdout, labelled.stdout

    retrained = _asset_run_after(url, token, "retrain_models", started)
    tasks = _tasks(url, token, "retrain_models", retrained)
    assert retrained["state"] == "success", tasks
    states = {t["task_id"]: t["state"] for t in tasks}
    assert states["snapshot"] == "success" and states["promote"] == "success", states
    training = [t for t in tasks if t["task_id"] == "train"]
    assert len(training) == 1  # one network with a colour and a category head
    assert {(t["queue"], t["pool"], t["state"]) for t in training} == {("gpu", "gpu", "success")}
    champions = catalogue(env, "models", "list")
    assert champions.stdout.count(" champion ") == 2, champions.stdout

    _predicted_after(url, token, retrained["start_date"], "catalogue://models/champion")
    _assert_everything_scored(env)

    refused = catalogue(
        {**env, "CATALOGUE_AIRFLOW_PASSWORD": "wrong"}, "labels", "rename",
        "--attribute", "colour", "--from", "Black", "--to", "Grey",
    )  # fmt: skip
    assert "refused the login of 'admin'" in refused.stdout, refused.stdout
    small = _now()
    renamed = catalogue(env, "labels", "rename", "--attribute", "colour", "--from", "Grey",
                        "--to", "Black")  # fmt: skip
    assert "told Airflow" in renamed.stdout, renamed.stdout + renamed.stderr
    skipped = _asset_run_after(url, token, "retrain_models", small)
    states = {t["task_id"]: t["state"] for t in _tasks(url, token, "retrain_models", skipped)}
    assert states["snapshot"] == "skipped", states

    # a new installation waits for Sunday 03:00 and 02:00: neither the weekly training nor the
    # nightly collection started when `up` unpaused them
    for dag_id in ("retrain_models", "collect_posts"):
        runs = _api(url, token, f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
        assert not [r for r in runs if r["run_type"] == "scheduled"], (dag_id, runs)


def _now() -> str:
    return datetime.now(UTC).isoformat()  # the scheduler runs on this machine's clock


def _assert_everything_scored(env) -> None:
    unscored = catalogue(
        env, "sql",
        "SELECT count(*) FROM raw.images i LEFT JOIN marketplace.products m "
        "ON m.image_id = i.id WHERE m.colour IS NULL OR m.category IS NULL",
    )  # fmt: skip
    assert unscored.stdout.split() == ["count", "0"], unscored.stdout + unscored.stderr


@pytest.mark.stack
def test_up_status_down_with_embedded_defaults(services, tmp_path):
    state_dir = tmp_path / "state"
    env = _stack_env(services, state_dir)
    try:
        up = catalogue(env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        record = json.loads((state_dir / "stack.json").read_text())
        assert record["postgres"]["managed"] and record["s3"]["managed"]

        status = catalogue(env, "status")
        assert status.returncode == 0, status.stdout
        rows = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()}
        assert rows == {
            "postgres": "running",
            "s3": "running",
            "airflow": "running",
            "web": "running",
        }
        assert "embedded" in status.stdout

        airflow = record["airflow"]
        password = json.loads(Path(airflow["password_file"]).read_text())[airflow["user"]]
        token = _token(airflow["url"], airflow["user"], password)
        dags = {d["dag_id"]: d for d in _api(airflow["url"], token, "/api/v2/dags")["dags"]}
        assert "catalogue_check" in dags and not dags["catalogue_check"]["is_paused"]
        assert _api(airflow["url"], token, "/api/v2/importErrors")["total_entries"] == 0
        pools = {
            p["name"]: p["slots"] for p in _api(airflow["url"], token, "/api/v2/pools")["pools"]
        }
        assert pools["instagram"] == 1 and pools["gpu"] == 1

        if (dataset_dir() / "styles.csv").exists():
            # a collection's asset starting predict_catalogue is shown on the celery stack
            # (test_celery_stack.py), which collects through Airflow
            _relabelling_retrains_and_predicts(env, airflow["url"], token, tmp_path)

        again = catalogue(env, "up")
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        record_again = json.loads((state_dir / "stack.json").read_text())
        assert record_again["s3"]["pid"] == record["s3"]["pid"]
        assert record_again["airflow"]["pid"] == record["airflow"]["pid"]
    finally:
        down = catalogue(env, "down")
    assert down.returncode == 0, down.stderr
    assert "airflow" in down.stdout and "postgres" in down.stdout and "web" in down.stdout
    assert _processes_under(state_dir) == []
    for port in (
        env["CATALOGUE_S3_PORT"],
        env["CATALOGUE_AIRFLOW_PORT"],
        env["CATALOGUE_WEB_PORT"],
    ):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(port))) != 0
    after = catalogue(env, "status")
    assert after.returncode == 1
    assert "stopped" in after.stdout


def test_configured_database_that_does_not_answer_is_an_error_not_a_fallback(services, tmp_path):
    env = _stack_env(services, tmp_path / "state")
    env["CATALOGUE_DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{_free_port()}/catalogue"
    result = catalogue(env, "up", "--no-airflow", timeout=60)
    assert result.returncode == 1
    assert "CATALOGUE_DATABASE_URL" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "postgres").exists()  # no embedded server was started
    assert _processes_under(tmp_path / "state") == []


def test_a_taken_port_is_reported_with_what_to_do(services, tmp_path):
    env = _stack_env(services, tmp_path / "state")
    env["CATALOGUE_DATABASE_URL"] = services.env()["CATALOGUE_DATABASE_URL"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        env["CATALOGUE_S3_PORT"] = str(squatter.getsockname()[1])
        result = catalogue(env, "up", "--no-airflow", timeout=60)
    assert result.returncode == 1
    assert "already taken" in result.stderr and "CATALOGUE_S3_PORT" in result.stderr
    assert _processes_under(tmp_path / "state") == []
