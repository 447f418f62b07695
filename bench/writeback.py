"""Predict's write-back at a catalogue's size against plain COPYs of the same rows (issue 26).

    export CATALOGUE_STATE_DIR=/tmp/rehearsal   # the rehearsal's stack (bench/rehearsal.py)
    .venv/bin/python bench/rehearsal.py fill --pictures 1000000
    .venv/bin/python bench/writeback.py --pictures 1000000 --batch 256 --rounds 40

It writes into `writeback_<pictures>`, a copy of the filled `rehearsal_<pictures>` (made once by
CREATE DATABASE ... TEMPLATE, so the rehearsal's own rows stay as filled), with `--spare` new
single-picture posts of the catalogue's accounts that no model has scored: what a collection adds
to a catalogue of that size. Each round writes three batches of new pictures' scores (colour and
category from the champions, as predict makes them), in turn:

- `write_scores`: the write-back as predict runs it (one transaction: the staged COPY, the kept
  and shown scores, the marketplace refresh);
- a plain COPY of the rows into a table of the same columns with no index (what the issue
  names: the rows' bytes into Postgres and nothing else);
- a plain COPY of the rows into `catalogue.model_predictions` itself, the table scores are kept
  in (its keys, index and foreign keys: the least that storing them costs).

`--compare-with REV` adds the write-back of git revision REV (its `pipeline/predict/writeback.py`)
to each round, against the database's current functions.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from sqlalchemy import create_engine, text  # noqa: E402

from bench.header import result_header  # noqa: E402


def copy_database(settings, pictures: int):
    """`writeback_<pictures>`, copied from the filled rehearsal database unless it exists."""
    from pipeline.db import get_engine
    from pipeline.db.migrate import upgrade

    source, name = f"rehearsal_{pictures}", f"writeback_{pictures}"
    admin = create_engine(
        settings.database_url.set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        have = set(
            connection.execute(
                text("SELECT datname FROM pg_database WHERE datname IN (:s, :n)"),
                {"s": source, "n": name},
            ).scalars()
        )
        if name not in have:
            if source not in have:
                raise SystemExit(
                    f"no database {source}: run `bench/rehearsal.py fill --pictures {pictures}`"
                )
            print(f"copying {source} to {name}", flush=True)
            connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
    admin.dispose()
    engine = get_engine(settings.database_url.set(database=name))
    upgrade(engine, role_names=settings.role_names)
    return engine


def add_spare_pictures(engine, spare: int) -> None:
    """`spare` new single-picture posts spread over the accounts, none scored (once)."""
    with engine.begin() as connection:
        have = connection.execute(
            text("SELECT count(*) FROM raw.posts WHERE shortcode LIKE 'WB%'")
        ).scalar_one()
        if have >= spare:
            return
        connection.execute(
            text(
                """
                INSERT INTO raw.posts (shortcode, media_id, account_id, taken_at, media_type,
                                       node, source)
                SELECT 'WB' || n, 900000000000 + n, a.id, now(), 'image', '{}', 'archive'
                FROM generate_series(:from, :to) AS n
                JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k,
                             count(*) OVER () AS accounts FROM raw.accounts) a
                  ON a.k = n % a.accounts
                """
            ),
            {"from": have + 1, "to": spare},
        )
        connection.execute(
            text(
                """
                INSERT INTO raw.images (media_id, post_id, position, object_key, sha256, width,
                                        height, bytes, content_type)
                SELECT p.media_id, p.id, 0, 'images/wb' || p.media_id || '.jpg',
                       md5(p.media_id::text) || md5('wb' || p.media_id), 60, 80, 1000,
                       'image/jpeg'
                FROM raw.posts p
                WHERE p.shortcode LIKE 'WB%'
                  AND NOT EXISTS (SELECT 1 FROM raw.images i WHERE i.post_id = p.id)
                """
            )
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE raw.posts, raw.images"))


def unscored(engine) -> list[int]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    """
                    SELECT i.id FROM raw.images i JOIN raw.posts p ON p.id = i.post_id
                    WHERE p.shortcode LIKE 'WB%' AND NOT EXISTS (
                        SELECT 1 FROM catalogue.model_predictions mp WHERE mp.image_id = i.id)
                    ORDER BY i.id
                    """
                )
            ).scalars()
        )


def load_writeback(rev: str):
    """`pipeline/predict/writeback.py` as it was at git revision `rev`."""
    source = subprocess.run(
        ["git", "show", f"{rev}:pipeline/predict/writeback.py"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "writeback_then.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("writeback_then", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["writeback_then"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pictures", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=256, help="pictures per batch")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--spare", type=int, default=60_000)
    parser.add_argument("--compare-with", default=None, metavar="REV")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from pipeline.config import Settings
    from pipeline.predict import writeback
    from pipeline.predict.writeback import Score, _csv, _score_rows

    settings = Settings.from_env().with_local_services()
    engine = copy_database(settings, args.pictures)
    add_spare_pictures(engine, args.spare)
    with engine.connect() as connection:
        champions = connection.execute(
            text(
                "SELECT v.id, array_agg(av.value ORDER BY av.value) FROM "
                "catalogue.model_versions v JOIN catalogue.attribute_values av USING (attribute) "
                "WHERE v.status = 'champion' GROUP BY v.id ORDER BY v.id"
            )
        ).all()
        retired = (
            connection.execute(  # per champion, an older version of its attribute
                text(
                    "SELECT (SELECT min(o.id) FROM catalogue.model_versions o WHERE o.attribute = "
                    "v.attribute AND o.status = 'retired') FROM catalogue.model_versions v "
                    "WHERE v.status = 'champion' ORDER BY v.id"
                )
            )
            .scalars()
            .all()
        )
        catalogued = connection.execute(text("SELECT count(*) FROM raw.images")).scalar_one()
        server = {
            name: connection.execute(text(f"SHOW {name}")).scalar_one()
            for name in ("server_version", "shared_buffers", "synchronous_commit")
        }
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE IF NOT EXISTS public.copy_bound (model_version_id integer, "
                "image_id bigint, value text, confidence real, margin real, top jsonb, "
                "needs_review boolean)"
            )
        )
    writers = {"write_scores": writeback.write_scores}
    if args.compare_with:
        writers[f"write_scores@{args.compare_with}"] = load_writeback(
            args.compare_with
        ).write_scores
    kinds = [*writers, "copy_unindexed", "copy_model_predictions"]
    ids = unscored(engine)
    needed = args.rounds * len(kinds) * args.batch
    if len(ids) < needed:
        raise SystemExit(f"{len(ids)} unscored pictures left, {needed} needed: raise --spare")

    def scores(batch: list[int], versions) -> list:
        rows = []
        for image_id in batch:
            for version_id, classes in versions:
                first, second = classes[image_id % len(classes)], classes[0]
                top = [{"value": first, "confidence": 0.71}, {"value": second, "confidence": 0.2}]
                rows.append(Score(version_id, image_id, first, 0.71, 0.51, top, image_id % 5 == 0))
        return rows

    def copy(table: str, rows: list) -> None:
        connection = engine.raw_connection()
        try:
            with connection.cursor() as cursor:
                cursor.copy_expert(f"COPY {table} (model_version_id, image_id, value, confidence, "
                                   "margin, top, needs_review) FROM STDIN WITH (FORMAT csv)",
                                   _csv(_score_rows(rows)))  # fmt: skip
            connection.commit()
        finally:
            connection.close()

    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    cursor = 0
    for round_ in range(args.rounds):
        order = kinds[round_ % len(kinds) :] + kinds[: round_ % len(kinds)]  # no kind always first
        for kind in order:
            batch = ids[cursor : cursor + args.batch]
            cursor += args.batch
            if kind == "copy_model_predictions":  # kept under the retired version: never shown
                rows = scores(batch, [(r, c) for r, (_, c) in zip(retired, champions, strict=True)])
            else:
                rows = scores(batch, champions)
            started = time.perf_counter()
            if kind in writers:
                writers[kind](engine=engine, scores=rows, unscorable=[])
            elif kind == "copy_unindexed":
                copy("public.copy_bound", rows)
            else:
                copy("catalogue.model_predictions", rows)
            seconds[kind].append(time.perf_counter() - started)

    rows_per_batch = args.batch * len(champions)
    result = {
        **result_header("writeback"),
        "catalogued_pictures": catalogued,
        "server": server,
        "batch_pictures": args.batch,
        "rows_per_batch": rows_per_batch,
        "rounds": args.rounds,
        "median_ms": {k: round(1000 * statistics.median(v), 2) for k, v in seconds.items()},
        "rows_per_s": {k: round(rows_per_batch * len(v) / sum(v)) for k, v in seconds.items()},
    }
    rate = result["rows_per_s"]
    result["ratio"] = {
        f"{writer} / {bound}": round(rate[writer] / rate[bound], 3)
        for writer in writers
        for bound in ("copy_unindexed", "copy_model_predictions")
    }
    print(json.dumps(result, indent=2))
    out = args.out or REPO / "bench" / "results" / f"writeback-{args.pictures}.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous[f"batch_{args.batch}"] = result
    out.write_text(json.dumps(previous, indent=2) + "\n")


if __name__ == "__main__":
    main()
