"""The listings of the photo data sets a sample is written from, read row by row.

`styles.csv` of the fashion product photos (one product per row, its photo `images/<id>.jpg`) and
`images.csv` of the real clothing photos (one photo per row, `images/<image>.jpg`): malformed rows
are counted and skipped, photos without a file counted apart, a wrong header refused.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.samples.archive import Product, brand_username

STYLES_COLUMNS = (
    "id",
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "year",
    "usage",
    "productDisplayName",
)

# The real clothing photos (`images.csv` + `images/<image>.jpg`): who took each photo and what
# garment it shows.
CLOTHING_COLUMNS = ("image", "sender_id", "label", "kids")
# Clothing photos are numbered from PHOTO_NUMBER_BASE, far above the product ids (below 10**6):
# their media ids (POST_MEDIA_ID_BASE + number * 16) stay below CHILD_MEDIA_ID_BASE.
PHOTO_NUMBER_BASE = 10**15
PHOTO_NUMBER_SPAN = 2**48


@dataclass(frozen=True)
class Catalogue:
    products: list[Product]
    skipped_rows: int
    missing_images: int


@dataclass(frozen=True)
class ClothingPhoto:
    image: str  # the name in images/ without `.jpg`
    sender_id: str  # who took it
    label: str  # the garment, or one of the labeller's NON_GARMENTS
    kids: bool
    number: int  # the photo's media id is derived from it, as a product's from its id


def require_product_photos(dataset_dir: Path) -> tuple[Path, Path]:
    styles, images_dir = dataset_dir / "styles.csv", dataset_dir / "images"
    found = ((styles, styles.is_file()), (images_dir, images_dir.is_dir()))
    missing = [str(path) for path, present in found if not present]
    if missing:
        raise FileNotFoundError(
            f"the fashion product data set is missing at {dataset_dir} "
            f"(not found: {', '.join(missing)}): download Kaggle's "
            '"Fashion Product Images (Small)" and lay it out as images/<id>.jpg + styles.csv '
            "there, or point CATALOGUE_DATASET_DIR at the folder that holds it"
        )
    return styles, images_dir


def read_listing(fp, path: Path, columns: tuple[str, ...]):
    """A CSV reader past the data set's header, refused when the header is not `columns`."""
    reader = csv.reader(fp)
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != columns:
        raise ValueError(
            f"{path} does not start with the header {','.join(columns)}: "
            f"replace it with the data set's own {path.name}"
        )
    return reader


def read_catalogue(styles: Path, images_dir: Path) -> Catalogue:
    available = {name for name in os.listdir(images_dir) if name.endswith(".jpg")}
    products: list[Product] = []
    seen: set[int] = set()
    skipped = missing = 0
    with styles.open(newline="", encoding="utf-8") as fp:
        reader = read_listing(fp, styles, STYLES_COLUMNS)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error:
                skipped += 1
                continue
            if not row:
                continue
            product = _product(row)
            if product is None or product.product_id in seen:
                skipped += 1
                continue
            if not product.username:
                continue
            if f"{product.product_id}.jpg" not in available:
                missing += 1
                continue
            seen.add(product.product_id)
            products.append(product)
    return Catalogue(products=products, skipped_rows=skipped, missing_images=missing)


def _product(row: list[str]) -> Product | None:
    if len(row) != len(STYLES_COLUMNS):
        return None
    fields = dict(zip(STYLES_COLUMNS, (value.strip() for value in row), strict=True))
    try:
        product_id = int(fields["id"])
    except ValueError:
        return None
    if product_id < 0:
        return None
    name = fields["productDisplayName"]
    brand = name.split()[0] if name.split() else ""
    return Product(
        product_id=product_id,
        master_category=fields["masterCategory"],
        article_type=fields["articleType"],
        base_colour=fields["baseColour"],
        display_name=name,
        brand=brand,
        username=brand_username(brand),
        image_file=f"{product_id}.jpg",
    )


def seeded_rank(seed: int, item: int | str) -> bytes:
    """Where `item` comes in a sample drawn with `seed`: sorting by it picks the same rows on every
    run, and a slice of the whole keeps its order."""
    return hashlib.sha256(f"{seed}:{item}".encode()).digest()


def require_clothing_photos(photos_dir: Path) -> tuple[Path, Path]:
    listing, images_dir = photos_dir / "images.csv", photos_dir / "images"
    found = ((listing, listing.is_file()), (images_dir, images_dir.is_dir()))
    missing = [str(path) for path, present in found if not present]
    if missing:
        raise FileNotFoundError(
            f"the clothing photos are missing at {photos_dir} (not found: {', '.join(missing)}): "
            "lay them out as images/<image>.jpg + images.csv (image,sender_id,label,kids) there, "
            "or point CATALOGUE_CLOTHING_PHOTOS_DIR at the folder that holds them"
        )
    return listing, images_dir


def read_clothing_photos(listing: Path, images_dir: Path) -> tuple[list[ClothingPhoto], int, int]:
    """The photos of images.csv, the malformed rows skipped and the photos without a file."""
    available = {name for name in os.listdir(images_dir) if name.endswith(".jpg")}
    photos: list[ClothingPhoto] = []
    numbers: set[int] = set()
    usernames: dict[str, str] = {}
    skipped = missing = 0
    with listing.open(newline="", encoding="utf-8") as fp:
        reader = read_listing(fp, listing, CLOTHING_COLUMNS)
        seen: set[str] = set()
        for row in reader:
            if not row:
                continue
            cells = [cell.strip() for cell in row]
            if len(cells) != len(CLOTHING_COLUMNS) or cells[3].lower() not in ("true", "false"):
                skipped += 1
                continue
            image, sender_id, label, kids = cells
            if not (image and sender_id and label) or image in seen or "/" in image:
                skipped += 1
                continue
            seen.add(image)
            if f"{image}.jpg" not in available:
                missing += 1
                continue
            username = person_username(sender_id)
            if usernames.setdefault(username, sender_id) != sender_id:
                raise ValueError(
                    f"{listing}: senders '{usernames[username]}' and '{sender_id}' would share the "
                    f"account {username}: give them ids that differ in letters or digits"
                )
            number = _photo_number(image, numbers)
            numbers.add(number)
            photos.append(ClothingPhoto(image, sender_id, label, kids.lower() == "true", number))
    return photos, skipped, missing


def person_username(sender_id: str) -> str:
    return brand_username(f"wardrobe_{sender_id}")


def _photo_number(image: str, taken: set[int]) -> int:
    # Above every product id of the product photos, so the two samples never share a media id.
    digest = hashlib.sha256(f"photo:{image}".encode()).digest()
    number = PHOTO_NUMBER_BASE + int.from_bytes(digest[:8], "big") % PHOTO_NUMBER_SPAN
    while number in taken:
        number = PHOTO_NUMBER_BASE + (number - PHOTO_NUMBER_BASE + 1) % PHOTO_NUMBER_SPAN
    return number
