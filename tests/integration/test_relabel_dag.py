"""The relabel DAG under real Airflow against the real Postgres, and the announcement to Airflow's
REST API that the `catalogue labels` commands make."""

from __future__ import annotations

import json
import socket

import pytest
from sqlalchemy import text

from pipeline.config import Settings
from pipeline.labels.announce import LABELS_ASSET_URI, announce_labels_changed
from pipeline.labels.history import WantedLabel, Who, write_labels
from tests.airflow_harness import run_dags

# shortcode -> colour label before each test
COLOURS = {"rl_a": "Navy Blue", "rl_b": "Sky Blue", "rl_c": "Red", "rl_d": "Navy Blue"}


@pytest.fixture
def labelled(migrated):
    """One account, a single-image post per shortcode of COLOURS, each labelled with its colour."""
    with migrated.begin() as connection:
        connection.execute(text("TRUNCATE raw.accounts, raw.quarantine CASCADE"))
        account_id = connection.execute(
            text("INSERT INTO raw.accounts (username) VALUES ('relabel_shop') RETURNING id")
        ).scalar_one()
        wanted = []
        for n, (shortcode, colour) in enumerate(COLOURS.items(), start=1):
            post_id = connection.execute(
                text(
                    "INSERT INTO raw.posts (shortcode, media_id, account_id, taken_at, media_type, "
                    "node) VALUES (:s, :m, :a, now(), 'image', '{}') RETURNING id"
                ),
                {"s": shortcode, "m": 9_000 + n, "a": account_id},
            ).scalar_one()
            image_id = connection.execute(
                text(
                    "INSERT INTO raw.images (media_id, post_id, position, object_key, sha256, "
                    "width, height, bytes, content_type) VALUES (:m, :p, 0, :k, :h, 10, 10, 100, "
                    "'image/jpeg') RETURNING id"
                ),
                {"m": 9_000 + n, "p": post_id, "k": f"images/{n:064x}.jpg", "h": f"{n:064x}"},
            ).scalar_one()
            wanted.append(WantedLabel(image_id, "colour", colour))
        write_labels(
            connection=connection, kind="label", who=Who(name="seed"), arguments={}, wanted=wanted
        )
    return migrated


def _current_colours(engine) -> dict[str, str]:
    with engine.connect() as connection:
        return dict(
            connection.execute(
                text(
                    "SELECT p.shortcode, l.value FROM catalogue.current_labels l "
                    "JOIN raw.images i ON i.id = l.image_id JOIN raw.posts p ON p.id = i.post_id "
                    "WHERE l.attribute = 'colour'"
                )
            ).all()
        )


