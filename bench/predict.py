"""Prediction throughput against its two stages measured in the same run, and write-back rate.

    .venv/bin/python bench/predict.py --size 10000                           # 60x80 photos
    .venv/bin/python bench/predict.py --size 10000 --image-size 1080x1350
    .venv/bin/python bench/predict.py --size 10000 --network catalogue_net   # the old default

Uses the configured services (CATALOGUE_DATABASE_URL / CATALOGUE_S3_*, or the local stack from
`catalogue up --no-airflow`) in a scratch database and scratch buckets, removed afterwards. The
sample accounts are imported as an archive; the champions are the default network (or
`--network`: one artefact with a colour and a category head, at the network's own input size;
weights do not change the cost) registered and promoted through the registry.

On the same images, in the same run:
- input stage: object store -> decoded arrays (the predict stream, same threads and prefetch);
- model stage: the champions' network on those decoded arrays, same batch size;
- end to end: `predict_catalogue` (fetch -> decode -> model -> Postgres), in a fresh process, on
  every image and on a fifth of them: its peak memory (ru_maxrss) must not grow with the images.
  Timed, like the stages, once the model is loaded and compiled (the start-up is reported
  beside it). Target: end-to-end >= 0.7 of the slower stage.
- write-back: `write_scores` of the same rows against a plain COPY of them into a table of the
  same columns, in batches of the same size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from sqlalchemy import text  # noqa: E402

from bench.header import result_header  # noqa: E402
from bench.scratch import (  # noqa: E402
    drop_database,
    empty_bucket,
    scratch_bucket,
    scratch_database,
)
from pipeline.config import load_settings  # noqa: E402
from pipeline.predict.batch import PredictOptions  # noqa: E402

# what `catalogue predict` runs with when nothing is configured
BATCH = PredictOptions().batch_size
WORKERS = PredictOptions().workers


def child(args: argparse.Namespace) -> None:
    """One end-to-end pass in a fresh process (for its peak memory)."""
    from pipeline.db import get_engine
    from pipeline.predict.batch import predict_catalogue
    from pipeline.storage import ObjectStore

    settings = load_settings()
    run = predict_catalogue(
        engine=get_engine(settings.database_url), images=ObjectStore.for_images(settings),
        models=ObjectStore.for_models(settings), cache_dir=Path(args.cache),
        options=PredictOptions(limit=args.limit, batch_size=BATCH, workers=WORKERS),
    )  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps({"images": run.images, "seconds": run.seconds,
                                  "startup_seconds": run.startup_seconds,
                                  "predictions": run.predictions, "peak_bytes": peak}))  # fmt: skip


def run_child(env: dict[str, str], cache: Path, limit: int | None) -> dict:
    command = [sys.executable, __file__, "--child", "--cache", str(cache)]
    if limit:
        command += ["--limit", str(limit)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"the predict pass failed:\n{done.stderr[-3000:]}")


def register_champions(engine, models, work: Path, network_name: str) -> list:
    from pipeline.train.fit import ARTEFACT, METADATA, TrainedModel
    from pipeline.train.models import architecture, build_model
    from pipeline.train.registry import promote, register

    with engine.connect() as connection:  # as many classes as the benchmark's protocols learn
        classes = {
            attribute: connection.execute(
                text("SELECT value FROM catalogue.attribute_values WHERE attribute = :a "
                     "ORDER BY depth DESC, value LIMIT :n"),
                {"a": attribute, "n": n},
            ).scalars().all()
            for attribute, n in (("colour", 18), ("category", 41))
        }  # fmt: skip
    network = build_model(network_name, {a: len(c) for a, c in classes.items()})
    size = list(architecture(network_name).image_size)
    folder = work / "artefact"
    folder.mkdir()
    network.save(folder / ARTEFACT)
    checksum = secrets.token_hex(32)
    with engine.begin() as connection:
        snapshot_id = connection.execute(
            text(
                "INSERT INTO catalogue.dataset_snapshots (checksum, manifest_key, "
                "taxonomy_version_id, attributes, counts, images, created_by) SELECT :c, "
                "'snapshots/bench.json', max(id), '{}', '{}', 0, 'bench' "
                "FROM catalogue.taxonomy_versions RETURNING id"
            ),
            {"c": checksum},
        ).scalar_one()
    metrics = {a: {"accuracy": 0.0} for a in classes}
    (folder / METADATA).write_text(json.dumps({
        "architecture": network_name, "backend": "tensorflow", "image_size": size,
        "epochs": 0, "seconds": 0, "images_per_s": 0, "attributes": list(classes),
        "classes": classes, "snapshot": checksum, "metrics": metrics,
    }))  # fmt: skip
    trained = TrainedModel(folder=folder, attributes=list(classes), classes=classes,
                           metrics=metrics, backend="tensorflow", seconds=0, images_per_s=0)  # fmt: skip
    versions = register(engine=engine, store=models, trained=trained, snapshot_id=snapshot_id,
                        created_by="bench")  # fmt: skip
    for version in versions:
        promote(engine=engine, version=version, who="bench")
    return versions


def measure_stages(engine, images, models, cache: Path) -> dict:
    """The input stage and the model stage alone, on the same images."""
    from pipeline.predict.champions import current_champions, load_scoring_models
    from pipeline.predict.pictures import stream_pictures, wanted_pages

    champions = current_champions(engine=engine)
    (scoring,) = load_scoring_models(champions, store=models, cache_dir=cache)
    ids = [c.version_id for c in champions]
    pages = wanted_pages(engine=engine, version_ids=ids, everything=True, shard=0, shards=1,
                         page=BATCH)  # fmt: skip
    started = time.perf_counter()
    batches = [
        [p.arrays[scoring.image_size] for p in pictures]
        for pictures in stream_pictures(
            pages, store=images, sizes=[scoring.image_size], workers=WORKERS
        )
    ]
    input_s = time.perf_counter() - started
    count = sum(len(b) for b in batches)

    import numpy as np

    arrays = []
    for batch in batches:
        array = np.stack(batch)
        if len(array) < BATCH:
            array = np.concatenate([array, np.zeros((BATCH - len(array), *array.shape[1:]),
                                                    array.dtype)])  # fmt: skip
        arrays.append(array)
    scoring.probabilities(arrays[0])  # compiled once, as in a run
    started = time.perf_counter()
    for array in arrays:
        scoring.probabilities(array)
    model_s = time.perf_counter() - started
    return {"images": count, "input_seconds": input_s, "model_seconds": model_s}


def measure_writeback(engine) -> dict:
    """The stored predictions written again by `write_scores`, against a plain COPY of the same
    rows into a table of the same columns, in batches of the same size."""
    from pipeline.predict.writeback import Score, _csv, _score_rows, write_scores

    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT model_version_id, image_id, value, confidence, margin, top, needs_review "
                "FROM catalogue.model_predictions ORDER BY image_id, model_version_id"
            )
        ).all()
    scores = [Score(*row) for row in rows]
    batches = [scores[i : i + 2 * BATCH] for i in range(0, len(scores), 2 * BATCH)]
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE catalogue.model_predictions, catalogue.predictions"))
        connection.execute(text("TRUNCATE marketplace.products CASCADE"))
        connection.execute(
            text(
                "CREATE TABLE public.copy_bound (model_version_id integer, image_id bigint, "
                "value text, confidence real, margin real, top jsonb, needs_review boolean)"
            )
        )
    started = time.perf_counter()
    for batch in batches:
        write_scores(engine=engine, scores=batch, unscorable=[])
    write_s = time.perf_counter() - started

    started = time.perf_counter()
    for batch in batches:
        connection = engine.raw_connection()
        try:
            with connection.cursor() as cursor:
                cursor.copy_expert("COPY public.copy_bound FROM STDIN WITH (FORMAT csv)",
                                   _csv(_score_rows(batch)))  # fmt: skip
            connection.commit()
        finally:
            connection.close()
    copy_s = time.perf_counter() - started
    with engine.connect() as connection:
        products = connection.execute(text("SELECT count(*) FROM marketplace.products")).scalar()
    return {"rows": len(scores), "products": products, "write_seconds": write_s,
            "copy_seconds": copy_s}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000, help="product photos (default 10000)")
    parser.add_argument("--image-size", help="re-encode to WIDTHxHEIGHT, e.g. 1080x1350")
    parser.add_argument("--archive", type=Path, help="reuse a generated archive folder")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--network", help="the champions' network (default: the default network)")
    args = parser.parse_args()
    if args.child:
        return child(args)

    from pipeline.collect.archive import import_archive
    from pipeline.samples import generate_sample_accounts
    from pipeline.train.models import DEFAULT_ARCHITECTURE, architecture

    settings = load_settings()
    network = args.network or DEFAULT_ARCHITECTURE
    image_size = tuple(int(v) for v in args.image_size.split("x")) if args.image_size else None
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    archive = args.archive
    if archive is None:
        archive = work / "archive"
        started = time.perf_counter()
        generate_sample_accounts(settings.dataset_dir, archive, size=args.size, seed=7,
                                 image_size=image_size)  # fmt: skip
        print(f"generated the archive in {time.perf_counter() - started:.1f}s", flush=True)
    token = secrets.token_hex(3)
    images = scratch_bucket(settings, f"bench-{token}-images")
    models = scratch_bucket(settings, f"bench-{token}-models")
    db, engine = scratch_database(settings)
    try:
        summary = import_archive(archive, engine=engine, store=images, workers=8)
        print(f"imported {summary.images_new} images", flush=True)
        versions = register_champions(engine, models, work, network)
        stages = measure_stages(engine, images, models, work / "cache")
        count = stages["images"]
        print(f"input stage {count / stages['input_seconds']:.0f} img/s, model stage "
              f"{count / stages['model_seconds']:.0f} img/s", flush=True)  # fmt: skip

        env = {
            **os.environ,
            "CATALOGUE_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "CATALOGUE_S3_BUCKET_IMAGES": images.bucket,
            "CATALOGUE_S3_BUCKET_MODELS": models.bucket,
        }
        small = run_child(env, work / "cache", limit=count // 5)
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE catalogue.model_predictions, catalogue.predictions"))
        full = run_child(env, work / "cache", limit=None)
        assert full["images"] == count, (full, count)
        print(f"end to end {count / (full['seconds'] - full['startup_seconds']):.0f} img/s",
              flush=True)  # fmt: skip
        written = measure_writeback(engine)
    finally:
        drop_database(settings, db)
        empty_bucket(images)
        empty_bucket(models)
        shutil.rmtree(work, ignore_errors=True)  # generated archive, picture cache, artefact

    input_rate = count / stages["input_seconds"]
    model_rate = count / stages["model_seconds"]
    # the stages are timed after their model is loaded and compiled; so is end to end (the
    # start-up, about as long whatever the number of images, is reported beside it)
    e2e_rate = count / (full["seconds"] - full["startup_seconds"])
    bound = min(input_rate, model_rate)
    result = {
        **result_header("predict"),
        "data": {
            "images": count,
            "image_size": args.image_size or "native (60x80)",
            "source": str(settings.dataset_dir),
            "seed": 7,
        },
        "model": {
            "network": network,
            "input": list(architecture(network).image_size),
            "heads": ["colour", "category"],
            "versions": versions,
            "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
            "batch_size": BATCH,
            "workers": WORKERS,
        },
        "input_stage": {
            "seconds": round(stages["input_seconds"], 2),
            "images_per_s": round(input_rate, 1),
        },
        "model_stage": {
            "seconds": round(stages["model_seconds"], 2),
            "images_per_s": round(model_rate, 1),
        },
        "end_to_end": {
            "seconds": round(full["seconds"] - full["startup_seconds"], 2),
            "images_per_s": round(e2e_rate, 1),
            "startup_seconds": round(full["startup_seconds"], 2),
            "images_per_s_with_startup": round(count / full["seconds"], 1),
            "predictions": full["predictions"],
        },
        "ratio": round(e2e_rate / bound, 3),
        "target_ratio": 0.7,
        "peak_memory": {
            "images_small": small["images"],
            "peak_mib_small": round(small["peak_bytes"] / 2**20),
            "images_full": full["images"],
            "peak_mib_full": round(full["peak_bytes"] / 2**20),
            "growth": round(full["peak_bytes"] / small["peak_bytes"], 3),
        },
        "write_back": {
            "rows": written["rows"],
            "marketplace_rows": written["products"],
            "rows_per_s": round(written["rows"] / written["write_seconds"], 1),
            "plain_copy_rows_per_s": round(written["rows"] / written["copy_seconds"], 1),
            "ratio": round(written["copy_seconds"] / written["write_seconds"], 3),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"predict-{args.image_size or 'native'}-{network}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
