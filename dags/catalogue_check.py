"""Check the catalogue's services.

Proves from inside Airflow that a task reaches the catalogue database (at the latest migration)
and both S3 buckets with the configured credentials. Trigger it after changing connections or
secrets; a failed run names the setting to fix in its log.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["catalogue", "operations"],
    doc_md=__doc__,
    default_args={"retries": 0},
)
def catalogue_check():
    @task
    def check_database() -> str:
        from pipeline.config import load_settings
        from pipeline.db import get_engine
        from pipeline.db.migrate import current_revision, head_revision

        settings = load_settings()
        current, head = current_revision(get_engine(settings.database_url)), head_revision()
        if current != head:
            raise RuntimeError(
                f"catalogue database at revision {current}, expected {head}: "
                "run `catalogue db upgrade`"
            )
        return current

    @task
    def check_buckets() -> list[str]:
        from pipeline.config import load_settings
        from pipeline.storage import ObjectStore

        settings = load_settings()
        stores = [ObjectStore.for_images(settings), ObjectStore.for_models(settings)]
        for store in stores:
            store.check()
        return [store.bucket for store in stores]

    check_database() >> check_buckets()


catalogue_check()