def _label_rows(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM catalogue.labels")).scalar_one()


def _label_events(result: dict) -> list[dict]:
    return [e for e in result["asset_events"] if e["uri"].rstrip("/") == LABELS_ASSET_URI]


MERGE = {"job": "rename", "attribute": "colour", "from_values": ["navy", "Sky Blue"], "to": "Blue"}


def test_a_merge_run_relabels_as_the_triggering_user_and_announces_the_change(airflow, labelled):
    result = run_dags(airflow, "relabel", {**MERGE, "dry_run": False, "note": "one blue"})

    assert result["state"] == "success", result["output"][-5000:]
    assert result["tasks"] == {"run_relabel_job": "success"}
    assert _current_colours(labelled) == {"rl_a": "Blue", "rl_b": "Blue", "rl_c": "Red",
                                          "rl_d": "Blue"}  # fmt: skip
    with labelled.connect() as connection:
        job = connection.execute(
            text(
                "SELECT id, kind, origin, created_by, airflow_run_id, labels_written "
                "FROM catalogue.label_jobs ORDER BY id DESC LIMIT 1"
            )
        ).one()
        new_labels = connection.execute(
            text(
                "SELECT source, created_by, moderator, note, replaces_label_id IS NOT NULL "
                "FROM catalogue.labels WHERE job_id = :job"
            ),
            {"job": job.id},
        ).all()
    assert (job.kind, job.origin, job.labels_written) == ("rename", "airflow", 3)
    assert job.airflow_run_id == result["run_id"]
    assert job.created_by == "dag_test"  # dag.test()'s triggering user; the UI's login otherwise
    assert set(new_labels) == {("relabel", "dag_test", "dag_test", "one blue", True)}
    assert len(new_labels) == 3
    events = _label_events(result)
    assert len(events) == 1
    assert events[0]["source_dag_id"] == "relabel"

    # Undone from Airflow too: the previous colours come back, as new rows.
    undo = run_dags(airflow, "relabel", {"job": "undo", "undo_job_id": job.id, "dry_run": False})
    assert undo["state"] == "success", undo["output"][-5000:]
    assert _current_colours(labelled) == COLOURS
    assert len(_label_events(undo)) == 1


@pytest.mark.parametrize(
    ("conf", "logged"),
    [
        pytest.param(MERGE, "would change 3 labels", id="by-default-a-dry-run"),
        pytest.param(
            {**MERGE, "from_values": ["Blue"], "to": "Red", "dry_run": False},
            "changed 0 labels",
            id="nothing-to-change",
        ),
    ],
)
def test_a_run_that_writes_no_label_succeeds_without_an_event(airflow, labelled, conf, logged):
    rows = _label_rows(labelled)
    result = run_dags(airflow, "relabel", conf)

    assert result["state"] == "success", result["output"][-5000:]
    assert logged in result["output"]
    assert _label_rows(labelled) == rows
    assert _current_colours(labelled) == COLOURS
    assert _label_events(result) == []


def test_apply_csv_imports_the_file_the_worker_reads(airflow, labelled, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("shortcode,position,colour\nrl_c,0,Green\nrl_x,0,Blue\n")
    result = run_dags(
        airflow, "relabel", {"job": "apply_csv", "csv_path": str(path), "dry_run": False}
    )

    assert result["state"] == "success", result["output"][-5000:]
    assert _current_colours(labelled)["rl_c"] == "Green"
    assert "unknown shortcode 'rl_x'" in result["output"]  # refused rows are listed in the log
    assert len(_label_events(result)) == 1


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        pytest.param(
            {**MERGE, "to": "Bleu", "dry_run": False},
            "'Bleu' is not a colour of the taxonomy",
            id="unknown-value",
        ),
        pytest.param(
            {"job": "move", "to": "Blue", "dry_run": False},
            "move needs a filter",
            id="move-without-filter",
        ),
        pytest.param(
            {**MERGE, "account": "relabel_shop", "dry_run": False},
            "rename takes no filter (account given)",
            id="rename-with-a-filter",
        ),
        pytest.param(
            {"job": "move", "to": "Blue", "account": "relabel_shop", "from_values": ["Red"]},
            "move takes no values to replace (from)",
            id="move-with-values-to-replace",
        ),
        pytest.param(
            {"job": "move", "to": "Blue", "like": "NOSUCHPOST", "dry_run": False},
            "like: unknown shortcode 'NOSUCHPOST'",
            id="like-an-unknown-post",
        ),
    ],
)
def test_a_mistake_in_the_config_fails_the_run_saying_what_to_fix(airflow, labelled, conf, message):
    rows = _label_rows(labelled)
    result = run_dags(airflow, "relabel", conf)

    assert result["state"] == "failed"
    assert result["tasks"] == {"run_relabel_job": "failed"}
    assert message in result["output"]
    assert _label_rows(labelled) == rows
    assert _label_events(result) == []


# -- the announcement through the REST API ----------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the socket is


def test_announce_says_so_when_airflow_is_not_reachable():
    settings = Settings(airflow_url=f"http://127.0.0.1:{_closed_port()}", airflow_password="pw")
    message = announce_labels_changed(settings=settings, job_id=7, labels_written=3)
    assert "is not reachable" in message
    assert "retrain DAG counts changed labels in the database" in message


def test_the_airflow_password_defaults_to_the_local_stack_one(tmp_path):
    (tmp_path / "airflow").mkdir()
    (tmp_path / "airflow" / "passwords.json").write_text(json.dumps({"admin": "generated"}))
    settings = Settings.from_env({"CATALOGUE_STATE_DIR": str(tmp_path)})
    assert settings.airflow_url == "http://127.0.0.1:8080"
    assert settings.airflow_password == "generated"
    assert "generated" not in repr(settings)
    configured = Settings.from_env(
        {"CATALOGUE_STATE_DIR": str(tmp_path), "CATALOGUE_AIRFLOW_PASSWORD": "mine",
         "CATALOGUE_AIRFLOW_URL": "https://airflow.example.com/"}
    )  # fmt: skip
    assert (configured.airflow_password, configured.airflow_url) == (
        "mine", "https://airflow.example.com"
    )  # fmt: skip
