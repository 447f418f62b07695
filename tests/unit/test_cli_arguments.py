"""The command line's arguments: one image-size order, and each sub-command with only its options."""

from __future__ import annotations

import pytest

from pipeline.cli import UsageError, build_parser
from pipeline.cli.args import image_size, pairs, shard, written_size


@pytest.mark.parametrize(
    ("written", "size"),
    [
        pytest.param("96x128", (128, 96), id="portrait"),
        pytest.param("1080x1350", (1350, 1080), id="instagram"),
        pytest.param(None, None, id="none"),
    ],
)
def test_an_image_size_is_width_by_height_and_means_height_width_inside(written, size):
    assert image_size(written) == size
    if size:
        assert written_size(size) == written


@pytest.mark.parametrize("written", ["128", "96x", "x128", "96x128x3", "0x128", "96 by 128"])
def test_an_image_size_that_is_not_width_by_height_says_how_to_write_it(written):
    with pytest.raises(UsageError, match="WIDTHxHEIGHT"):
        image_size(written)


def test_shards_and_pairs():
    assert shard(None) == (0, 1) and shard("3/4") == (3, 4)
    for wrong in ("4/4", "1", "a/b", "-1/4"):
        with pytest.raises(UsageError, match="I/N"):
            shard(wrong)
    assert pairs(["colour=family", "category=type"], "--level") == {
        "colour": "family",
        "category": "type",
    }
    with pytest.raises(UsageError, match="ATTRIBUTE=VALUE"):
        pairs(["colour"], "--level")


@pytest.mark.parametrize(
    "line",
    [
        "labels import labels.csv --strict --dry-run",
        "labels export --attribute colour --value Red --out x.csv",
        "labels rename --attribute colour --from Red --from Crimson --to Maroon",
        "labels move --attribute colour --to Blue --account shop_x --dry-run",
        "labels clear --attribute colour --shortcode A0x --since 2024-01-01",
        "labels undo 12 --dry-run",
        "labels jobs --limit 5",
        "labels history A0x00000 --position 1",
        "accounts add @Zara hm_official --allow-personal",
        "accounts list",
        "models list colour",
        "models promote colour-0004",
        "models rollback colour",
        "models register artefact/",
        "db upgrade",
        "db downgrade base",
        "db current",
        "buckets create",
        "taxonomy sync",
        "taxonomy show --attribute colour",
        "snapshot --attribute category --min-examples 1 --group-by account",
        "snapshot export --out shard.npz --network compact_80x60 --image-size 60x80",
        "snapshot --id 3 export --out shard.npz",
        "train --from-export shard.npz --out a --image-size 96x128 --epochs 1",
        "samples out --size 10 --image-size 1080x1350",
        "predict --shard 0/4 --batch-size 4",
    ],
)
def test_todays_command_lines_still_parse(line):
    args = build_parser().parse_args(line.split())
    assert callable(args.handler)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("labels clear --attribute colour --to Blue", id="clear-takes-no-to"),
        pytest.param("labels rename --attribute colour --from A --to B --account x", id="rename"),
        pytest.param("labels import f.csv --attribute colour", id="import-takes-no-attribute"),
        pytest.param("labels jobs --dry-run", id="jobs-change-nothing"),
        pytest.param("accounts list --allow-personal", id="list-takes-no-flag"),
        pytest.param("labels", id="which-action"),
        pytest.param("snapshot --network compact_80x60", id="network-only-to-export"),
        pytest.param("snapshot export", id="export-needs-out"),
    ],
)
def test_a_sub_command_refuses_options_it_does_not_use(line, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(line.split())
    assert exited.value.code == 2
    assert "usage: catalogue" in capsys.readouterr().err
