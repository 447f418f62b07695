"""The moderators' workbench: the review grid of 200 pictures, and a bulk relabel of 10,000.

    .venv/bin/python bench/web.py --pictures 200 --relabel 10000

Uses the configured Postgres and S3 server (or the local stack's) in a scratch database and
bucket removed afterwards. `--pictures` sample photos at 1080x1350 are imported into the
scratch bucket, each with a model's category prediction (the true one), so the grid shows what
a moderator sees; `--relabel` more pictures (rows only, no objects) are one account's, which the
bulk relabel moves by filter.

Grid: the answer time of `GET /review?limit=200` in process (FastAPI's test client: the
server's work, no network), p50/p95 over `--repeat` requests, against the same page's database
reads alone (`review_page`, the latest labels, the taxonomy); the bytes a browser loads (the page,
its script and style, 200 thumbnails), and the thumbnails' time cold (made from the 1080x1350
originals) and warm (kept). Targets: page under 300 ms p95, under 2 MB with thumbnails.

Bulk relabel: `POST /relabel` (a move by account, dry run then applied) and its undo, against
the command line's job on the same rows (`catalogue labels move`, a process of its own, and the
same `run_job` in process).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from sqlalchemy import text  # noqa: E402

from bench.header import result_header  # noqa: E402
from bench.scratch import drop_database, empty_bucket, scratch_bucket, scratch_database  # noqa: E402
from pipeline.config import load_settings  # noqa: E402

PASSWORD = "bench-password-1"


def import_pictures(settings, engine, store, count: int) -> int:
    from pipeline.collect.archive import import_archive
    from pipeline.samples import generate_sample_accounts

    with tempfile.TemporaryDirectory(prefix="bench-web-") as folder:
        archive = Path(folder)
        generate_sample_accounts(settings.dataset_dir, archive, size=count, seed=11,
                                 carousel_share=0, video_share=0)  # fmt: skip
        import_archive(archive, engine=engine, store=store, workers=4)
        with (archive / "labels.csv").open(encoding="utf-8") as handle:
            truth = {r["shortcode"]: r["category"] for r in csv.DictReader(handle) if r["category"]}
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO catalogue.predictions (image_id, attribute, value, confidence, margin,
                                                   top, needs_review, model_version)
                SELECT i.id, 'category', t.value, c.confidence, c.confidence - 0.2,
                       jsonb_build_array(jsonb_build_object('value', t.value,
                                                            'confidence', c.confidence)),
                       c.confidence < 0.6, 'bench-1'
                FROM raw.post_images i
                JOIN unnest(CAST(:codes AS text[]), CAST(:values AS text[])) AS t(code, value)
                  ON t.code = i.shortcode,
                LATERAL (SELECT 0.3 + (i.id % 60) / 100.0 AS confidence) c
                """
            ),
            {"codes": list(truth), "values": list(truth.values())},
        )
        connection.execute(
            text("SELECT catalogue.refresh_products(ARRAY(SELECT id FROM raw.images))")
        )
        return connection.execute(text("SELECT count(*) FROM raw.images")).scalar_one()


def add_rows(engine, count: int) -> None:
    """`count` single-picture posts of account `bulk_shop` (rows only: the relabel reads none)."""
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO raw.accounts (username, is_business) VALUES ('bulk_shop', true)")
        )
        connection.execute(
            text(
                """
                WITH posts AS (
                    INSERT INTO raw.posts (shortcode, media_id, account_id, taken_at, media_type,
                                           node, source)
                    SELECT 'B' || lpad(n::text, 7, '0'), 9000000000 + n,
                           (SELECT id FROM raw.accounts WHERE username = 'bulk_shop'),
                           timestamptz '2025-01-01' + n * interval '1 minute', 'image', '{}',
                           'archive'
                    FROM generate_series(1, :count) AS n
                    RETURNING id, media_id
                )
                INSERT INTO raw.images (media_id, post_id, position, object_key, sha256, width,
                                        height, bytes, content_type)
                SELECT media_id, id, 0, 'images/' || media_id || '.jpg',
                       lpad(md5(media_id::text), 64, '0'), 1080, 1350, 250000, 'image/jpeg'
                FROM posts
                """
            ),
            {"count": count},
        )


def signed_in(app):
    from fastapi.testclient import TestClient

    client = TestClient(app)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"name": "bench", "password": PASSWORD, "csrf_token": token})
    client.headers["X-CSRF-Token"] = client.get("/api/session").json()["csrf_token"]
    return client


def seconds(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
    }


