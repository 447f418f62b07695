"""Moderation at scale: a 20,000-row label CSV import and a merge job over 20,000 images.

    .venv/bin/python bench/labels.py --images 20000

Uses the configured Postgres (CATALOGUE_DATABASE_URL, or the local stack's) in a scratch database
removed afterwards. The colour and category of each row are the real labels of the shared fashion
product photos (cycled when more rows are asked for than the dataset has).

The bound, measured in the same run: the same number of label rows written by one plain
`INSERT ... SELECT` into `catalogue.labels` (no validation, no comparison with the current labels,
no marketplace refresh). Each figure is reported as seconds and as a ratio bound / figure.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from sqlalchemy import text  # noqa: E402

from bench.header import result_header  # noqa: E402
from bench.scratch import drop_database, scratch_database  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from pipeline.labels.history import Who  # noqa: E402
from pipeline.labels.jobs import run_job, undo_job  # noqa: E402
from pipeline.labels.label_csv import export_labels, import_labels  # noqa: E402
from pipeline.labels.review import review_queue  # noqa: E402

WHO = Who(name="bench")


def make_images(engine, count: int, accounts: int = 50) -> list[str]:
    """`count` single-image posts spread over `accounts` accounts; returns the shortcodes."""
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO raw.accounts (username, is_business)
                SELECT 'shop_' || n, true FROM generate_series(1, :accounts) AS n;
                """
            ),
            {"accounts": accounts},
        )
        connection.execute(
            text(
                """
                WITH posts AS (
                    INSERT INTO raw.posts (shortcode, media_id, account_id, taken_at, media_type,
                                           node, source)
                    SELECT 'S' || lpad(n::text, 7, '0'), n,
                           (SELECT id FROM raw.accounts WHERE username = 'shop_' || (1 + n % :a)),
                           timestamptz '2026-01-01' + n * interval '1 minute', 'image', '{}',
                           'archive'
                    FROM generate_series(1, :count) AS n
                    RETURNING id, media_id
                )
                INSERT INTO raw.images (media_id, post_id, position, object_key, sha256, width,
                                        height, bytes, content_type)
                SELECT media_id, id, 0, 'images/' || media_id || '.jpg', lpad(md5(media_id::text), 64, '0'),
                       60, 80, 1000, 'image/jpeg'
                FROM posts
                """
            ),
            {"count": count, "a": accounts},
        )
        return list(
            connection.execute(text("SELECT shortcode FROM raw.posts ORDER BY id")).scalars()
        )


