"""Relabel the catalogue: recorded bulk changes of labels, tried first as a dry run.

Trigger it with config: pick a `job`, fill in what that job needs, and keep `dry_run` on to see how
many labels would change and a sample (in the task's log and its return value). Then trigger again
with `dry_run` off. Each job is recorded as the Airflow user who triggered the run, with the run's
id, and can be undone.

Jobs (`attribute` is an attribute of the taxonomy: colour, category, ...; a value may be written as
any of its aliases, case and punctuation ignored):
- `rename`: every current label equal to one of `from_values` becomes `to`. Several `from_values`
  merge them: `Navy Blue`, `Dark Blue` -> `Blue`. It takes no filter: to change only some images
  use `move` with `value` and filters.
- `move`: the images the filters select get the label `to`.
- `clear`: the images the filters select lose their label (recorded as a label with no value).
- `apply_csv`: import the label CSV at `csv_path`, a path the worker can read, with the header
  `shortcode,position,colour,category,moderator,note`. Refused rows are listed, valid ones applied.
- `undo`: put back what job `undo_job_id` replaced, where its labels are still the current ones.

Filters of `move` and `clear` (every given filter must hold, at least one is needed): `account`,
`value` (the current label is one of), `predicted` (the model predicts one of), `shortcodes`,
`since` / `until` (the post's date, YYYY-MM-DD). `note` is kept with each label a job writes.

A run that changes labels emits an event on the asset `catalogue://labels`, which the retrain DAG
listens to; a dry run, or a job that changes nothing, emits none. A mistake in the config (an
unknown value, a missing filter or file) fails the run at once, without retries, saying what to fix.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from assets import LABELS_CHANGED, LABELS_CHANGED_ALIAS

log = logging.getLogger(__name__)

JOBS = ("rename", "move", "clear", "apply_csv", "undo")
JOB_SECTION = "The job"
FILTER_SECTION = "Filters (move, clear)"


def _strings(description: str, section: str) -> Param:
    return Param(
        [], type="array", items={"type": "string"}, description=description, section=section
    )


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["catalogue", "labels"],
    doc_md=__doc__,
    params={
        "job": Param(
            "rename",
            type="string",
            enum=list(JOBS),
            values_display={
                "rename": "rename / merge values",
                "move": "move selected images to a value",
                "clear": "clear the labels of selected images",
                "apply_csv": "apply a label CSV",
                "undo": "undo a job",
            },
            description="what to do; see the DAG's documentation",
            section=JOB_SECTION,
        ),
        "dry_run": Param(
            True,
            type="boolean",
            description="only count and sample what would change; turn off to apply",
            section=JOB_SECTION,
        ),
        "attribute": Param(
            "colour",
            type="string",
            description="the taxonomy attribute: colour, category, ... (rename, move, clear)",
            section=JOB_SECTION,
        ),
        "from_values": _strings("rename: the values to replace, one per line", JOB_SECTION),
        "to": Param(
            None,
            type=["null", "string"],
            description="rename, move: the new value",
            section=JOB_SECTION,
        ),
        "note": Param(
            None,
            type=["null", "string"],
            description="why; kept with each label the job writes",
            section=JOB_SECTION,
        ),
        "csv_path": Param(
            None,
            type=["null", "string"],
            description="apply_csv: the label CSV, a path the Airflow worker can read",
            section=JOB_SECTION,
        ),
        "undo_job_id": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="undo: the job's number (in an earlier run's result, or "
            "`catalogue labels jobs`)",
            section=JOB_SECTION,
        ),
        "account": Param(
            None,
            type=["null", "string"],
            description="images of this account's posts",
            section=FILTER_SECTION,
        ),
        "value": _strings("images whose current label is one of these", FILTER_SECTION),
        "predicted": _strings("images the model labels as one of these", FILTER_SECTION),
        "shortcodes": _strings("images of these posts", FILTER_SECTION),
        "like": Param(
            None,
            type=["null", "string"],
            description="the near-duplicates of this picture (SHORTCODE or SHORTCODE/POSITION): "
            "its duplicate group, itself included",
            section=FILTER_SECTION,
        ),
        "since": Param(
            None,
            type=["null", "string"],
            format="date",
            description="posts taken on or after this day",
            section=FILTER_SECTION,
        ),
        "until": Param(
            None,
            type=["null", "string"],
            format="date",
            description="posts taken on or before this day",
            section=FILTER_SECTION,
        ),
    },
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
)
def relabel():
    @task(outlets=[LABELS_CHANGED_ALIAS])
    def run_relabel_job() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from pipeline.config import load_settings
        from pipeline.db import get_engine
        from pipeline.labels.history import Who
        from pipeline.labels.jobs import JobError
        from pipeline.labels.label_csv import LabelFileError
        from pipeline.labels.taxonomy import UnknownValue

        context = get_current_context()
        params, dag_run = context["params"], context["dag_run"]
        who = Who(
            # the authenticated user who triggered the run; when unknown, the database role
            name=getattr(dag_run, "triggering_user_name", None),
            origin="airflow",
            airflow_run_id=dag_run.run_id,
        )
        try:
            job = _job(params)
            engine = get_engine(load_settings().database_url)
            summary = _run_job(job, engine=engine, who=who, dry_run=bool(params["dry_run"]))
        except (JobError, UnknownValue, LabelFileError) as exc:
            raise AirflowFailException(f"{params['job']}: {exc}") from None

        verb = "would change" if summary["dry_run"] else "changed"
        log.info(
            "%s by %s: %s %s labels%s",
            summary["job"],
            who.name or "(the database role)",
            verb,
            summary["labels_changed"],
            f" (job {summary['job_id']})" if summary["job_id"] else "",
        )
        for row in summary["sample"]:
            log.info(
                "  %s/%s: %s -> %s", row["shortcode"], row["position"], row["before"], row["after"]
            )
        if summary["job_id"] and not summary["dry_run"]:
            log.info("to undo it: trigger relabel with job undo, undo_job_id %s", summary["job_id"])
        if not summary["dry_run"] and summary["labels_changed"]:
            context["outlet_events"][LABELS_CHANGED_ALIAS].add(
                LABELS_CHANGED,
                extra={"job_id": summary["job_id"], "labels_written": summary["labels_changed"]},
            )
        return summary

    run_relabel_job()


def _job(params: dict[str, Any]) -> dict[str, Any]:
    """The job the Params ask for, checked by the rules of `pipeline.labels` before any database
    work: a mistake raises their error, which says what to fix."""
    from datetime import date

    from pipeline.labels.jobs import JobError, Selection, validate_request, validate_undo
    from pipeline.labels.label_csv import LabelFileError

    kind = params["job"]
    if kind == "apply_csv":
        if not params.get("csv_path"):
            raise LabelFileError(
                "apply_csv needs csv_path: a label CSV the Airflow worker can read"
            )
        return {"kind": kind, "csv_path": params["csv_path"]}
    if kind == "undo":
        validate_undo(job_id=params.get("undo_job_id"))
        return {"kind": kind, "job_id": params["undo_job_id"]}

    def day(name: str) -> date | None:
        try:
            return date.fromisoformat(params[name]) if params.get(name) else None
        except ValueError:
            raise JobError(f"{name} '{params[name]}' is not a date: write YYYY-MM-DD") from None

    request = {
        "kind": kind,
        "attribute": params.get("attribute"),
        "to": params.get("to") or None,
        "from_values": list(params.get("from_values") or []),
        "selection": Selection(
            account=params.get("account") or None,
            value=list(params.get("value") or []),
            predicted=list(params.get("predicted") or []),
            shortcodes=list(params.get("shortcodes") or []),
            like=params.get("like") or None,
            since=day("since"),
            until=day("until"),
        ),
    }
    validate_request(**request)
    return {**request, "note": params.get("note")}


def _run_job(job: dict[str, Any], *, engine, who, dry_run: bool) -> dict[str, Any]:
    """Run a checked job through pipeline.labels; a JSON-able summary."""
    from pipeline.labels.jobs import run_job, undo_job

    if job["kind"] == "apply_csv":
        return _apply_csv(job["csv_path"], engine=engine, who=who, dry_run=dry_run)
    if job["kind"] == "undo":
        outcome = undo_job(engine=engine, job_id=job["job_id"], who=who, dry_run=dry_run)
    else:
        outcome = run_job(engine=engine, who=who, dry_run=dry_run, **job)
    return {
        "job": job["kind"],
        "dry_run": outcome.dry_run,
        "job_id": outcome.job_id,
        "labels_changed": outcome.images,
        "unchanged": outcome.unchanged,
        "skipped": outcome.skipped,
        "sample": [{k: _plain(v) for k, v in row.items()} for row in outcome.sample],
    }


def _apply_csv(csv_path: str, *, engine, who, dry_run: bool) -> dict[str, Any]:
    from pipeline.labels.label_csv import format_report, import_labels

    report = import_labels(csv_path, engine=engine, who=who, dry_run=dry_run, kind="apply_csv")
    lines = list(format_report(report, limit=20))
    for line in lines:
        log.info("%s", line)
    return {
        "job": "apply_csv",
        "dry_run": not report.applied,
        "job_id": report.job_id,
        "labels_changed": (
            report.written if report.applied else report.labels_wanted - report.unchanged
        ),
        "unchanged": report.unchanged,
        "skipped": len(report.stale),
        "refused": len(report.refused),
        "sample": [],
        "problems": lines[1:],  # the refused and skipped rows, with their reasons
    }


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


relabel()
