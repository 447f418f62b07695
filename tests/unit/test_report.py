"""`catalogue report`'s lines: the champions' figures come from the model registry's metrics, the
seed baselines beside them from the training benchmark's results file, none from the code."""

from __future__ import annotations

import json

import pytest

from pipeline.report import (
    TRAINING_RESULTS,
    CatalogueReport,
    SeedBaseline,
    report_lines,
    seed_baselines,
)


def _entry(network: str, attribute: str, level: str, classes: int, accuracy, **more) -> dict:
    return {"network": network, "attribute": attribute, "level": level, "classes": classes,
            "accuracy": accuracy, **more}  # fmt: skip


def test_the_baselines_are_the_seed_networks_entries_of_the_results_file(tmp_path):
    results = tmp_path / "training.json"
    entries = {
        "category_all50/compact_80x60": _entry("compact_80x60", "category", "article", 41, 0.81),
        "category_8/compact_80x60": _entry(
            "compact_80x60", "category", "article", 8, 0.86, seed_result=0.913
        ),
        "category_8/catalogue_net": _entry("catalogue_net", "category", "article", 8, 0.9),
        "colour_family/compact_80x60": _entry("compact_80x60", "colour", "family", 17, None),
    }
    results.write_text(json.dumps({"entries": entries}))

    assert seed_baselines(results) == {
        "category": [
            SeedBaseline("category", "article", 8, 0.86, study=0.913),
            SeedBaseline("category", "article", 41, 0.81),
        ]
    }


@pytest.mark.parametrize("content", [None, "not json", "[]", '{"no": "entries"}'])
def test_without_a_readable_results_file_there_are_no_baselines(tmp_path, content):
    results = tmp_path / "training.json"
    if content is not None:
        results.write_text(content)
    assert seed_baselines(results) == {}


def test_the_repositorys_benchmark_results_back_the_baselines_shown():
    baselines = seed_baselines(TRAINING_RESULTS)
    assert {"category", "colour"} <= set(baselines)


CHAMPION = {
    "version": "category-3", "attribute": "category", "architecture": "mobilenet_v2_050",
    "backend": "tensorflow", "snapshot_id": 4, "accuracy": 0.8, "macro_f1": 0.7,
    "top2_accuracy": 0.9, "test_images": 100, "classes": 8, "majority_accuracy": 0.3,
    "random_accuracy": 0.125, "automation": None,
}  # fmt: skip


def _report(**more) -> CatalogueReport:
    return CatalogueReport(
        accounts=1, posts=2, images=4, labelled=1, products=4, needs_review=1,
        sources={"category": {"moderator": 1, "model": 2, "none": 1}}, champions=[CHAMPION],
        **more,
    )  # fmt: skip


def test_a_champion_is_shown_with_its_metrics_and_its_attributes_baselines():
    baselines = {
        "category": [SeedBaseline("category", "article", 8, 0.8578, study=0.913),
                     SeedBaseline("category", "article", 41, 0.8124)],
        "colour": [SeedBaseline("colour", "family", 17, 0.6717)],
    }  # fmt: skip
    lines = report_lines(_report(seed_baselines=baselines))

    champion = lines.index(next(line for line in lines if line.startswith("champion category-3")))
    assert "test accuracy 0.800, macro-F1 0.700, top-2 0.900 on 100 test" in lines[champion]
    assert lines[champion + 1] == (
        "    next to the seed compact CNN in the training benchmark (the shared product photos): "
        "0.858 on 8 article-level classes (0.913 in its study), 0.812 on 41 article-level classes"
    )
    assert not any("0.672" in line for line in lines)  # no colour champion, no colour baseline


def test_without_baselines_the_report_says_where_they_would_come_from():
    """An installation without the benchmark's results (no checkout) says so, not nothing."""
    lines = report_lines(_report())
    assert lines[-2].startswith("champion category-3")
    assert lines[-1].startswith("no seed baseline to compare with: bench/results/training.json")


def test_the_similar_items_line_says_what_is_embedded_and_grouped():
    similar = {"version": "category-3", "embedded": 3, "groups": 4, "listings": 9, "accounts": 3}
    lines = report_lines(_report(similar=similar))
    assert (
        "similar items: 3 of 4 pictures embedded by category-3 (`catalogue similar`); 4 "
        "duplicate groups hold 9 listings from 3 accounts (`catalogue duplicates`)"
    ) in lines
    assert not any(line.startswith("similar items") for line in report_lines(_report()))
