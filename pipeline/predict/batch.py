"""One prediction pass: the images some champion has not scored yet, scored and written back.

`predict_catalogue` is what `catalogue predict` runs and what each shard of the predict DAG runs
(`shard`/`shards`: the images whose id modulo `shards` is `shard`). It scores only what is missing
(new images after a collection; everything after a promotion, except images the new champion
scored before), so a rerun after a crash finishes the rest and changes nothing else; `everything`
rescores all. Both attributes are scored in one pass over the pictures, and the same pass
stores each picture's embedding from the category champion (`pipeline.similar`) and its
perceptual hashes; a picture scored before embeddings existed is embedded by the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from pipeline.artefacts import EMBEDDING
from pipeline.config import Settings, configured, setting
from pipeline.predict.champions import (
    Champion,
    ScoringModel,
    current_champions,
    load_scoring_models,
    pinned_champions,
)
from pipeline.predict.errors import PredictInterrupted
from pipeline.predict.pictures import Picture, count_wanted, stream_pictures, wanted_pages
from pipeline.predict.writeback import Embedding, Hashes, Score, Unscorable, write_scores
from pipeline.similar import EMBEDDING_ATTRIBUTE
from pipeline.similar.embeddings import ensure_index, normalised
from pipeline.storage import ObjectStore

TOP = 3  # classes kept per prediction


@dataclass(frozen=True)
class PredictOptions:
    attributes: tuple[str, ...] | None = None  # default: every attribute with a champion
    versions: tuple[str, ...] | None = None  # pinned versions (a DAG run's plan)
    everything: bool = False  # rescore images the champion already scored
    shard: int = 0
    shards: int = 1
    limit: int | None = None  # score at most this many images
    batch_size: int = setting("predict_batch_size")
    workers: int = setting("predict_workers")
    prefetch: int = 2  # batches decoded ahead of the model
    # for a model without a calibrated threshold of its own (trained before models had one)
    review_below_confidence: float = setting("review_below_confidence")
    review_below_margin: float = setting("review_below_margin")

    @classmethod
    def from_settings(cls, settings: Settings, **choices: Any) -> PredictOptions:
        """The configured batch size, threads and review thresholds, with this run's choices
        (a choice of None keeps the configured value)."""
        return configured(cls, settings, choices)


@dataclass
class PredictRun:
    champions: list[str]
    planned: int = 0
    images: int = 0  # pictures scored
    predictions: int = 0  # (image, attribute) scores written
    embedded: int = 0  # embeddings written (the category champion's)
    needs_review: int = 0
    undecodable: int = 0
    missing: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0  # finding the work, loading and compiling the models
    problems: list[str] = field(default_factory=list)  # a sample, for the report

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def streaming_images_per_s(self) -> float:
        """Once the models are loaded: the rate a long run approaches."""
        streaming = self.seconds - self.startup_seconds
        return self.images / streaming if streaming > 0 else 0.0


def predict_catalogue(
    *, engine: Engine, images: ObjectStore, models: ObjectStore, cache_dir: Path,
    options: PredictOptions = PredictOptions(),
    progress: Callable[[PredictRun], None] | None = None,
) -> PredictRun:  # fmt: skip
    """Score what the champions have not scored yet and write it back (see the module doc)."""
    started = time.perf_counter()
    if options.versions:
        champions = pinned_champions(engine=engine, versions=list(options.versions))
    else:
        champions = current_champions(
            engine=engine, attributes=list(options.attributes) if options.attributes else None
        )
    run = PredictRun(champions=[c.version for c in champions])
    version_ids = [c.version_id for c in champions]
    embed = next((c.version_id for c in champions if c.attribute == EMBEDDING_ATTRIBUTE), None)
    run.planned = count_wanted(
        engine=engine, version_ids=version_ids, everything=options.everything,
        shard=options.shard, shards=options.shards, embed=embed,
    )  # fmt: skip
    if options.limit is not None:
        run.planned = min(run.planned, options.limit)
    if run.planned == 0:
        run.seconds = time.perf_counter() - started
        return run
    scoring = load_scoring_models(champions, store=models, cache_dir=cache_dir)
    for model in scoring:  # compiled once before the stream starts
        model.probabilities(np.zeros((options.batch_size, *model.image_size, 3), np.uint8))
        if embed is not None and any(c.version_id == embed for c in model.champions.values()):
            ensure_index(engine, version_id=embed, dims=model.dims)
    run.startup_seconds = time.perf_counter() - started
    sizes = sorted({m.image_size for m in scoring})
    pages = wanted_pages(
        engine=engine, version_ids=version_ids, everything=options.everything,
        shard=options.shard, shards=options.shards, page=options.batch_size, limit=options.limit,
        embed=embed,
    )  # fmt: skip
    stream = stream_pictures(pages, store=images, sizes=sizes, workers=options.workers,
                             prefetch=options.prefetch)  # fmt: skip
    # One batch is written (in Postgres, by a thread of its own) while the next is scored.
    writer = ThreadPoolExecutor(1, thread_name_prefix="predict-write")
    pending: tuple | None = None

    def settle(batch: tuple) -> None:
        future, pictures, scores, unscorable, embedded = batch
        future.result()
        _count(run, pictures, scores, unscorable)
        run.embedded += embedded
        run.seconds = time.perf_counter() - started
        if progress:
            progress(run)

    try:
        for pictures in stream:
            scores, unscorable, embeddings = score_batch(pictures, scoring, options, embed=embed)
            hashes = [
                Hashes(p.wanted.image_id, p.signature.phash, p.signature.phash_mirrored,
                       p.signature.colours)
                for p in pictures if p.signature
            ]  # fmt: skip
            if pending is not None:
                batch, pending = pending, None
                settle(batch)
            future = writer.submit(write_scores, engine=engine, scores=scores,
                                   unscorable=unscorable, embeddings=embeddings,
                                   hashes=hashes)  # fmt: skip
            pending = (future, pictures, scores, unscorable, len(embeddings))
        if pending is not None:
            batch, pending = pending, None
            settle(batch)
    except Exception as exc:
        if not _database_lost(exc):
            raise
        raise PredictInterrupted(
            f"the database connection was lost after {run.images} images were scored and "
            f"saved ({exc.__class__.__name__}); nothing is half-written: run `catalogue predict` "
            "again (or let the task retry) to score the rest"
        ) from exc
    finally:
        stream.close()
        if pending is not None:  # a batch scored before the failure is still saved
            pending[0].exception()
        writer.shutdown(wait=True)
    run.seconds = time.perf_counter() - started
    return run


def _count(run: PredictRun, pictures: list[Picture], scores: list[Score],
           unscorable: list[Unscorable]) -> None:  # fmt: skip
    run.images += sum(1 for p in pictures if p.problem is None)
    run.predictions += len(scores)
    run.needs_review += sum(s.needs_review for s in scores)
    for problem in unscorable:
        if problem.kind == "missing":
            run.missing += 1
        else:
            run.undecodable += 1
        if len(run.problems) < 10:
            run.problems.append(f"image {problem.image_id}: {problem.reason}")


def score_batch(
    pictures: list[Picture], scoring: list[ScoringModel], options: PredictOptions,
    embed: int | None = None,
) -> tuple[list[Score], list[Unscorable], list[Embedding]]:  # fmt: skip
    """The batch's scores from each model in one call per model (padded to a fixed batch size,
    so the compiled function is reused), for the versions that still need them; and from the
    model holding version `embed`, the embeddings of the pictures that version needs."""
    good = [p for p in pictures if p.problem is None]
    unscorable = [Unscorable(p.wanted.image_id, *p.problem) for p in pictures if p.problem]
    scores: list[Score] = []
    embeddings: list[Embedding] = []
    for model in scoring:
        chosen = [p for p in good
                  if any(c.version_id in p.wanted.version_ids for c in model.champions.values())]  # fmt: skip
        if not chosen:
            continue
        batch = np.stack([p.arrays[model.image_size] for p in chosen])
        if len(batch) < options.batch_size:
            padding = np.zeros((options.batch_size - len(batch), *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, padding])
        probabilities = model.probabilities(batch)
        for attribute, champion in model.champions.items():
            p = probabilities[attribute]
            for row, picture in enumerate(chosen):
                if champion.version_id in picture.wanted.version_ids:
                    scores.append(_score(champion, picture.wanted.image_id, p[row], options))
            if champion.version_id == embed:
                vectors = normalised(probabilities[EMBEDDING][: len(chosen)])
                embeddings.extend(
                    Embedding(embed, picture.wanted.image_id, vectors[row])
                    for row, picture in enumerate(chosen)
                    if embed in picture.wanted.version_ids
                )
    return scores, unscorable, embeddings


def _score(champion: Champion, image_id: int, p: np.ndarray, options: PredictOptions) -> Score:
    order = np.argsort(-p)[:TOP]
    confidence = float(p[order[0]])
    margin = confidence - (float(p[order[1]]) if len(order) > 1 else 0.0)
    confidence = min(max(confidence, 0.0), 1.0)
    return Score(
        version_id=champion.version_id,
        image_id=image_id,
        value=champion.classes[order[0]],
        confidence=confidence,
        margin=margin,
        top=[{"value": champion.classes[i], "confidence": round(float(p[i]), 4)} for i in order],
        needs_review=needs_review(champion, confidence, margin, options),
    )


def needs_review(champion: Champion, confidence: float, margin: float,
                 options: PredictOptions) -> bool:  # fmt: skip
    """Below the model's own calibrated threshold (none: always); an uncalibrated older model by
    the configured fixed thresholds."""
    if champion.calibrated:
        return champion.review_below is None or confidence < champion.review_below
    return confidence < options.review_below_confidence or margin < options.review_below_margin


def _database_lost(exc: BaseException) -> bool:
    import psycopg2
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc.orig, psycopg2.OperationalError)
    return isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))
