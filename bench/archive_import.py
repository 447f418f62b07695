"""Archive import throughput against the raw bound measured in the same run.

    .venv/bin/python bench/archive_import.py --size 10000                     # 60x80 photos
    .venv/bin/python bench/archive_import.py --size 10000 --image-size 1080x1350

Uses the configured services (CATALOGUE_DATABASE_URL / CATALOGUE_S3_*, or the local stack from
`catalogue up --no-airflow`), in a scratch database and scratch buckets that are removed afterwards.

The bound is the raw cost of the same work with the same concurrency: PUT every picture's bytes to
the S3 server, plus INSERT the same post and image rows into Postgres (one transaction per post,
no checks, no upsert logic). Import throughput is reported as a ratio of that bound; target >= 0.6.
The bound is measured before and after the import, and the import is compared with the mean of the
two (the ratio against the faster of the two is reported beside it).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from sqlalchemy import text  # noqa: E402

from bench.header import result_header  # noqa: E402
from bench.scratch import scratch_services  # noqa: E402
from pipeline.collect.archive import import_archive  # noqa: E402
from pipeline.collect.posts import post_row  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from pipeline.samples import generate_sample_accounts  # noqa: E402
from pipeline.storage import ObjectStore, content_key  # noqa: E402


def measure_put(store: ObjectStore, files: list[Path], workers: int, *, prefix: str) -> float:
    def put(path: Path) -> None:
        data = path.read_bytes()
        # the same key layout as the import (content_key): the S3 server's cost of the fan-out
        # folders belongs to the bound
        key = content_key(hashlib.sha256(data).hexdigest(), "image/jpeg", prefix=prefix)
        store._client.put_object(
            store.bucket, key, io.BytesIO(data), len(data), content_type="image/jpeg"
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, files))
    return time.perf_counter() - started


def load_rows(archive: Path, posts: dict[str, list[dict]]) -> list[tuple[dict, list[dict]]]:
    """The same post rows the import writes (node JSON, caption, hashtags), read beforehand."""
    from instaloader.structures import load_structure_from_file

    from pipeline.collect.archive_files import POST_FILE, offline_context
    from pipeline.collect.instaloader_posts import from_instaloader

    context = offline_context()
    by_shortcode = {}
    for path in archive.glob("*/*_UTC.json.xz"):
        if POST_FILE.match(path.name):
            post = from_instaloader(
                load_structure_from_file(context, str(path)), images=[], source="archive"
            )
            by_shortcode[post.shortcode] = post
    return [(by_shortcode[shortcode], images) for shortcode, images in posts.items()]


def measure_insert(engine, rows: list[tuple[object, list[dict]]], workers: int) -> float:
    """One transaction per post: a plain INSERT of the post row, then of each image row."""
    from sqlalchemy import bindparam
    from sqlalchemy.dialects.postgresql import JSONB

    with engine.begin() as connection:
        account_id = connection.execute(
            text("INSERT INTO raw.accounts (username) VALUES ('bound') RETURNING id")
        ).scalar_one()
    insert_post = text(
        "INSERT INTO raw.posts (shortcode, media_id, account_id, taken_at, caption, hashtags, "
        "like_count, comment_count, media_type, location, node, source) VALUES (:shortcode, "
        ":media_id, :account_id, :taken_at, :caption, :hashtags, :like_count, :comment_count, "
        ":media_type, :location, :node, :source) RETURNING id"
    ).bindparams(bindparam("location", type_=JSONB), bindparam("node", type_=JSONB))
    insert_image = text(
        "INSERT INTO raw.images (media_id, post_id, position, object_key, sha256, width, height, "
        "bytes, content_type) VALUES (:m, :p, :pos, :key, :sha, 60, 80, 1500, 'image/jpeg')"
    )

    def insert(item) -> None:
        post, images = item
        with engine.begin() as connection:
            post_id = connection.execute(
                insert_post, post_row(post, account_id=account_id)
            ).scalar_one()
            for image in images:
                connection.execute(
                    insert_image,
                    {
                        "m": int(image["media_id"]),
                        "p": post_id,
                        "pos": int(image["position"]),
                        "key": f"images/{image['media_id']}.jpg",
                        "sha": "0" * 64,
                    },
                )

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(insert, rows))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000, help="product photos (default 10000)")
    parser.add_argument("--image-size", help="re-encode to WIDTHxHEIGHT, e.g. 1080x1350")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--archive", type=Path, help="reuse a generated archive folder")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    settings = load_settings()
    image_size = tuple(int(v) for v in args.image_size.split("x")) if args.image_size else None
    if args.archive is not None:
        measure(args, settings, args.archive)
        return
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as work:  # removed afterwards
        archive = Path(work) / "archive"
        started = time.perf_counter()
        generate_sample_accounts(
            settings.dataset_dir, archive, size=args.size, seed=7, image_size=image_size
        )
        print(f"generated the archive in {time.perf_counter() - started:.1f}s", flush=True)
        measure(args, settings, archive)


def measure(args: argparse.Namespace, settings, archive: Path) -> None:
    with (archive / "manifest.csv").open() as handle:
        manifest = list(csv.DictReader(handle))
    files = [archive / row["file"] for row in manifest]
    posts: dict[str, list[dict]] = defaultdict(list)
    for row in manifest:
        posts[row["shortcode"]].append(row)
    total_bytes = sum(f.stat().st_size for f in files)
    token = secrets.token_hex(3)

    # The bound: raw PUTs and raw INSERTs of the same data with the same concurrency, measured
    # before and after the import, which is compared with their mean. Identical runs on this VM
    # differ by up to 20 %, so the faster of two bound runs (used until 2026-11-23) is biased
    # against the import's single run; the mean of the runs around it is not, and it also
    # cancels a steady drift. Each phase writes into a new bucket and database of its own,
    # removed after it (untimed), so none starts with the previous one's objects in the S3 server.
    rows = load_rows(archive, posts)
    put_runs, insert_runs = [], []

    def measure_bound(run: int) -> None:
        with scratch_services(settings, f"bench-{token}-bound{run}") as (store, engine):
            put_runs.append(measure_put(store, files, args.workers, prefix="bound"))
            insert_runs.append(measure_insert(engine, rows, args.workers))
        print(
            f"bound run {run}: PUT {len(files) / put_runs[-1]:.0f} img/s, "
            f"INSERT {len(files) / insert_runs[-1]:.0f} img/s",
            flush=True,
        )

    measure_bound(1)
    with scratch_services(settings, f"bench-{token}-import") as (store, engine):
        started = time.perf_counter()
        summary = import_archive(archive, engine=engine, store=store, workers=args.workers)
        import_s = time.perf_counter() - started
        assert summary.images_new == len(files), (summary, len(files))
        assert summary.quarantined == 0
    print(f"import: {len(files) / import_s:.0f} img/s", flush=True)
    measure_bound(2)
    put_s, insert_s = statistics.mean(put_runs), statistics.mean(insert_runs)

    bound_rate = len(files) / (put_s + insert_s)
    faster_bound_rate = len(files) / (min(put_runs) + min(insert_runs))
    import_rate = len(files) / import_s
    result = {
        **result_header("archive_import"),
        "data": {
            "images": len(files),
            "posts": len(posts),
            "bytes": total_bytes,
            "image_size": args.image_size or "native (60x80)",
            "source": str(settings.dataset_dir),
            "seed": 7,
        },
        "workers": args.workers,
        "bound": {
            "estimate": "mean of the runs before and after the import",
            "put_seconds": round(put_s, 2),
            "insert_seconds": round(insert_s, 2),
            "put_images_per_s": round(len(files) / put_s, 1),
            "insert_images_per_s": round(len(files) / insert_s, 1),
            "images_per_s": round(bound_rate, 1),
            "faster_runs_images_per_s": round(faster_bound_rate, 1),
            "put_runs_seconds": [round(t, 2) for t in put_runs],
            "insert_runs_seconds": [round(t, 2) for t in insert_runs],
        },
        "import": {"seconds": round(import_s, 2), "images_per_s": round(import_rate, 1)},
        "ratio": round(import_rate / bound_rate, 3),
        "ratio_to_faster_bound_runs": round(import_rate / faster_bound_rate, 3),
        "target_ratio": 0.6,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    variant = (args.image_size or "native").replace("x", "x")
    path = args.out / f"archive_import-{variant}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
