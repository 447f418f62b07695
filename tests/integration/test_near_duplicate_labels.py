"""Moderation with near-duplicates against the real Postgres: the review tier for a picture whose
near-duplicate was labelled otherwise, and the relabel job over a picture's duplicate group
(`labels move --like`), with its dry run, undo and refusals.

The groups are written straight into `catalogue.image_duplicates`, as the grouping step leaves
them (group id: the smallest image id of the group); finding them is tested with the grouping.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import text

from pipeline.labels.history import Who
from pipeline.labels.jobs import JobError, Selection, run_job, undo_job
from pipeline.labels.label_csv import import_labels
from pipeline.labels.review import NEAR_DUPLICATE, review_queue, write_review_csv
from tests.catalogue_rows import add_prediction, two_shops
from tests.cli import catalogue

ALICE = Who(name="alice")
BOB = Who(name="bob")


@pytest.fixture
def shop(migrated):
    """`shop_a` with 6 posts, `shop_b` with 3 carousels of 2 pictures."""
    return two_shops(migrated)


def _group(engine, *image_ids: int) -> int:
    group = min(image_ids)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO catalogue.image_duplicates (image_id, group_id) "
                "SELECT unnest(CAST(:ids AS bigint[])), :group"
            ),
            {"ids": list(image_ids), "group": group},
        )
    return group


def _label(engine, tmp_path, rows: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("shortcode,position,colour\n" + rows, encoding="utf-8")
    report = import_labels(path, engine=engine, who=ALICE)
    assert report.refused == []


def _current(engine) -> dict[int, str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT image_id, value FROM catalogue.current_labels WHERE attribute = 'colour'")
        ).all()
    return {r.image_id: r.value for r in rows}


def _history(engine) -> list[tuple]:
    with engine.connect() as connection:
        return [
            tuple(r)
            for r in connection.execute(
                text(
                    "SELECT image_id, attribute, value, moderator, replaces_label_id "
                    "FROM catalogue.labels ORDER BY id"
                )
            )
        ]


def test_review_puts_first_the_pictures_a_near_duplicate_contradicts(
    migrated, shop, settings, tmp_path
):
    # group 1: two Red, one Blue; group 2: both Red; group 3: Navy Blue beside two predictions,
    # Blue (Navy Blue's family, the level the model is trained at) and a confident Green
    _label(
        migrated,
        tmp_path,
        "A0x00000,0,Red\nA0x00001,0,Red\nA0x00002,0,Blue\n"
        "A0x00003,0,Red\nA0x00004,0,Red\nA0x00005,0,Navy Blue\n",
    )
    add_prediction(migrated, shop.image("B0x00000", 1), "colour", [("Blue", 0.5), ("Red", 0.4)])
    add_prediction(migrated, shop.image("B0x00001"), "colour", [("Green", 0.95), ("Red", 0.01)])
    add_prediction(migrated, shop.image("B0x00002"), "colour", [("Black", 0.4), ("Red", 0.35)])
    first = _group(migrated, *(shop.image(f"A0x{n:05d}") for n in range(3)))
    _group(migrated, shop.image("A0x00003"), shop.image("A0x00004"))
    third = _group(migrated, shop.image("A0x00005"), shop.image("B0x00000", 1),
                   shop.image("B0x00001"))  # fmt: skip

    queue = review_queue(engine=migrated, limit=50, attribute="colour")
    order = [(item.shortcode, item.position) for item in queue]
    tiers = {(item.shortcode, item.position): item.tier for item in queue}
    # the one that disagrees with all its group's labels first, then the two that one contradicts
    assert order[:4] == [("A0x00002", 0), ("B0x00001", 0), ("A0x00001", 0), ("A0x00000", 0)]
    assert [item.tier for item in queue[:4]] == [NEAR_DUPLICATE] * 4
    assert first < third
    # agreeing groups are not in the tier: labels that agree are not in the queue at all
    assert ("A0x00003", 0) not in tiers and ("A0x00004", 0) not in tiers
    assert ("A0x00005", 0) not in tiers  # its duplicates' predictions are not labels
    assert tiers[("B0x00000", 1)] == 1  # Blue agrees with Navy Blue at the trained level
    assert NEAR_DUPLICATE not in [item.tier for item in queue[4:]]

    odd_one, predicted, *_ = queue
    assert odd_one.reason == (
        "a near-duplicate was labelled differently: colour Red on A0x00000/0, "
        "colour Red on A0x00001/0"
    )
    assert predicted.reason == (
        "a near-duplicate was labelled differently: colour Navy Blue on A0x00005/0"
    )
    assert queue[2].near_duplicates == {
        "colour": [{"shortcode": "A0x00002", "position": 0, "value": "Blue"}]
    }

    out = io.StringIO()
    write_review_csv(out, queue[:2], engine=migrated, store=None)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[1]["reason"] == predicted.reason and rows[1]["colour_suggestions"] == (
        "Green 0.95; Red 0.01"
    )
    # another attribute's queue does not see colour's disagreement
    categories = review_queue(engine=migrated, limit=50, attribute="category")
    assert NEAR_DUPLICATE not in {item.tier for item in categories}

    # once the group agrees, it leaves the tier
    run_job(engine=migrated, kind="move", attribute="colour", to="Red", who=BOB,
            selection=Selection(like="A0x00000"))  # fmt: skip
    queue = review_queue(engine=migrated, limit=50, attribute="colour")
    assert [(i.shortcode, i.tier) for i in queue if i.tier == NEAR_DUPLICATE] == [
        ("B0x00001", NEAR_DUPLICATE)
    ]


def test_move_like_dry_run_then_run_then_undo_restores_exactly(migrated, shop, tmp_path):
    _label(migrated, tmp_path, "A0x00000,0,Red\nA0x00001,0,Blue\nA0x00002,0,Red\n")
    group = [shop.image("A0x00000"), shop.image("A0x00001"), shop.image("B0x00000", 1)]
    _group(migrated, *group)
    _group(migrated, shop.image("A0x00002"), shop.image("A0x00003"))
    before, history_before = _current(migrated), _history(migrated)

    dry = run_job(engine=migrated, kind="move", attribute="colour", to="Green", who=BOB,
                  selection=Selection(like="A0x00000"), dry_run=True)  # fmt: skip
    assert dry.dry_run and dry.images == 3 and dry.job_id is None
    assert {(s["shortcode"], s["position"], s["before"]) for s in dry.sample} == {
        ("A0x00000", 0, "Red"),
        ("A0x00001", 0, "Blue"),
        ("B0x00000", 1, None),
    }
    assert _history(migrated) == history_before
    # any picture of the group names it; the other filters narrow it as everywhere
    by_slide = run_job(engine=migrated, kind="move", attribute="colour", to="Green", who=BOB,
                       selection=Selection(like="B0x00000/1"), dry_run=True)  # fmt: skip
    assert by_slide.images == 3
    narrowed = run_job(engine=migrated, kind="move", attribute="colour", to="Green", who=BOB,
                       selection=Selection(like="A0x00001", value=["Red"]), dry_run=True)  # fmt: skip
    assert narrowed.images == 1

    job = run_job(engine=migrated, kind="move", attribute="colour", to="Green", who=BOB,
                  selection=Selection(like="A0x00000"))  # fmt: skip
    assert job.images == 3
    current = _current(migrated)
    assert {i: current.get(i) for i in group} == dict.fromkeys(group, "Green")
    assert {i: v for i, v in current.items() if i not in group} == {shop.image("A0x00002"): "Red"}
    with migrated.connect() as connection:
        arguments = connection.execute(
            text("SELECT arguments FROM catalogue.label_jobs WHERE id = :j"), {"j": job.job_id}
        ).scalar_one()
    if isinstance(arguments, str):
        arguments = json.loads(arguments)
    assert arguments["filter"]["like"] == "A0x00000"
    assert arguments["filter"]["duplicate_group"] == min(group)

    undo = undo_job(engine=migrated, job_id=job.job_id, who=ALICE)
    assert (undo.images, undo.skipped) == (3, 0)
    assert _current(migrated) == before
    history = _history(migrated)
    assert history[: len(history_before)] == history_before  # history only grows
    assert len(history) == len(history_before) + 6
    # each picture's label and credited moderator as they were; no label where there was none
    given = {r[0]: (r[2], r[3]) for r in history_before if r[0] in group}
    restored = {r[0]: (r[2], r[3]) for r in history[-3:]}
    assert {i: restored[i] for i in given} == given
    assert restored[group[2]][0] is None and group[2] not in given


def test_clear_like_clears_the_group(migrated, shop, tmp_path):
    _label(migrated, tmp_path, "A0x00000,0,Red\nA0x00001,0,Blue\nA0x00002,0,Red\n")
    _group(migrated, shop.image("A0x00000"), shop.image("A0x00001"))
    job = run_job(engine=migrated, kind="clear", attribute="colour", who=BOB,
                  selection=Selection(like="A0x00001"))  # fmt: skip
    assert job.images == 2 and _current(migrated) == {shop.image("A0x00002"): "Red"}


@pytest.mark.parametrize(
    ("like", "message"),
    [
        pytest.param("NOPE", "like: unknown shortcode 'NOPE' (no collected post)", id="unknown"),
        pytest.param(
            "A0x00000/7",
            "like: post 'A0x00000' has no picture at position 7 (positions 0)",
            id="no-such-position",
        ),
        pytest.param(
            "B0x00000",
            "like: post 'B0x00000' has 2 pictures (positions 0, 1): name one as B0x00000/POSITION",
            id="carousel-without-position",
        ),
        pytest.param(
            "A0x00003",
            "no near-duplicates known for A0x00003/0: groups are found by the predict run "
            "(catalogue duplicates --refresh)",
            id="in-no-group",
        ),
        pytest.param("A0x00000/x", "like 'A0x00000/x' is not a picture", id="not-a-picture"),
    ],
)
def test_move_like_refuses_a_picture_it_cannot_use(migrated, shop, like, message):
    _group(migrated, shop.image("A0x00000"), shop.image("A0x00001"))
    with pytest.raises(JobError) as refused:
        run_job(engine=migrated, kind="move", attribute="colour", to="Red", who=BOB,
                selection=Selection(like=like), dry_run=True)  # fmt: skip
    assert str(refused.value).startswith(message)


def test_cli_move_like_dry_run_run_undo_and_refusals(migrated, shop, services, tmp_path):
    env = services.env(CATALOGUE_MODERATOR="erin")
    _label(migrated, tmp_path, "A0x00000,0,Red\nA0x00001,0,Blue\n")
    _group(migrated, shop.image("A0x00000"), shop.image("A0x00001"), shop.image("B0x00000", 1))
    before, history_before = _current(migrated), _history(migrated)
    move = ("labels", "move", "--attribute", "colour", "--to", "Green")

    dry = catalogue(env, *move, "--like", "A0x00001", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "move: would change 3 labels" in dry.stdout and "A0x00001/0: Blue -> Green" in dry.stdout
    assert _history(migrated) == history_before

    moved = catalogue(env, *move, "--like", "B0x00000/1")
    assert moved.returncode == 0 and "move: changed 3 labels" in moved.stdout, moved.stderr
    assert set(_current(migrated).values()) == {"Green"} and len(_current(migrated)) == 3
    job = moved.stdout.split("(job ")[1].split(";")[0]
    undone = catalogue(env, "labels", "undo", job)
    assert undone.returncode == 0 and "undo: changed 3 labels" in undone.stdout, undone.stderr
    assert _current(migrated) == before

    for like, message in [
        ("NOPE", "unknown shortcode 'NOPE'"),
        ("A0x00000/3", "has no picture at position 3"),
        ("A0x00004", "no near-duplicates known for A0x00004/0: groups are found by the predict "
                     "run (catalogue duplicates --refresh)"),
    ]:  # fmt: skip
        refused = catalogue(env, *move, "--like", like)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 1 and len(lines) == 1, refused.stderr
        assert lines[0].startswith("catalogue: ") and message in lines[0]
    assert _current(migrated) == before

    review = catalogue(env, "review", "--attribute", "colour", "--limit", "3")
    assert review.returncode == 0, review.stderr
    assert "a near-duplicate was labelled differently: colour Blue on A0x00001/0" in review.stdout