def dataset_labels(dataset_dir: Path) -> list[tuple[str, str]]:
    with (dataset_dir / "styles.csv").open(encoding="utf-8") as handle:
        return [(row["baseColour"], row["articleType"]) for row in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    settings = load_settings()
    labels = dataset_labels(settings.dataset_dir)
    db, engine = scratch_database(settings)
    figures: dict[str, float] = {}

    def timed(name: str, action):
        started = time.perf_counter()
        result = action()
        figures[name] = round(time.perf_counter() - started, 3)
        print(f"{name}: {figures[name]:.2f}s", flush=True)
        return result

    try:
        shortcodes = timed("setup_images", lambda: make_images(engine, args.images))
        rows = io.StringIO()
        writer = csv.writer(rows)
        writer.writerow(["shortcode", "position", "colour", "category", "moderator", "note"])
        for n, shortcode in enumerate(shortcodes):
            colour, category = labels[n % len(labels)]
            writer.writerow([shortcode, 0, colour, category, "bench", ""])
        path = Path(f"/tmp/bench-labels-{db}.csv")
        path.write_text(rows.getvalue(), encoding="utf-8")

        report = timed("import", lambda: import_labels(path, engine=engine, who=WHO))
        refused = len(report.refused)
        print(f"  {report.written} labels written, {refused} rows refused", flush=True)
        again = timed("reimport_unchanged", lambda: import_labels(path, engine=engine, who=WHO))
        assert again.written == 0, again
        timed("export", lambda: export_labels(io.StringIO(), engine=engine))

        # the merge: every colour label of the 20,000 images set to one value by a move job,
        # then all of them renamed (merged) into its family
        timed(
            "move_all_to_navy_blue",
            lambda: run_job(engine=engine, kind="rename", attribute="colour", who=WHO,
                            from_values=sorted({c for c, _ in labels if c not in ("NA", "")}
                                               - {"Navy Blue"}), to="Navy Blue"),
        )  # fmt: skip
        dry = timed(
            "merge_dry_run",
            lambda: run_job(engine=engine, kind="rename", attribute="colour", who=WHO,
                            from_values=["Navy Blue"], to="Blue", dry_run=True),
        )  # fmt: skip
        merge = timed(
            "merge",
            lambda: run_job(engine=engine, kind="rename", attribute="colour", who=WHO,
                            from_values=["Navy Blue"], to="Blue"),
        )  # fmt: skip
        print(f"  merge changed {merge.images} labels (dry run said {dry.images})", flush=True)
        undo = timed("undo_merge", lambda: undo_job(engine=engine, job_id=merge.job_id, who=WHO))
        timed("review_queue_100", lambda: review_queue(engine=engine, limit=100))

        # the bound: the same number of rows in one plain INSERT ... SELECT
        def bound() -> None:
            with engine.begin() as connection:
                job = connection.execute(
                    text(
                        "INSERT INTO catalogue.label_jobs (kind, created_by) "
                        "VALUES ('label', 'bound') RETURNING id"
                    )
                ).scalar_one()
                connection.execute(text("ALTER TABLE catalogue.labels DISABLE TRIGGER USER"))
                # the history's chain indexes refuse a second first label: the bound writes
                # without them, as it did before they existed (rolled back below)
                connection.execute(
                    text(
                        "DROP INDEX catalogue.ix_labels_replaces_label_id, "
                        "catalogue.ix_labels_image_id_attribute_first"
                    )
                )
                connection.execute(
                    text(
                        "INSERT INTO catalogue.labels (image_id, attribute, value, source, "
                        "moderator, created_by, job_id) SELECT i.id, v.attribute, v.value, "
                        "'import', 'bound', 'bound', :job FROM raw.images i, (VALUES "
                        "('colour', 'Black'), ('category', 'Tshirts')) AS v(attribute, value)"
                    ),
                    {"job": job},
                )
                connection.rollback()

        timed("bound_plain_insert", bound)
        with engine.connect() as connection:
            label_rows = connection.execute(text("SELECT count(*) FROM catalogue.labels")).scalar()
            products = connection.execute(
                text("SELECT count(*) FROM marketplace.products WHERE colour_source = 'moderator'")
            ).scalar()
    finally:
        drop_database(settings, db)

    bound_s = figures["bound_plain_insert"]
    bound_rate = 2 * args.images / bound_s  # label rows per second
    written = {"import": report.written, "merge": merge.images, "undo_merge": undo.images}
    result = {
        **result_header("labels"),
        "data": {
            "images": args.images,
            "csv_rows": args.images,
            "labels_per_row": 2,
            "rows_refused": refused,
            "label_rows_at_end": label_rows,
            "marketplace_rows_by_moderator": products,
            "merge_labels_changed": merge.images,
            "undo_labels_changed": undo.images,
            "source": str(settings.dataset_dir),
        },
        "seconds": figures,
        "import_rows_per_s": round(args.images / figures["import"]),
        "bound": {
            "what": "one INSERT ... SELECT of 2 label rows per image, no triggers",
            "seconds": bound_s,
            "label_rows_per_s": round(bound_rate),
        },
        "label_rows_per_s": {name: round(n / figures[name]) for name, n in written.items()},
        "ratio_to_bound": {
            name: round(n / figures[name] / bound_rate, 3) for name, n in written.items()
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "labels.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
