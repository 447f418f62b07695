"""The DAG files under real Airflow: they import cleanly and their tasks reach the real services."""

from __future__ import annotations

from tests.airflow_harness import run_dags


def test_dag_folder_imports_without_errors(airflow):
    result = run_dags(airflow)
    assert result["import_errors"] == {}
    assert "catalogue_check" in result["dag_ids"]


def test_catalogue_check_succeeds_against_the_services(airflow):
    result = run_dags(airflow, "catalogue_check")
    assert result["state"] == "success", result
    assert result["tasks"] == {"check_database": "success", "check_buckets": "success"}


def test_catalogue_check_fails_when_a_bucket_is_missing(airflow):
    env = {**airflow, "CATALOGUE_S3_BUCKET_MODELS": "no-such-bucket-for-check"}
    result = run_dags(env, "catalogue_check")
    assert result["state"] == "failed"
    assert result["tasks"]["check_database"] == "success"
    assert result["tasks"]["check_buckets"] == "failed"


def test_collect_posts_imports_the_sample_accounts_one_mapped_task_each(
    airflow, migrated, dataset, tmp_path
):
    from sqlalchemy import text

    from pipeline.samples import generate_sample_accounts

    with migrated.begin() as connection:
        connection.execute(text("TRUNCATE raw.accounts, raw.quarantine CASCADE"))
    archive = tmp_path / "archive"
    summary = generate_sample_accounts(dataset, archive, size=15, seed=3)
    accounts = sorted(p.name for p in archive.iterdir() if p.is_dir())

    result = run_dags(airflow, "collect_posts", {"archive_dir": str(archive)})
    assert result["state"] == "success", result
    mapped = {k: v for k, v in result["tasks"].items() if k.startswith("collect[")}
    assert len(mapped) == len(accounts) == summary.accounts
    assert set(mapped.values()) == {"success"}
    events = [e for e in result["asset_events"] if e["uri"] == "catalogue://raw/images"]
    assert len(events) == len(accounts)  # one announcement per account's task
    with migrated.connect() as connection:
        posts, images = connection.execute(
            text("SELECT (SELECT count(*) FROM raw.posts), (SELECT count(*) FROM raw.images)")
        ).one()
    assert (posts, images) == (summary.posts, summary.images)


def test_collect_posts_collects_live_accounts_from_replayed_instagram(airflow, migrated):
    import json

    from sqlalchemy import text

    from pipeline.accounts import add_account

    with migrated.begin() as connection:
        connection.execute(text("TRUNCATE raw.accounts, raw.quarantine CASCADE"))
    for name in ("shop_one", "shop_two"):
        add_account(engine=migrated, username=name)
    env = {
        **airflow,
        "CATALOGUE_TEST_REPLAY": json.dumps({"shop_one": 14, "shop_two": 3}),
        "CATALOGUE_INSTAGRAM_PAUSES": "false",
    }
    result = run_dags(env, "collect_posts", {"max_posts": 20})
    assert result["state"] == "success", result
    assert result["tasks"]["collect[0]"] == result["tasks"]["collect[1]"] == "success"
    assert len([e for e in result["asset_events"] if e["uri"] == "catalogue://raw/images"]) == 2
    with migrated.connect() as connection:
        counts = dict(
            connection.execute(
                text(
                    "SELECT a.username, count(p.id) FROM raw.accounts a "
                    "LEFT JOIN raw.posts p ON p.account_id = a.id GROUP BY a.username"
                )
            ).all()
        )
        requests = connection.execute(text("SELECT count(*) FROM raw.instagram_requests")).scalar()
    assert counts == {"shop_one": 14, "shop_two": 3}
    assert requests > 0  # the rate controller's history, written by the Airflow tasks
