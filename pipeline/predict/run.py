"""One prediction pass as configured: the configured stores and artefact cache, and progress told
every few seconds. What `catalogue predict` and the demo run (the predict DAG's shards call
`predict_catalogue` with a pinned plan)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from pipeline.artefacts import artefact_cache
from pipeline.config import Settings
from pipeline.predict.batch import PredictOptions, PredictRun, predict_catalogue
from pipeline.storage import ObjectStore


def predict_as_configured(
    *,
    settings: Settings,
    engine: Engine,
    options: PredictOptions | None = None,
    progress: Callable[[PredictRun], None] | None = None,
    every_s: float = 5.0,
) -> PredictRun:
    """Score what the champions have not scored yet (`predict_catalogue`); `progress` hears of
    the run at most every `every_s` seconds, and once more when every planned image is done."""
    shown = {"at": 0.0}

    def throttled(run: PredictRun) -> None:
        finished = run.images + run.undecodable + run.missing >= run.planned
        if progress and (run.seconds - shown["at"] >= every_s or finished):
            shown["at"] = run.seconds
            progress(run)

    return predict_catalogue(
        engine=engine,
        images=ObjectStore.for_images(settings),
        models=ObjectStore.for_models(settings),
        cache_dir=artefact_cache(settings),
        options=options or PredictOptions.from_settings(settings),
        progress=throttled,
    )
