"""Sample accounts from the fashion product photos: one business account per brand.

The development data set (`styles.csv` + `images/<id>.jpg`) as instaloader-format archives, with
`manifest.csv` recording which product each picture shows and `labels.csv` giving each picture the
data set's colour and category in the label CSV format, ready for `catalogue labels import` (the
moderator labels a marketplace would start from). A value the taxonomy does not know (the data
set's "Free Gifts", "Basketballs"...) is left empty, with the note saying so, so the file imports
without refused rows.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from pipeline.labels.taxonomy import Taxonomy, load_taxonomy
from pipeline.samples.archive import (
    GRAPH_SIDECAR,
    GRAPH_VIDEO,
    LABEL_COLUMNS,
    LABELS,
    MANIFEST,
    Product,
    SampleSummary,
    business_accounts,
    check_arguments,
    plan_posts,
    require_empty,
    taxonomy_accepts,
    write_accounts,
)
from pipeline.samples.listings import read_catalogue, require_product_photos, seeded_rank

MANIFEST_COLUMNS = ("account", "shortcode", "position", "media_id", "product_id", "file")


def generate_sample_accounts(
    dataset_dir: Path,
    out_dir: Path,
    *,
    size: int | None = None,
    seed: int = 7,
    image_size: tuple[int, int] | None = None,
    carousel_share: float = 0.15,
    video_share: float = 0.02,
    taxonomy: Taxonomy | None = None,
) -> SampleSummary:
    """Write instaloader-format archives of one business account per brand under `out_dir`.

    `size` products (all when None) are picked by a seeded hash of their id; the same arguments
    give byte-identical files. `image_size` (width, height) re-encodes every picture to that size
    instead of copying the data set's JPEG bytes. `out_dir` must be absent or empty. `labels.csv`
    holds only values `taxonomy` (default: the shipped one) accepts.
    """
    taxonomy = taxonomy or load_taxonomy()
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    check_arguments(size=size, image_size=image_size, shares=(carousel_share, video_share))
    styles, images_dir = require_product_photos(dataset_dir)
    require_empty(out_dir)

    catalogue = read_catalogue(styles, images_dir)
    chosen = sorted(catalogue.products, key=lambda p: seeded_rank(seed, p.product_id))
    if size is not None:
        chosen = chosen[:size]
    by_account: dict[str, list[Product]] = defaultdict(list)
    for product in chosen:
        by_account[product.username].append(product)

    accounts = business_accounts(catalogue.products, sorted(by_account), seed=seed)
    plans = plan_posts(by_account, seed=seed, shares=(carousel_share, video_share))

    manifest = write_accounts(
        out_dir, accounts, plans, seed=seed, images_dir=images_dir, image_size=image_size
    )

    with (out_dir / MANIFEST).open("w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(manifest)

    products = {product.product_id: product for product in chosen}
    left_out = 0
    with (out_dir / LABELS).open("w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp, lineterminator="\n")
        writer.writerow(LABEL_COLUMNS)
        for _, shortcode, position, _, product_id, _ in manifest:
            product = products[product_id]
            note = f"styles.csv product {product_id}"
            cells = []
            for attribute, column, value in (
                ("colour", "baseColour", product.base_colour),
                ("category", "articleType", product.article_type),
            ):
                known = value not in ("NA", "") and taxonomy_accepts(taxonomy, attribute, value)
                left_out += value not in ("NA", "") and not known
                note += (
                    "" if known or value in ("NA", "") else f"; {column} '{value}' not in taxonomy"
                )
                cells.append(value if known else "")
            writer.writerow([shortcode, position, *cells, "dataset", note])

    all_plans = [plan for account_plans in plans.values() for plan in account_plans]
    return SampleSummary(
        accounts=len(by_account),
        posts=len(all_plans),
        images=len(manifest),
        carousels=sum(plan.typename == GRAPH_SIDECAR for plan in all_plans),
        videos=sum(plan.typename == GRAPH_VIDEO for plan in all_plans),
        out_dir=out_dir,
        skipped_rows=catalogue.skipped_rows,
        missing_images=catalogue.missing_images,
        values_left_out=left_out,
    )
