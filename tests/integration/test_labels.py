"""Moderation against the real Postgres: label CSV import/export, relabel jobs, undo, history,
precedence over predictions, the review queue and the roles."""

from __future__ import annotations

import csv
import io
import re

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.pool import NullPool

from pipeline.labels.history import WantedLabel, Who, write_labels
from pipeline.labels.jobs import JobError, Selection, run_job, undo_job
from pipeline.labels.label_csv import LabelFileError, export_labels, import_labels
from pipeline.labels.review import review_queue, write_review_csv
from pipeline.labels.taxonomy import load_taxonomy, parse_taxonomy, sync_taxonomy
from pipeline.storage import ObjectStore
from tests.catalogue_rows import add_prediction, two_shops
from tests.cli import catalogue

ALICE = Who(name="alice")
BOB = Who(name="bob")


@pytest.fixture
def shop(migrated):
    """Two accounts: `shop_a` with 6 posts, `shop_b` with 3 carousels of 2 pictures."""
    return two_shops(migrated)


def _csv(tmp_path, content: str, name: str = "labels.csv"):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def _current(engine) -> dict[tuple[int, str], str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT image_id, attribute, value FROM catalogue.current_labels")
        ).all()
    return {(r.image_id, r.attribute): r.value for r in rows}


def _label_rows(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM catalogue.labels")).scalar_one()


def test_import_applies_valid_rows_and_reports_each_refused_one(migrated, shop, tmp_path):
    path = _csv(
        tmp_path,
        "shortcode,position,colour,category,moderator,note\n"
        "A0x00000,0,Gray,T-shirt,carol,first\n"  # 2: aliases -> Grey, Tshirts
        "A0x00001,0,Navy Blue,,,\n"  # 3: empty category leaves it
        "NOPE,0,Blue,,,\n"  # 4: unknown shortcode
        "B0x00000,5,Blue,,,\n"  # 5: no image at that position
        "A0x00002,0,Bleu,,,\n"  # 6: unknown value, no alias
        "A0x00003,0,Red,,,\n"  # 7
        "A0x00003,0,Red,,,\n"  # 8: duplicate of 7
        "A0x00004,0,Red,,,\n"  # 9: conflicts with 10
        "A0x00004,0,Green,,,\n"  # 10
        "A0x00005,0,Red\n"  # 11: wrong number of fields
        "A0x00005,x,Red,,,\n",  # 12: position not a number
    )
    report = import_labels(path, engine=migrated, who=ALICE)

    reasons = {row.line: row.reason for row in report.refused}
    assert sorted(reasons) == [4, 5, 6, 8, 9, 10, 11, 12]
    assert "unknown shortcode 'NOPE'" in reasons[4]
    assert "no image at position 5" in reasons[5]
    assert "'Bleu' is not a colour" in reasons[6]
    assert "duplicate row" in reasons[8] and "line 7" in reasons[8]
    assert "conflicting" in reasons[9] and "conflicting" in reasons[10]
    assert "3 fields" in reasons[11]
    assert "position 'x'" in reasons[12]
    current = _current(migrated)
    assert current == {
        (shop.image("A0x00000"), "colour"): "Grey",
        (shop.image("A0x00000"), "category"): "Tshirts",
        (shop.image("A0x00001"), "colour"): "Navy Blue",
        (shop.image("A0x00003"), "colour"): "Red",
    }
    assert report.written == 4 and report.applied
    with migrated.connect() as connection:
        row = connection.execute(
            text(
                "SELECT l.moderator, l.created_by, l.note, l.source, j.kind, j.created_by AS who "
                "FROM catalogue.labels l JOIN catalogue.label_jobs j ON j.id = l.job_id "
                "WHERE l.image_id = :i AND l.attribute = 'colour'"
            ),
            {"i": shop.image("A0x00000")},
        ).one()
    # the cell credits carol; the authenticated identity (alice) is recorded beside it
    assert (row.moderator, row.created_by, row.note, row.source) == (
        "carol",
        "alice",
        "first",
        "import",
    )
    assert (row.kind, row.who) == ("import", "alice")

    again = import_labels(path, engine=migrated, who=ALICE)
    assert (again.written, again.unchanged) == (0, 4)
    assert _label_rows(migrated) == 4


def test_strict_import_applies_nothing_when_a_row_is_refused(migrated, shop, tmp_path):
    path = _csv(tmp_path, "shortcode,position,colour\nA0x00000,0,Black\nA0x00001,0,Bleu\n")
    report = import_labels(path, engine=migrated, who=ALICE, strict=True)
    assert not report.applied and [r.line for r in report.refused] == [3]
    assert _label_rows(migrated) == 0


@pytest.mark.parametrize(
    "content, message",
    [
        pytest.param(
            "shortcode,position,colour,size\nA0x00000,0,Black,M\n",
            "unknown column(s) 'size'",
            id="unknown-column",
        ),
        pytest.param("position,colour\n0,Black\n", "missing column(s) shortcode", id="no-key"),
        pytest.param("", "is empty", id="empty"),
    ],
)
def test_a_file_that_cannot_be_read_as_labels_is_refused_whole(
    migrated, shop, tmp_path, content, message
):
    with pytest.raises(LabelFileError, match=re.escape(message)):
        import_labels(_csv(tmp_path, content), engine=migrated, who=ALICE)
    assert _label_rows(migrated) == 0


def test_a_file_in_another_encoding_is_refused_naming_it(migrated, shop, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("shortcode,position,colour,note\nA0x00000,0,Black,très\n".encode("latin-1"))
    with pytest.raises(LabelFileError, match=r"not UTF-8.*CSV UTF-8"):
        import_labels(path, engine=migrated, who=ALICE)


def test_a_broken_quote_is_reported_with_its_line(migrated, shop, tmp_path):
    path = _csv(tmp_path, 'shortcode,position,colour\nA0x00000,0,Black\nA0x00001,0,"Bl"ue\n')
    report = import_labels(path, engine=migrated, who=ALICE)
    assert [r.line for r in report.refused] == [3]
    assert "malformed CSV" in report.refused[0].reason
    assert report.written == 1


def test_export_round_trips_and_never_overwrites_a_label_changed_after_it(migrated, shop, tmp_path):
    import_labels(
        _csv(tmp_path, "shortcode,position,colour,category,note\n"
             "A0x00000,0,Black,Tshirts,=HYPERLINK(\"http://x\")\nA0x00001,0,Blue,Shirts,\n"),
        engine=migrated, who=ALICE,
    )  # fmt: skip
    out = io.StringIO()
    assert export_labels(out, engine=migrated) == 2
    exported = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(exported[0])[:6] == [
        "shortcode",
        "position",
        "colour",
        "category",
        "moderator",
        "note",
    ]
    assert exported[0]["note"].startswith("'=")  # neutralised for spreadsheets
    assert exported[0]["colour_label_id"].isdigit()

    # re-importing the untouched export changes nothing
    path = tmp_path / "export.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    assert import_labels(path, engine=migrated, who=ALICE).written == 0

    # bob relabels A0x00000 after the export; alice edits her export and imports it
    run_job(engine=migrated, kind="move", attribute="colour", to="White", who=BOB,
            selection=Selection(shortcodes=["A0x00000"]))  # fmt: skip
    edited = out.getvalue().replace(",Black,", ",Grey,").replace(",Blue,", ",Navy Blue,")
    path.write_text(edited, encoding="utf-8")
    report = import_labels(path, engine=migrated, who=ALICE)
    assert report.written == 1  # A0x00001's colour
    assert len(report.stale) == 1 and "changed after the export" in report.stale[0].reason
    current = _current(migrated)
    assert current[(shop.image("A0x00000"), "colour")] == "White"  # bob's label stays
    assert current[(shop.image("A0x00001"), "colour")] == "Navy Blue"
    with migrated.connect() as connection:
        note = connection.execute(
            text(
                "SELECT note FROM catalogue.current_labels WHERE image_id = :i AND attribute = 'category'"
            ),
            {"i": shop.image("A0x00000")},
        ).scalar_one()
    assert note == '=HYPERLINK("http://x")'  # the apostrophe is the export's, not the data's


def test_export_filters_by_account_attribute_and_value(migrated, shop, tmp_path):
    import_labels(
        _csv(tmp_path, "shortcode,position,colour,category\nA0x00000,0,Black,Tshirts\n"
             "A0x00001,0,Blue,\nB0x00000,1,Blue,Handbags\n"),
        engine=migrated, who=ALICE,
    )  # fmt: skip
    out = io.StringIO()
    assert export_labels(out, engine=migrated, attribute="colour", value="blue") == 2
    assert export_labels(io.StringIO(), engine=migrated, account="shop_b") == 1


def _snapshot(engine):
    with engine.connect() as connection:
        return sorted(
            connection.execute(
                text("SELECT image_id, attribute, value, moderator FROM catalogue.current_labels")
            ).all()
        )


def test_merge_job_dry_run_then_run_then_undo_restores_exactly(migrated, shop, tmp_path):
    rows = "".join(
        f"A0x{n:05d},0,{c},\n" for n, c in enumerate(["Navy Blue", "Sky Blue", "Navy Blue", "Red"])
    )
    import_labels(
        _csv(tmp_path, "shortcode,position,colour,note\n" + rows), engine=migrated, who=ALICE
    )
    before, labels_before = _snapshot(migrated), _label_rows(migrated)

    dry = run_job(engine=migrated, kind="rename", attribute="colour", from_values=["Navy Blue", "sky blue"],
                  to="Blue", who=BOB, dry_run=True)  # fmt: skip
    assert dry.dry_run and dry.images == 3 and dry.job_id is None
    assert {(s["before"], s["after"]) for s in dry.sample} == {
        ("Navy Blue", "Blue"),
        ("Sky Blue", "Blue"),
    }
    assert _label_rows(migrated) == labels_before

    job = run_job(engine=migrated, kind="rename", attribute="colour", from_values=["Navy Blue", "Sky Blue"],
                  to="Blue", who=BOB)  # fmt: skip
    assert job.images == 3
    current = _current(migrated)
    assert [current[(shop.image(f"A0x{n:05d}"), "colour")] for n in range(4)] == ["Blue"] * 3 + [
        "Red"
    ]
    with migrated.connect() as connection:
        history = connection.execute(
            text(
                "SELECT n.source, n.created_by, old.value AS replaced FROM catalogue.labels n "
                "JOIN catalogue.labels old ON old.id = n.replaces_label_id WHERE n.job_id = :j"
            ),
            {"j": job.job_id},
        ).all()
    assert sorted(h.replaced for h in history) == ["Navy Blue", "Navy Blue", "Sky Blue"]
    assert {(h.source, h.created_by) for h in history} == {("relabel", "bob")}

    undo = undo_job(engine=migrated, job_id=job.job_id, who=ALICE)
    assert undo.images == 3 and undo.skipped == 0
    assert _snapshot(migrated) == before  # values and credited moderators as they were
    assert _label_rows(migrated) == labels_before + 6  # history only grows
    with pytest.raises(JobError, match="already undone"):
        undo_job(engine=migrated, job_id=job.job_id, who=ALICE)


def test_undo_leaves_labels_changed_after_the_job(migrated, shop, tmp_path):
    import_labels(_csv(tmp_path, "shortcode,position,colour\nA0x00000,0,Red\nA0x00001,0,Red\n"),
                  engine=migrated, who=ALICE)  # fmt: skip
    job = run_job(
        engine=migrated,
        kind="rename",
        attribute="colour",
        from_values=["Red"],
        to="Maroon",
        who=BOB,
    )
    run_job(engine=migrated, kind="move", attribute="colour", to="Pink", who=ALICE,
            selection=Selection(shortcodes=["A0x00001"]))  # fmt: skip
    undo = undo_job(engine=migrated, job_id=job.job_id, who=ALICE)
    assert (undo.images, undo.skipped) == (1, 1)
    current = _current(migrated)
    assert current[(shop.image("A0x00000"), "colour")] == "Red"
    assert current[(shop.image("A0x00001"), "colour")] == "Pink"


def test_move_selects_by_account_label_and_prediction(migrated, shop, tmp_path):
    rows = "".join(f"A0x{n:05d},0,Tops\n" for n in range(4)) + "B0x00000,0,Tops\n"
    import_labels(
        _csv(tmp_path, "shortcode,position,category\n" + rows), engine=migrated, who=ALICE
    )
    for n, predicted in enumerate(["Kurtas", "Kurtas", "Tops", "Shirts"]):
        add_prediction(
            migrated, shop.image(f"A0x{n:05d}"), "category", [(predicted, 0.8), ("Tops", 0.1)]
        )
    add_prediction(migrated, shop.image("B0x00000"), "category", [("Kurtas", 0.9)])

    with pytest.raises(JobError, match="needs a filter"):
        run_job(engine=migrated, kind="move", attribute="category", to="Kurtas", who=BOB)
    job = run_job(engine=migrated, kind="move", attribute="category", to="Kurtas", who=BOB,
                  selection=Selection(account="shop_a", value=["Tops"], predicted=["Kurtas"]))  # fmt: skip
    assert job.images == 2
    current = _current(migrated)
    assert [current[(shop.image(f"A0x{n:05d}"), "category")] for n in range(4)] == [
        "Kurtas",
        "Kurtas",
        "Tops",
        "Tops",
    ]
    assert current[(shop.image("B0x00000"), "category")] == "Tops"


def test_clear_job_and_its_undo(migrated, shop, tmp_path):
    import_labels(_csv(tmp_path, "shortcode,position,colour\nB0x00000,0,Red\nB0x00000,1,Blue\n"),
                  engine=migrated, who=ALICE)  # fmt: skip
    job = run_job(engine=migrated, kind="clear", attribute="colour", who=BOB,
                  selection=Selection(shortcodes=["B0x00000"]))  # fmt: skip
    assert job.images == 2 and _current(migrated) == {}
    undo_job(engine=migrated, job_id=job.job_id, who=BOB)
    assert set(_current(migrated).values()) == {"Red", "Blue"}


def test_a_moderator_label_outranks_the_model_in_the_marketplace(migrated, shop, tmp_path):
    image = shop.image("A0x00000")
    add_prediction(migrated, image, "colour", [("Blue", 0.9), ("Black", 0.05)], model_version="m1")
    add_prediction(
        migrated, image, "category", [("Shirts", 0.4), ("Tshirts", 0.3)], model_version="m1"
    )

    def product():
        with migrated.connect() as connection:
            return connection.execute(
                text("SELECT * FROM marketplace.products WHERE image_id = :i"), {"i": image}
            ).one()

    assert (product().colour, product().colour_source, product().needs_review) == (
        "Blue",
        "model",
        True,
    )
    import_labels(_csv(tmp_path, "shortcode,position,colour,category\nA0x00000,0,Black,Tshirts\n"),
                  engine=migrated, who=ALICE)  # fmt: skip
    row = product()
    assert (row.colour, row.colour_source, row.colour_confidence) == ("Black", "moderator", None)
    assert (row.category, row.category_source, row.needs_review) == ("Tshirts", "moderator", False)
    # a later prediction does not overwrite the moderator's value
    add_prediction(migrated, image, "colour", [("Blue", 0.99)], model_version="m2")
    assert (product().colour, product().colour_source) == ("Black", "moderator")
    # clearing the label hands the attribute back to the model
    run_job(
        engine=migrated,
        kind="clear",
        attribute="colour",
        who=BOB,
        selection=Selection(shortcodes=["A0x00000"]),
    )
    assert (product().colour, product().colour_source, product().model_version) == (
        "Blue",
        "model",
        "m2",
    )


def test_labels_are_append_only_but_a_takedown_removes_them(migrated, shop, settings, tmp_path):
    import_labels(
        _csv(tmp_path, "shortcode,position,colour\nA0x00000,0,Red\n"), engine=migrated, who=ALICE
    )
    for statement in ("UPDATE catalogue.labels SET value = 'Blue'", "DELETE FROM catalogue.labels"):
        with pytest.raises(DBAPIError, match="append-only"), migrated.begin() as connection:
            connection.execute(text(statement))
    from pipeline.collect.purge import purge

    purge(engine=migrated, store=ObjectStore.for_images(settings), target="shop_a", reason="DMCA 7")
    assert _label_rows(migrated) == 0


def test_roles_moderators_label_readers_read(migrated, shop, settings, tmp_path):
    import_labels(
        _csv(tmp_path, "shortcode,position,colour\nA0x00000,0,Red\n"), engine=migrated, who=ALICE
    )
    roles = settings.role_names
    image = shop.image("A0x00001")
    # a connection of its own, closed afterwards: SET ROLE must not leak into the pool
    with create_engine(settings.database_url, poolclass=NullPool).connect() as connection:
        connection.execute(text(f"SET ROLE {roles['moderator']}"))
        outcome = write_labels(
            connection=connection, kind="label", who=Who(name="dana"), arguments={},
            wanted=[WantedLabel(image, "colour", "Blue")],
        )  # fmt: skip
        assert outcome.written == 1
        for forbidden in (
            "UPDATE raw.images SET position = 3",
            "INSERT INTO catalogue.predictions (image_id, attribute, value, confidence, margin, "
            f"model_version) VALUES ({image}, 'colour', 'Red', 0.5, 0.1, 'x')",
            "UPDATE marketplace.products SET colour = 'Red'",
            "DELETE FROM catalogue.labels",
        ):
            connection.execute(text("SAVEPOINT s"))
            with pytest.raises(ProgrammingError):
                connection.execute(text(forbidden))
            connection.execute(text("ROLLBACK TO SAVEPOINT s"))
        connection.commit()
        connection.execute(text("RESET ROLE"))
        # the marketplace still follows the moderator's label (the trigger runs as its owner)
        colour = connection.execute(
            text("SELECT colour, colour_source FROM marketplace.products WHERE image_id = :i"),
            {"i": image},
        ).one()
        assert tuple(colour) == ("Blue", "moderator")

        connection.execute(text(f"SET ROLE {roles['reader']}"))
        count = connection.execute(
            text(
                "SELECT count(*) FROM catalogue.labels l JOIN catalogue.current_labels c ON c.label_id = l.id"
            )
        ).scalar_one()
        assert count == 2
        connection.execute(text("SAVEPOINT s"))
        with pytest.raises(ProgrammingError):
            connection.execute(
                text("INSERT INTO catalogue.label_jobs (kind, created_by) VALUES ('label', 'eve')")
            )
        connection.execute(text("ROLLBACK TO SAVEPOINT s"))
        connection.rollback()


def test_review_queue_puts_unsure_unlabelled_first_then_disagreements(
    migrated, shop, settings, tmp_path
):
    margins = {"A0x00000": 0.30, "A0x00001": 0.05, "A0x00002": 0.60}
    for code, margin in margins.items():
        add_prediction(
            migrated,
            shop.image(code),
            "colour",
            [("Blue", 0.35 + margin / 2), ("Black", 0.35 - margin / 2)],
        )
    # A0x00003: labelled Navy Blue, model says Blue: the same family (trained at family): agree
    # A0x00004: labelled Red, model says Green with 0.9: disagree
    import_labels(_csv(tmp_path, "shortcode,position,colour\nA0x00003,0,Navy Blue\nA0x00004,0,Red\n"),
                  engine=migrated, who=ALICE)  # fmt: skip
    add_prediction(migrated, shop.image("A0x00003"), "colour", [("Blue", 0.8)])
    add_prediction(migrated, shop.image("A0x00004"), "colour", [("Green", 0.9), ("Red", 0.05)])

    queue = review_queue(engine=migrated, limit=50, attribute="colour")
    order = [(item.shortcode, item.position) for item in queue]
    assert order[:4] == [("A0x00001", 0), ("A0x00000", 0), ("A0x00002", 0), ("A0x00004", 0)]
    assert ("A0x00003", 0) not in order
    # then shop_b (never labelled) before shop_a's remaining unlabelled image
    assert {o[0] for o in order[4:10]} == set(shop.accounts["shop_b"])
    assert order[10:] == [("A0x00005", 0)]
    assert [q.tier for q in queue[:4]] == [1, 1, 1, 2]

    out = io.StringIO()
    write_review_csv(out, queue[:4], engine=migrated, store=ObjectStore.for_images(settings))
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[0]["image_url"].startswith("http") and "X-Amz-Signature" in rows[0]["image_url"]
    assert rows[0]["colour_suggestions"].startswith("Blue 0.3")
    assert rows[0]["reason"] == "no label; model unsure"

    # the moderator fills in the file and imports it as it is: the extra columns are ignored
    rows[0]["colour"] = "Black"
    filled = io.StringIO()
    writer = csv.DictWriter(filled, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path = tmp_path / "review.csv"
    path.write_text(filled.getvalue(), encoding="utf-8")
    report = import_labels(path, engine=migrated, who=ALICE)
    assert report.refused == [] and report.written == 1
    assert review_queue(engine=migrated, limit=1, attribute="colour")[0].shortcode == "A0x00000"


def test_an_attribute_added_to_the_taxonomy_is_one_more_column(migrated, shop, tmp_path):
    document = load_taxonomy().document
    extended = {**document, "name": "with-gender", "attributes": [
        *document["attributes"],
        {"name": "gender", "values": ["Men", "Women", "Boys", "Girls", "Unisex"], "aliases": {"Male": "Men"}},
    ]}  # fmt: skip
    try:
        with migrated.begin() as connection:
            sync_taxonomy(connection=connection, taxonomy=parse_taxonomy(extended))
        report = import_labels(
            _csv(tmp_path, "shortcode,position,colour,category,gender\nA0x00000,0,Red,Shirts,male\n"),
            engine=migrated, who=ALICE,
        )  # fmt: skip
        assert report.written == 3
        out = io.StringIO()
        export_labels(out, engine=migrated)
        header, row = out.getvalue().splitlines()[:2]
        assert "gender" in header.split(",") and "gender_label_id" in header.split(",")
        assert row.startswith("A0x00000,0,Red,Shirts,Men,")
        with migrated.connect() as connection:
            value = connection.execute(
                text(
                    "SELECT value, source FROM marketplace.product_attributes WHERE attribute = 'gender'"
                )
            ).one()
        assert tuple(value) == ("Men", "moderator")
    finally:
        with migrated.begin() as connection:
            sync_taxonomy(connection=connection, taxonomy=load_taxonomy())


def test_cli_import_lists_refused_rows_and_undo_by_job(migrated, shop, services, tmp_path):
    env = services.env(CATALOGUE_MODERATOR="erin")
    path = _csv(tmp_path, "shortcode,position,colour\nA0x00000,0,Red\nA0x00001,0,Bleu\n")
    result = catalogue(env, "labels", "import", str(path))
    assert result.returncode == 0, result.stderr
    assert "line 3: unknown value" in result.stdout and "1 changed" in result.stdout
    strict = catalogue(env, "labels", "import", str(path), "--strict")
    assert strict.returncode == 1 and "nothing written" in strict.stdout

    merged = catalogue(
        env, "labels", "rename", "--attribute", "colour", "--from", "Red", "--to", "Maroon"
    )
    assert "changed 1 labels" in merged.stdout, merged.stdout + merged.stderr
    job = merged.stdout.split("(job ")[1].split(";")[0]
    undone = catalogue(env, "labels", "undo", job)
    assert "changed 1 labels" in undone.stdout, undone.stdout + undone.stderr
    history = catalogue(env, "labels", "history", "A0x00000")
    assert history.stdout.count("A0x00000/0 colour") == 3 and "erin" in history.stdout
    bad = catalogue(
        env, "labels", "move", "--attribute", "colour", "--to", "Ultraviolet", "--account", "shop_a"
    )
    assert bad.returncode == 1 and "'Ultraviolet' is not a colour" in bad.stderr
