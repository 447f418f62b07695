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
