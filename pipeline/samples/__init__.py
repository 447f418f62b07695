"""Sample Instagram archives built from photo data sets, in instaloader's own format.

`generate_sample_accounts` turns the development data set of fashion product photos
(`styles.csv` + `images/<id>.jpg`) into one business account per brand; `generate_clothing_accounts`
turns the real clothing photos (`images.csv` + `images/<image>.jpg`) into one account per person who
took them. Both write the folder tree `instaloader` writes when it downloads profiles with its
default settings (`archive`), read their data set's listing (`listings`), and put next to the
account folders `manifest.csv` (which photo each picture shows) and `labels.csv` (its colour and
category as a label CSV, values the taxonomy does not know left empty).

    catalogue samples /tmp/sample-accounts --size 1000 --image-size 1080x1350
    catalogue samples /tmp/clothing-accounts --source clothing-photos --people 20
"""

from __future__ import annotations

from pipeline.samples.archive import (
    CAROUSEL_SIZES,
    LABEL_COLUMNS,
    LABELS,
    MANIFEST,
    MP4_PLACEHOLDER,
    WINDOW_END,
    WINDOW_SECONDS,
    SampleSummary,
    brand_username,
)
from pipeline.samples.clothing_photos import (
    CLOTHING_MANIFEST_COLUMNS,
    NON_GARMENTS,
    generate_clothing_accounts,
)
from pipeline.samples.listings import CLOTHING_COLUMNS, STYLES_COLUMNS
from pipeline.samples.product_photos import MANIFEST_COLUMNS, generate_sample_accounts

SOURCES = ("fashion-products", "clothing-photos")  # what `catalogue samples --source` writes from

__all__ = [
    "CAROUSEL_SIZES",
    "CLOTHING_COLUMNS",
    "CLOTHING_MANIFEST_COLUMNS",
    "LABELS",
    "LABEL_COLUMNS",
    "MANIFEST",
    "MANIFEST_COLUMNS",
    "MP4_PLACEHOLDER",
    "NON_GARMENTS",
    "SOURCES",
    "STYLES_COLUMNS",
    "WINDOW_END",
    "WINDOW_SECONDS",
    "SampleSummary",
    "brand_username",
    "generate_clothing_accounts",
    "generate_sample_accounts",
]