def bench_grid(app, engine, pictures: int, repeat: int) -> dict:
    from pipeline.labels.review import review_page
    from pipeline.web import pages

    client = signed_in(app)
    url = f"/review?attribute=category&limit={pictures}"
    html = client.get(url)
    ids = re.findall(r'data-image-id="(\d+)"', html.text)
    assets = sum(len(client.get(p).content) for p in ("/static/workbench.js",
                                                     "/static/workbench.css"))  # fmt: skip
    cold, thumbs = seconds(lambda: [client.get(f"/thumbs/{i}.jpg").content for i in ids])
    warm, _ = seconds(lambda: [client.get(f"/thumbs/{i}.jpg").content for i in ids])
    page_times = [seconds(lambda: client.get(url))[0] for _ in range(repeat)]

    def queries() -> None:
        taxonomy = pages.taxonomy(engine)
        found = review_page(engine=engine, limit=pictures, attribute="category", taxonomy=taxonomy)
        pages.latest_labels(engine, [item.image_id for item in found.items])
        pages.taxonomy_choices(taxonomy)

    query_times = [seconds(queries)[0] for _ in range(repeat)]
    thumb_bytes = sum(len(t) for t in thumbs)
    return {
        "pictures": len(ids),
        "page": percentiles(page_times),
        "queries_alone": percentiles(query_times),
        "bytes": {
            "html": len(html.content),
            "script_and_style": assets,
            "thumbnails": thumb_bytes,
            "total": len(html.content) + assets + thumb_bytes,
        },
        "thumbnails_cold_s": round(cold, 2),
        "thumbnail_cold_ms_each": round(1000 * cold / max(1, len(ids)), 1),
        "thumbnails_warm_s": round(warm, 3),
    }


def bench_relabel(app, engine, settings, database_url: str, count: int) -> dict:
    from pipeline.labels.history import Who
    from pipeline.labels.jobs import Selection, run_job, undo_job

    client = signed_in(app)
    form = {"kind": "move", "attribute": "category", "to": "Tops", "account": "bulk_shop"}
    dry, answer = seconds(lambda: client.post("/relabel", data=form))
    assert f"{count} labels would change" in answer.text, answer.text[-500:]
    applied, answer = seconds(lambda: client.post("/relabel", data={**form, "confirm": "1"}))
    job = int(re.search(r"Job (\d+): (\d+) labels changed", answer.text).group(1))
    undone, _ = seconds(lambda: client.post(f"/jobs/{job}/undo"))

    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGUE_")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("CATALOGUE_")})
    env.update(CATALOGUE_DATABASE_URL=database_url, CATALOGUE_MODERATOR="bench",
               CATALOGUE_AIRFLOW_URL="http://127.0.0.1:9")  # fmt: skip
    command = [sys.executable, "-m", "pipeline.cli", "labels", "move", "--attribute", "category",
               "--to", "Tops", "--account", "bulk_shop"]  # fmt: skip
    cli, done = seconds(lambda: subprocess.run(command, env=env, capture_output=True, text=True))
    assert f"changed {count} labels" in done.stdout, done.stdout + done.stderr
    cli_job = int(re.search(r"job (\d+);", done.stdout).group(1))
    undo_job(engine=engine, job_id=cli_job, who=Who(name="bench"))
    started, _ = seconds(lambda: subprocess.run([sys.executable, "-m", "pipeline.cli", "--help"],
                                                env=env, capture_output=True))  # fmt: skip
    in_process, outcome = seconds(lambda: run_job(
        engine=engine, kind="move", attribute="category", who=Who(name="bench"), to="Tops",
        selection=Selection(account="bulk_shop")))  # fmt: skip
    assert outcome.images == count
    return {
        "pictures": count,
        "web_dry_run_s": round(dry, 2),
        "web_apply_s": round(applied, 2),
        "web_undo_s": round(undone, 2),
        "cli_command_s": round(cli, 2),
        "cli_start_up_s": round(started, 2),
        "run_job_in_process_s": round(in_process, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pictures", type=int, default=200)
    parser.add_argument("--relabel", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "web.json")
    args = parser.parse_args()
    from pipeline.web import users
    from pipeline.web.app import create_app

    settings = load_settings()
    db, engine = scratch_database(settings)
    store = scratch_bucket(settings, f"bench-web-{db.rsplit('_', 1)[-1]}")
    try:
        imported = import_pictures(settings, engine, store, args.pictures)
        print(f"imported {imported} pictures", flush=True)
        add_rows(engine, args.relabel)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))  # a catalogue that grew has statistics
        users.add_person(engine=engine, name="bench", role="moderator", password=PASSWORD)
        app = create_app(settings, engine=engine, store=store)
        grid = bench_grid(app, engine, args.pictures, args.repeat)
        print(json.dumps(grid, indent=2), flush=True)
        url = settings.database_url.set(database=db).render_as_string(hide_password=False)
        relabel = bench_relabel(app, engine, settings, url, args.relabel)
        print(json.dumps(relabel, indent=2), flush=True)
    finally:
        drop_database(settings, db)
        empty_bucket(store)
    result = {**result_header("web"), "grid": grid, "bulk_relabel": relabel}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
