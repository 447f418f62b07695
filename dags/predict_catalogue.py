"""Predict colour and category for the catalogue with the champion models.

Runs when a collection stored new images (`catalogue://raw/images`) and when a model became
champion (`catalogue://models/champion`, from the retrain DAG or `catalogue models
promote|rollback`), and by hand. Only what the champions have not scored yet is scored: new
images after a collection, everything after a promotion.

1. `plan`: the champions and how many images they still have to score; no champion yet skips the
   run, saying so.
2. `score`: the work split into shards (image id modulo the number of shards) mapped over tasks,
   so more Celery workers finish sooner; each shard streams its pictures from the object store,
   scores both attributes in one pass and writes back set-based. A failed shard retries alone and
   finishes only what is left: no duplicates. Shards go to queue `score`, which every Celery
   worker takes, the `gpu` worker too (docker-compose.yml, `catalogue up --executor celery`):
   scoring spreads over all of them, while the rest of the CPU work stays on queue `default`, so
   collection never waits behind a training. The LocalExecutor ignores queues.
3. `report`: images scored, predictions that need review, pictures that could not be scored.
4. `group_duplicates`: once every shard is done, the pictures embedded since the last refresh are
   grouped with the rest (listings that show the same product, `marketplace.duplicate_listings`;
   thresholds CATALOGUE_DUPLICATE_*). It runs even when nothing was scored, so a refresh that
   failed is finished by the next run; without a category champion it skips, saying so.

A moderator's label is never overwritten; values below CATALOGUE_REVIEW_BELOW_CONFIDENCE (or with
top two classes closer than CATALOGUE_REVIEW_BELOW_MARGIN) are flagged `needs_review`.

Manual runs (Trigger DAG w/ config): `attributes` (a subset), `rescore_all` (rescore images already
scored), `shards` (override the number of shards).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, task
from assets import NEW_CHAMPION, NEW_IMAGES


def _retry_delay() -> timedelta:
    """How long a failed shard waits to be retried: CATALOGUE_PREDICT_RETRY_DELAY_S, read when
    the DAG is parsed."""
    from pipeline.config import Settings

    return timedelta(seconds=Settings.from_env().predict_retry_delay_s)


@dag(
    schedule=(NEW_IMAGES | NEW_CHAMPION),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["catalogue", "predict"],
    doc_md=__doc__,
    params={
        "attributes": Param(
            [], type="array", items={"type": "string"}, description="empty: every attribute"
        ),
        "rescore_all": Param(False, type="boolean", description="rescore images already scored"),
        "shards": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="mapped tasks (default: by the amount of work, at most "
            "CATALOGUE_PREDICT_MAX_SHARDS)",
        ),
    },
    default_args={
        "retries": 3,
        "retry_delay": _retry_delay(),
        "retry_exponential_backoff": True,
    },
)
def predict_catalogue():
    @task
    def plan(params=None) -> dict:
        import math

        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.config import load_settings
        from pipeline.db import get_engine
        from pipeline.predict.champions import current_champions
        from pipeline.predict.errors import NoChampion
        from pipeline.predict.pictures import count_wanted

        settings = load_settings()
        engine = get_engine(settings.database_url)
        try:
            champions = current_champions(engine=engine, attributes=params["attributes"] or None)
        except NoChampion as exc:
            raise AirflowSkipException(str(exc)) from None
        todo = count_wanted(
            engine=engine,
            version_ids=[c.version_id for c in champions],
            everything=params["rescore_all"],
        )
        shards = params["shards"] or max(
            1,
            min(settings.predict_max_shards, math.ceil(todo / settings.predict_min_shard_images)),
        )
        return {
            "versions": [c.version for c in champions],
            "images": todo,
            "shards": shards,
            "rescore_all": params["rescore_all"],
        }

    @task
    def shards_of(planned: dict) -> list[int]:
        return list(range(planned["shards"])) if planned["images"] else []

    @task(queue="score", map_index_template="shard {{ shard }}")
    def score(shard: int, planned: dict) -> dict:
        from pipeline.artefacts import artefact_cache
        from pipeline.config import load_settings
        from pipeline.db import get_engine
        from pipeline.predict.batch import PredictOptions, predict_catalogue
        from pipeline.storage import ObjectStore

        settings = load_settings()
        run = predict_catalogue(
            engine=get_engine(settings.database_url),
            images=ObjectStore.for_images(settings),
            models=ObjectStore.for_models(settings),
            cache_dir=artefact_cache(settings),
            options=PredictOptions.from_settings(
                settings,
                versions=tuple(planned["versions"]),
                everything=planned["rescore_all"],
                shard=shard,
                shards=planned["shards"],
            ),
        )
        return {
            "shard": shard,
            "images": run.images,
            "predictions": run.predictions,
            "needs_review": run.needs_review,
            "undecodable": run.undecodable,
            "missing": run.missing,
            "seconds": round(run.seconds, 1),
            "problems": run.problems,
        }

    @task
    def report(planned: dict, results: list[dict]) -> dict:
        results = list(results)
        total = {
            key: sum(r[key] for r in results)
            for key in ("images", "predictions", "needs_review", "undecodable", "missing")
        }
        return {"versions": planned["versions"], "shards": len(results), **total}

    @task(trigger_rule="none_failed")
    def group_duplicates() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.config import load_settings
        from pipeline.db import get_engine
        from pipeline.predict.errors import NoChampion
        from pipeline.similar.duplicates import DuplicateOptions, refresh_duplicates

        settings = load_settings()
        try:
            run = refresh_duplicates(
                get_engine(settings.database_url),
                options=DuplicateOptions.from_settings(settings),
            )
        except NoChampion as exc:
            raise AirflowSkipException(str(exc)) from None
        if run.nothing_embedded:
            raise AirflowSkipException(f"nothing embedded by {run.version} yet")
        return {
            "version": run.version,
            "checked": run.checked,
            "pairs": run.pairs,
            "grouped": run.grouped,
            "merged": run.merged,
            "started_over": run.started_over,
        }

    planned = plan()
    scored = score.partial(planned=planned).expand(shard=shards_of(planned))
    report(planned, scored)
    scored >> group_duplicates()


predict_catalogue()
