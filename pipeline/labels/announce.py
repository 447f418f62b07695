"""Tell Airflow that labels changed outside it (the `catalogue labels` commands).

An asset event on `catalogue://labels` is what a relabel run inside Airflow emits by itself; the
retrain DAG listens to it. The retrain DAG also counts changed labels in the database, so nothing
depends on the event reaching Airflow.
"""

from __future__ import annotations

from pipeline.announce import announce_asset_event
from pipeline.config import Settings

LABELS_ASSET_URI = "catalogue://labels"
_FALLBACK = "the retrain DAG counts changed labels in the database anyway"


def announce_labels_changed(*, settings: Settings, job_id: int, labels_written: int) -> str:
    """Create an asset event for `catalogue://labels`; return what happened, in one line."""
    return announce_asset_event(
        settings=settings,
        uri=LABELS_ASSET_URI,
        extra={"job_id": job_id, "labels_written": labels_written},
        done=f"{labels_written} labels changed by job {job_id}",
        fallback=_FALLBACK,
    )
