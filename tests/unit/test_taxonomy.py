"""The taxonomy file: the shipped default, spellings, training levels, and refused files."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from pipeline.labels.taxonomy import (
    TaxonomyError,
    UnknownValue,
    load_taxonomy,
    parse_taxonomy,
)


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy()


def test_default_has_colour_families_and_a_category_tree(taxonomy):
    colour, category = taxonomy.attribute("colour"), taxonomy.attribute("category")
    families = [v.name for v in colour.values.values() if v.depth == 1]
    assert 15 <= len(families) <= 25
    assert colour.values["Navy Blue"].path == ("Blue", "Navy Blue")
    assert colour.values["Off White"].path == ("White", "Off White")
    assert category.values["Tshirts"].path == ("Apparel", "Topwear", "Tshirts")
    groups = {v.name for v in category.values.values() if v.depth == 1}
    assert {"Apparel", "Footwear", "Bags", "Accessories", "Jewellery"} <= groups


@pytest.mark.parametrize(
    "attribute, spelling, value",
    [
        pytest.param("colour", "Gray", "Grey", id="alias"),
        pytest.param("colour", "navy  blue", "Navy Blue", id="case-and-spaces"),
        pytest.param("colour", "off-white", "Off White", id="hyphen"),
        pytest.param("category", "T-shirt", "Tshirts", id="tshirt"),
        pytest.param("category", "t shirts", "Tshirts", id="tshirts-spaced"),
    ],
)
def test_spellings_found_in_imports_map_to_canonical_values(taxonomy, attribute, spelling, value):
    assert taxonomy.attribute(attribute).canonical(spelling) == value


def test_an_unknown_spelling_is_named(taxonomy):
    with pytest.raises(UnknownValue, match="'Bleu' is not a colour"):
        taxonomy.attribute("colour").canonical("Bleu")


def test_training_level_maps_values_to_their_class(taxonomy):
    colour, category = taxonomy.attribute("colour"), taxonomy.attribute("category")
    assert colour.train_at == "family"
    assert colour.training_class("Navy Blue") == "Blue"
    assert colour.training_class("Blue") == "Blue"
    assert category.training_class("Tshirts") == "Tshirts"
    assert category.training_class("Topwear") == "Topwear"  # above the level: its own class
    at_type = parse_taxonomy(
        {"attributes": [{**taxonomy.document["attributes"][1], "train_at": "type"}]}
    ).attribute("category")
    assert at_type.training_class("Tshirts") == "Topwear"


def test_the_shared_dataset_labels_are_covered(taxonomy):
    styles = Path(
        os.environ.get("CATALOGUE_DATASET_DIR", Path(__file__).parents[3] / "shared/data/fashion-products")
    ) / "styles.csv"  # fmt: skip
    if not styles.exists():
        pytest.skip(f"the fashion product dataset is not at {styles.parent}")
    rows = list(csv.DictReader(styles.open()))
    unknown = {"colour": 0, "category": 0}
    for row in rows:
        for attribute, column in (("colour", "baseColour"), ("category", "articleType")):
            try:
                taxonomy.attribute(attribute).canonical(row[column])
            except UnknownValue:
                unknown[attribute] += 1
    # the dataset's NA colours, free gifts and sports balls are not fashion values
    assert unknown["colour"] <= len(rows) * 0.001
    assert unknown["category"] <= len(rows) * 0.005


@pytest.mark.parametrize(
    "document, message",
    [
        pytest.param({"attributes": []}, "no attributes", id="empty"),
        pytest.param(
            {"attributes": [{"name": "colour", "values": ["Red", "red"]}]},
            "defined twice", id="duplicate-value",
        ),
        pytest.param(
            {"attributes": [{"name": "colour", "values": ["Red"], "aliases": {"Rot": "Rouge"}}]},
            "'Rouge', which is not a value", id="alias-to-nothing",
        ),
        pytest.param(
            {"attributes": [{"name": "colour", "levels": ["colour"], "train_at": "family",
                             "values": ["Red"]}]},
            "train_at 'family' is not one of its levels", id="bad-level",
        ),
        pytest.param(
            {"attributes": [{"name": "Colour!", "values": ["Red"]}]},
            "attribute name 'Colour!'", id="bad-name",
        ),
        pytest.param(
            {"attributes": [{"name": "note", "values": ["Red"]}]},
            "attribute name 'note'", id="reserved-name",
        ),
        pytest.param(
            {"attributes": [{"name": "colour", "levels": ["colour"], "values": {"Red": ["Wine"]}}]},
            "deeper than its levels", id="too-deep",
        ),
    ],
)  # fmt: skip
def test_a_bad_taxonomy_is_refused_naming_the_entry(document, message):
    with pytest.raises(TaxonomyError, match=message.replace("(", r"\(")):
        parse_taxonomy(document, source="my.yaml")


def test_a_missing_or_broken_file_is_named(tmp_path):
    with pytest.raises(TaxonomyError, match=r"does not exist.*CATALOGUE_TAXONOMY_FILE"):
        load_taxonomy(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("attributes: [\n")
    with pytest.raises(TaxonomyError, match=r"broken\.yaml is not valid YAML"):
        load_taxonomy(broken)
