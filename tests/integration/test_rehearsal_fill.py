"""The million-picture rehearsal's generator (bench/rehearsal.py) at a small size: the rows it
writes are ones the product's own code reads as it reads a collected, labelled, scored catalogue."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from bench.rehearsal import fill
from pipeline.db import get_engine
from pipeline.db.migrate import upgrade
from pipeline.labels.history import Who
from pipeline.labels.jobs import Selection, run_job, undo_job
from pipeline.labels.review import review_page
from pipeline.predict import pictures
from pipeline.report import catalogue_report

PICTURES = 2_000


@pytest.fixture
def rehearsal(fresh_database, settings):
    engine = get_engine(fresh_database)
    upgrade(engine, role_names=settings.role_names)
    counts = fill(engine, pictures=PICTURES, seed=3)
    yield engine, counts
    engine.dispose()


def test_generated_catalogue_reads_like_a_real_one(rehearsal):
    engine, counts = rehearsal
    assert counts["raw.images"] == PICTURES
    assert counts["raw.accounts"] == PICTURES // 100
    assert 0.27 < counts["labelled_pictures"] / PICTURES < 0.33

    report = catalogue_report(engine=engine)
    assert report.images == counts["raw.live_images"]
    assert report.labelled == counts["labelled_pictures"]
    assert report.products == counts["marketplace.products"]
    assert {c["attribute"] for c in report.champions} == {"colour", "category"}
    sources = report.sources["colour"]
    assert sources["moderator"] > 0 and sources["model"] > 0

    page = review_page(engine=engine, limit=20)
    assert len(page.items) == 20
    assert page.total > PICTURES // 2  # every unlabelled picture is in the queue
    assert [i.tier for i in page.items] == sorted(i.tier for i in page.items)
    # the first page is ranked among candidates; a page longer than the queue ranks every picture
    everything = review_page(engine=engine, limit=PICTURES * 2)
    assert everything.total == page.total == len(everything.items)
    first = [(i.image_id, i.tier, i.score) for i in everything.items[:20]]
    assert [(i.image_id, i.tier, i.score) for i in page.items] == first
    for attribute in ("colour", "category", None):
        every = review_page(engine=engine, limit=PICTURES * 2, attribute=attribute)
        assert every.total == len(every.items)
        for limit in (3, 20):  # 3: tier 0's first pictures are found in group order
            one = review_page(engine=engine, limit=limit, attribute=attribute)
            assert [(i.image_id, i.tier) for i in one.items] == [
                (i.image_id, i.tier) for i in every.items[:limit]
            ]
            assert one.total == every.total

    with engine.connect() as connection:
        kinds = connection.execute(text("SELECT DISTINCT kind FROM catalogue.label_jobs")).scalars()
        kinds = set(kinds)
        forked = connection.execute(
            text(
                "SELECT count(*) FROM catalogue.labels l WHERE l.replaces_label_id IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM catalogue.labels o WHERE o.id = "
                "l.replaces_label_id AND o.image_id = l.image_id AND o.attribute = l.attribute)"
            )
        ).scalar_one()
    assert {"import", "rename", "move", "clear", "undo"} <= kinds
    assert forked == 0


def test_a_relabel_job_and_its_undo_run_on_the_generated_history(rehearsal):
    engine, _ = rehearsal
    with engine.connect() as connection:
        account = connection.execute(
            text(
                "SELECT i.account FROM catalogue.current_labels l "
                "JOIN raw.live_images i ON i.id = l.image_id "
                "WHERE l.attribute = 'category' GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
            )
        ).scalar_one()
    moved = run_job(
        engine=engine, kind="move", attribute="category", to="Tshirts",
        selection=Selection(account=account), who=Who("rehearsal"),
    )  # fmt: skip
    assert moved.images > 0
    undone = undo_job(engine=engine, job_id=moved.job_id, who=Who("rehearsal"))
    assert undone.images == moved.images and undone.skipped == 0


def test_predict_reads_its_work_newest_first_window_by_window(rehearsal, monkeypatch):
    engine, _ = rehearsal
    monkeypatch.setattr(pictures, "WINDOW", 50)  # 40 windows over the 2,000 pictures
    with engine.connect() as connection:
        versions = connection.execute(
            text("SELECT id FROM catalogue.model_versions WHERE status = 'champion' ORDER BY id")
        ).scalars().all()  # fmt: skip
    count = pictures.count_wanted(engine=engine, version_ids=versions, everything=False)
    assert 0 < count < PICTURES // 50  # the newest 1 %, less the undecodable ones

    pages = list(pictures.wanted_pages(engine=engine, version_ids=versions, everything=False,
                                       shard=0, shards=1, page=7))  # fmt: skip
    ids = [w.image_id for page in pages for w in page]
    assert len(ids) == count and ids == sorted(set(ids), reverse=True)
    assert all(len(page) == 7 for page in pages[:-1])
    assert all(set(w.version_ids) == set(versions) for page in pages for w in page)

    everything = [
        w.image_id
        for page in pictures.wanted_pages(engine=engine, version_ids=versions, everything=True,
                                          shard=1, shards=2, page=64, limit=300)
        for w in page
    ]  # fmt: skip
    assert len(everything) == 300 and all(i % 2 == 1 for i in everything)
    assert everything == sorted(set(everything), reverse=True)

    # a picture collected while a run walks the older ones is work of the same run
    walk = pictures.wanted_pages(engine=engine, version_ids=versions, everything=False,
                                 shard=0, shards=1, page=1)  # fmt: skip
    first = next(walk)[0].image_id
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO raw.images (media_id, post_id, position, object_key, sha256, width, "
                "height, bytes, content_type) SELECT 99999999, post_id, 9, 'images/new.jpg', "
                "repeat('a', 64), 10, 10, 100, 'image/jpeg' FROM raw.images WHERE id = :i"
            ),
            {"i": first},
        )
        new = connection.execute(text("SELECT max(id) FROM raw.images")).scalar_one()
    rest = [page[0].image_id for page in walk]
    assert rest[-1] == new and [first, *rest[:-1]] == ids
