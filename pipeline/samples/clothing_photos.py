"""Sample accounts from the real clothing photos: one business account per person who took them.

The photos (`images.csv` + `images/<image>.jpg`, taken by people with their phones) as
instaloader-format archives, so a person's photos stay together; each picture at its own size, its
garment as the `category` of `labels.csv` through the taxonomy's aliases, and no colour (the data
set has none).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from pipeline.labels.taxonomy import Taxonomy, load_taxonomy
from pipeline.samples.archive import (
    GRAPH_SIDECAR,
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
from pipeline.samples.listings import (
    ClothingPhoto,
    person_username,
    read_clothing_photos,
    require_clothing_photos,
    seeded_rank,
)

# The manifest keeps who took each photo and the garment it shows instead of a product id.
CLOTHING_MANIFEST_COLUMNS = (
    "account", "shortcode", "position", "media_id", "image", "sender_id", "label", "file"
)  # fmt: skip
# The labeller's own answers in images.csv's `label`: no garment, so never a category.
NON_GARMENTS = ("Not sure", "Other", "Skip")


def generate_clothing_accounts(
    photos_dir: Path,
    out_dir: Path,
    *,
    people: int | None = None,
    size: int | None = None,
    seed: int = 7,
    carousel_share: float = 0.0,
    taxonomy: Taxonomy | None = None,
) -> SampleSummary:
    """Write instaloader-format archives of the real clothing photos: one business account per
    person who took them (`sender_id`), so a person's photos never spread over two accounts.

    `people` persons (all when None) are picked by a seeded hash of their id, then `size` of their
    photos (all when None) by a seeded hash of the photo; the same arguments give byte-identical
    files. Pictures are copied as they are (their own size and aspect). Each post is one picture,
    or a carousel of one person's photos for `carousel_share` of them. `labels.csv` gives each
    picture its garment as a `category` (the taxonomy's aliases map the data set's words) and no
    colour; the labeller's `Not sure`, `Other` and `Skip` give no category, with a note saying so.
    """
    taxonomy = taxonomy or load_taxonomy()
    photos_dir, out_dir = Path(photos_dir), Path(out_dir)
    if people is not None and people < 0:
        raise ValueError(f"people must be a number of persons, 0 or more; got {people}")
    check_arguments(size=size, image_size=None, shares=(carousel_share, 0.0))
    listing, images_dir = require_clothing_photos(photos_dir)
    require_empty(out_dir)

    photos, skipped, missing = read_clothing_photos(listing, images_dir)
    senders = sorted(
        {photo.sender_id for photo in photos}, key=lambda s: seeded_rank(seed, f"sender:{s}")
    )
    chosen_senders = set(senders if people is None else senders[:people])
    chosen = sorted(
        (photo for photo in photos if photo.sender_id in chosen_senders),
        key=lambda photo: seeded_rank(seed, photo.image),
    )
    if size is not None:
        chosen = chosen[:size]

    products = [_photo_product(photo) for photo in chosen]
    by_account: dict[str, list[Product]] = defaultdict(list)
    for product in products:
        by_account[product.username].append(product)
    accounts = business_accounts(products, sorted(by_account), seed=seed)
    plans = plan_posts(by_account, seed=seed, shares=(carousel_share, 0.0))
    manifest = write_accounts(
        out_dir, accounts, plans, seed=seed, images_dir=images_dir, image_size=None
    )

    by_number = {photo.number: photo for photo in chosen}
    with (out_dir / MANIFEST).open("w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp, lineterminator="\n")
        writer.writerow(CLOTHING_MANIFEST_COLUMNS)
        for account, shortcode, position, media_id, number, file in manifest:
            photo = by_number[number]
            writer.writerow(
                [account, shortcode, position, media_id, photo.image, photo.sender_id,
                 photo.label, file]
            )  # fmt: skip

    left_out = non_garments = 0
    with (out_dir / LABELS).open("w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp, lineterminator="\n")
        writer.writerow(LABEL_COLUMNS)
        for _, shortcode, position, _, number, _ in manifest:
            photo = by_number[number]
            note = f"clothing-photos image {photo.image} by sender {photo.sender_id}"
            note += ", kids' clothes" if photo.kids else ""
            category = ""
            if photo.label in NON_GARMENTS:
                non_garments += 1
                note += f"; label '{photo.label}' is the labeller's answer, not a garment"
            elif taxonomy_accepts(taxonomy, "category", photo.label):
                category = photo.label
            else:
                left_out += 1
                note += f"; label '{photo.label}' not in taxonomy"
            writer.writerow([shortcode, position, "", category, "dataset", note])

    all_plans = [plan for account_plans in plans.values() for plan in account_plans]
    return SampleSummary(
        accounts=len(by_account),
        posts=len(all_plans),
        images=len(manifest),
        carousels=sum(plan.typename == GRAPH_SIDECAR for plan in all_plans),
        videos=0,
        out_dir=out_dir,
        skipped_rows=skipped,
        missing_images=missing,
        values_left_out=left_out,
        non_garments=non_garments,
    )


def _photo_product(photo: ClothingPhoto) -> Product:
    garment = "Clothes" if photo.label in NON_GARMENTS else photo.label
    return Product(
        product_id=photo.number,
        master_category="Apparel",
        article_type=garment,
        base_colour="",
        display_name=("Kids' " if photo.kids else "") + garment,
        brand=f"Wardrobe {photo.sender_id}",
        username=person_username(photo.sender_id),
        image_file=f"{photo.image}.jpg",
    )
