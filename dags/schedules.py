"""Timetables shared by the catalogue's DAGs, importable from any DAG file without heavy imports."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronTriggerTimetable


def from_next(cron: str) -> CronTriggerTimetable:
    """`cron` in UTC, starting at its next point: a new installation does not run at once when
    `catalogue up` unpauses the DAG. Airflow runs the latest past point when a start_date is set
    (run_immediately is then ignored) or, with run_immediately=False, when it lies within a tenth
    of the interval: so the DAG must have no start_date, and the window here is zero."""
    return CronTriggerTimetable(cron, timezone="UTC", run_immediately=timedelta(0))
