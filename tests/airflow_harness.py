"""Run DAGs under real Airflow for the tests: its own AIRFLOW_HOME and metadata database.

`run_dags(env, dag_id, conf)` runs `dag.test()` in a subprocess (Airflow reads its configuration
at import), and returns what Airflow recorded: the DagRun's state and run id, each task instance's
state, the run's asset events, and the subprocess's output (where `dag.test()` prints task logs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

_RUNNER = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
result = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()},
          "dag_ids": sorted(bag.dag_ids)}
if len(sys.argv) > 2:
    import contextlib, os
    dag = bag.get_dag(sys.argv[2])
    world = contextlib.nullcontext()
    if os.environ.get("CATALOGUE_TEST_REPLAY"):  # Instagram replayed for live collection
        from tests.instagram_replay import InstagramReplay, accounts_from_spec
        world = InstagramReplay(accounts_from_spec(json.loads(os.environ["CATALOGUE_TEST_REPLAY"])))
    with world:
        run = dag.test(run_conf=json.loads(sys.argv[3]) if len(sys.argv) > 3 else None)
    result["state"] = str(run.state)
    result["run_id"] = run.run_id
    result["tasks"] = {ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): str(ti.state)
                       for ti in run.get_task_instances()}
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    with create_session() as session:
        result["asset_events"] = [
            {"uri": uri, "source_dag_id": event.source_dag_id, "source_run_id": event.source_run_id,
             "source_map_index": event.source_map_index}
            for event, uri in session.query(AssetEvent, AssetModel.uri)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .filter(AssetEvent.source_run_id == run.run_id)
        ]
print("RESULT " + json.dumps(result))
"""


def airflow_env(base_env: dict[str, str], home: Path, metadata_url: str) -> dict[str, str]:
    env = {k: v for k, v in base_env.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=metadata_url,
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        # the DAG folder too, as Airflow's own processes have it: DAG files share modules there
        PYTHONPATH=os.pathsep.join((str(REPO_ROOT), str(REPO_ROOT / "dags"))),
    )
    return env


def migrate_airflow(env: dict[str, str]) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stderr[-3000:]}")


def run_dags(env: dict[str, str], dag_id: str | None = None, conf: dict | None = None) -> dict:
    args = [sys.executable, "-c", _RUNNER, str(REPO_ROOT / "dags")]
    if dag_id:
        args += [dag_id, json.dumps(conf or {})]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            found = json.loads(line[len("RESULT ") :])
            found["output"] = (result.stdout + result.stderr)[-50_000:]  # dag.test() task logs
            return found
    raise RuntimeError(
        f"the Airflow run printed no result (exit {result.returncode}):\n"
        f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )
