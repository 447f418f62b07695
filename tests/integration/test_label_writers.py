"""Label writers at once, and an audit trail a moderator at a SQL prompt cannot forge.

Writers are real `catalogue` processes. To make them meet, the test holds a lock on the jobs
table: both processes read their files, find their pictures, then wait to record their job; the
test lets them go together, so both write the same labels at the same moment.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from pipeline.labels.history import WantedLabel, Who, write_labels
from pipeline.labels.jobs import Selection, run_job, undo_job
from pipeline.labels.label_csv import import_labels
from tests.catalogue_rows import add_posts, reset_catalogue

PICTURES = 1500
LABELLED_BEFORE = 1000  # the rest have no label yet: the first labels race too


@pytest.fixture
def shop(migrated, tmp_path):
    reset_catalogue(migrated)
    catalogued = add_posts(migrated, {"shop_x": PICTURES}, prefix="W")
    codes = catalogued.accounts["shop_x"]
    before = tmp_path / "before.csv"
    before.write_text(
        "shortcode,position,colour,category\n"
        + "".join(f"{code},0,Red,Tshirts\n" for code in codes[:LABELLED_BEFORE]),
        encoding="utf-8",
    )
    import_labels(before, engine=migrated, who=Who(name="setup"))
    return catalogued


def _label_file(tmp_path, codes: list[str], colour: str, category: str):
    path = tmp_path / f"{colour}.csv"
    path.write_text(
        "shortcode,position,colour,category\n"
        + "".join(f"{code},0,{colour},{category}\n" for code in codes),
        encoding="utf-8",
    )
    return path


def _start(services, *args: str, moderator: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=services.env(CATALOGUE_MODERATOR=moderator),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _together(migrated, services, *commands: tuple[str, ...]) -> list[tuple[int, str]]:
    """Run the commands as processes that reach their label writes at the same moment."""
    with migrated.connect() as holder:
        holder.execute(text("LOCK TABLE catalogue.label_jobs IN EXCLUSIVE MODE"))
        processes = [
            _start(services, *command, moderator=f"mod{i}") for i, command in enumerate(commands)
        ]
        deadline = time.monotonic() + 120
        # autocommit: pg_stat_activity is read once per transaction
        with migrated.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:
            while True:
                waiting = watcher.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query ILIKE '%label_jobs%'"
                    )
                ).scalar_one()
                if waiting == len(commands):
                    break
                exited = [p for p in processes if p.poll() is not None]
                assert not exited, [p.communicate() for p in exited]
                assert time.monotonic() < deadline, "the writers never reached their writes"
                time.sleep(0.1)
        holder.rollback()  # both go at once
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        results.append((process.returncode, out + err))
    return results


def _history_is_one_chain(engine) -> None:
    with engine.connect() as connection:
        forks = connection.execute(
            text(
                """
                SELECT count(*) FROM (
                    SELECT replaces_label_id FROM catalogue.labels
                    WHERE replaces_label_id IS NOT NULL
                    GROUP BY replaces_label_id HAVING count(*) > 1) AS f
                """
            )
        ).scalar_one()
        firsts = connection.execute(
            text(
                """
                SELECT count(*) FROM (
                    SELECT image_id, attribute FROM catalogue.labels
                    WHERE replaces_label_id IS NULL
                    GROUP BY image_id, attribute HAVING count(*) > 1) AS f
                """
            )
        ).scalar_one()
        # every label replaces the one written just before it for its picture
        out_of_chain = connection.execute(
            text(
                """
                SELECT count(*) FROM (
                    SELECT replaces_label_id, lag(id) OVER (PARTITION BY image_id, attribute
                                                            ORDER BY id) AS previous
                    FROM catalogue.labels) AS l
                WHERE replaces_label_id IS DISTINCT FROM previous
                """
            )
        ).scalar_one()
    assert (forks, firsts, out_of_chain) == (0, 0, 0)


def _products_follow_current_labels(engine) -> None:
    with engine.connect() as connection:
        disagree = connection.execute(
            text(
                """
                SELECT count(*) FROM catalogue.current_labels l
                LEFT JOIN marketplace.products p ON p.image_id = l.image_id
                WHERE (l.attribute = 'colour'
                       AND (p.colour, p.colour_source) IS DISTINCT FROM (l.value, 'moderator'))
                   OR (l.attribute = 'category'
                       AND (p.category, p.category_source)
                           IS DISTINCT FROM (l.value, 'moderator'))
                """
            )
        ).scalar_one()
    assert disagree == 0


def _current_pairs(engine) -> set[tuple[str, str]]:
    with engine.connect() as connection:
        return set(
            tuple(row)
            for row in connection.execute(
                text("SELECT colour, category FROM marketplace.products WHERE account = 'shop_x'")
            ).all()
        )


def _label_rows(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM catalogue.labels")).scalar_one()


def test_two_conflicting_imports_at_once_take_turns(migrated, services, shop, tmp_path):
    codes = shop.accounts["shop_x"]
    blue = _label_file(tmp_path, codes, "Blue", "Shirts")
    green = _label_file(tmp_path, codes, "Green", "Jeans")
    before = _label_rows(migrated)

    results = _together(
        migrated, services, ("labels", "import", str(blue)), ("labels", "import", str(green))
    )

    assert [code for code, _ in results] == [0, 0], results
    _history_is_one_chain(migrated)
    _products_follow_current_labels(migrated)
    # each import is whole: one file's labels are current everywhere (the one that went second)
    assert _current_pairs(migrated) in ({("Blue", "Shirts")}, {("Green", "Jeans")})
    # the first changed every label; the second changed every label again
    assert _label_rows(migrated) == before + 2 * 2 * PICTURES


def test_an_import_and_a_relabel_job_at_once_take_turns(migrated, services, shop, tmp_path):
    codes = shop.accounts["shop_x"]
    green = _label_file(tmp_path, codes, "Green", "Jeans")
    before = _label_rows(migrated)

    results = _together(
        migrated,
        services,
        ("labels", "import", str(green)),
        ("labels", "move", "--attribute", "colour", "--to", "Blue", "--account", "shop_x"),
    )

    assert [code for code, _ in results] == [0, 0], results
    _history_is_one_chain(migrated)
    _products_follow_current_labels(migrated)
    assert _current_pairs(migrated) in ({("Green", "Jeans")}, {("Blue", "Jeans")})
    colour_rows = 2 * PICTURES  # each writer changed every colour once
    assert _label_rows(migrated) == before + colour_rows + PICTURES  # categories: the import


def test_the_same_undo_twice_at_once_undoes_once(migrated, services, shop):
    move = run_job(
        engine=migrated,
        kind="move",
        attribute="colour",
        who=Who(name="alice"),
        to="Blue",
        selection=Selection(account="shop_x"),
    )
    before = _label_rows(migrated)

    results = _together(
        migrated,
        services,
        ("labels", "undo", str(move.job_id)),
        ("labels", "undo", str(move.job_id)),
    )

    codes = sorted(code for code, _ in results)
    assert codes[0] == 0, results
    assert any("already undone" in output for _, output in results), results
    _history_is_one_chain(migrated)
    _products_follow_current_labels(migrated)
    assert _label_rows(migrated) == before + PICTURES
    with migrated.connect() as connection:
        undos = connection.execute(
            text("SELECT count(*) FROM catalogue.label_jobs WHERE undoes_job_id = :j"),
            {"j": move.job_id},
        ).scalar_one()
    assert undos == 1


@pytest.fixture
def moderator_login(services, migrated, settings):
    """A login role in the moderator group (not the application's): a moderator at psql."""
    login = f"{services.role_prefix}_mod_{secrets.token_hex(3)}"
    with migrated.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(
            text(
                f"CREATE ROLE {login} LOGIN PASSWORD 'test-only' "
                f"IN ROLE {settings.role_names['moderator']}"
            )
        )
    engine = create_engine(
        services.database_url.set(username=login, password="test-only"),
        connect_args={"connect_timeout": 5},
    )
    yield login, engine
    engine.dispose()
    with migrated.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"DROP OWNED BY {login}"))
        connection.execute(text(f"DROP ROLE {login}"))


def _own_job(connection) -> int:
    """A label job the session records for itself at a SQL prompt."""
    return connection.execute(
        text(
            "INSERT INTO catalogue.label_jobs (kind, created_by) VALUES ('label', 'x') RETURNING id"
        )
    ).scalar_one()


def test_a_moderator_at_sql_cannot_forge_who_when_or_how(migrated, shop, moderator_login):
    login, engine = moderator_login
    image = shop.image(shop.accounts["shop_x"][-1])  # no label yet
    labelled = shop.image(shop.accounts["shop_x"][0])  # Red, by the setup import
    real = run_job(
        engine=migrated,
        kind="move",
        attribute="colour",
        who=Who(name="alice"),
        to="Blue",
        selection=Selection(shortcodes=[shop.accounts["shop_x"][0]]),
    )

    with engine.begin() as connection:
        job = connection.execute(
            text(
                "INSERT INTO catalogue.label_jobs (kind, created_by, db_role, origin, "
                "airflow_run_id, labels_written, created_at) VALUES ('label', 'alice', "
                "'catalogue_app', 'airflow', 'manual__x', 999, '2020-01-01') "
                "RETURNING id, created_by, db_role, origin, airflow_run_id, labels_written, "
                "created_at > now() - interval '1 minute' AS now"
            )
        ).one()
        assert (job.created_by, job.db_role, job.origin, job.airflow_run_id) == (
            login,
            login,
            "sql",
            None,
        )
        assert job.labels_written == 0 and job.now

        label = connection.execute(
            text(
                "INSERT INTO catalogue.labels (image_id, attribute, value, source, moderator, "
                "created_by, job_id, created_at, db_role) VALUES (:i, 'colour', 'Green', "
                "'moderator', :me, :me, :job, '2020-01-01', 'catalogue_app') "
                "RETURNING db_role, created_at > now() - interval '1 minute' AS now"
            ),
            {"i": image, "me": login, "job": job.id},
        ).one()
        assert label.db_role == login and label.now

    forgeries = {
        "source": ("'relabel'", ":me", ":me"),
        "created_by": ("'moderator'", ":me", "'alice'"),
        "moderator": ("'moderator'", "'alice'", ":me"),
    }
    for source, moderator, created_by in forgeries.values():
        with pytest.raises(DBAPIError, match="come from its job"), engine.begin() as connection:
            job_id = _own_job(connection)
            connection.execute(
                text(
                    "INSERT INTO catalogue.labels (image_id, attribute, value, source, "
                    "moderator, created_by, job_id, replaces_label_id) VALUES (:i, 'colour', "
                    f"'Black', {source}, {moderator}, {created_by}, :job, "
                    "(SELECT max(id) FROM catalogue.labels WHERE image_id = :i "
                    "AND attribute = 'colour'))"
                ),
                {"i": image, "me": login, "job": job_id},
            )

    # labels into somebody else's job
    with pytest.raises(DBAPIError, match="another role"), engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO catalogue.labels (image_id, attribute, value, source, moderator, "
                "created_by, job_id) VALUES (:i, 'category', 'Jeans', 'relabel', :me, 'alice', "
                ":job)"
            ),
            {"i": image, "me": login, "job": real.job_id},
        )
    # a label that claims to replace another picture's latest label: refused
    with pytest.raises(DBAPIError, match="must replace label"), engine.begin() as connection:
        job_id = _own_job(connection)
        connection.execute(
            text(
                "INSERT INTO catalogue.labels (image_id, attribute, value, source, moderator, "
                "created_by, job_id, replaces_label_id) VALUES (:i, 'colour', 'Black', "
                "'moderator', :me, :me, :job, (SELECT max(id) FROM catalogue.labels "
                "WHERE image_id = :other AND attribute = 'colour'))"
            ),
            {"i": labelled, "other": image, "me": login, "job": job_id},
        )
    # ids come from the database: a label with a huge id would be the latest one for good, a
    # job with the sequence's next id would make the application's next job fail
    with pytest.raises(DBAPIError, match="label ids come from the database"), engine.begin() as c:
        job_id = _own_job(c)
        c.execute(
            text(
                "INSERT INTO catalogue.labels (id, image_id, attribute, value, source, moderator, "
                "created_by, job_id, replaces_label_id) VALUES (4000000000000000000, :i, "
                "'colour', 'Black', 'moderator', :me, :me, :job, (SELECT max(id) FROM "
                "catalogue.labels WHERE image_id = :i AND attribute = 'colour'))"
            ),
            {"i": image, "me": login, "job": job_id},
        )
    with pytest.raises(DBAPIError, match="job ids come from the database"), engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO catalogue.label_jobs (id, kind, created_by) VALUES "
                "(pg_sequence_last_value('catalogue.label_jobs_id_seq') + 1, 'label', 'x')"
            )
        )
    # a fake undo that would block the real one
    with pytest.raises(DBAPIError, match="undo jobs are recorded by"), engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO catalogue.label_jobs (kind, created_by, undoes_job_id) "
                "VALUES ('undo', 'alice', :job)"
            ),
            {"job": real.job_id},
        )
    with pytest.raises(ProgrammingError, match="permission denied"), engine.begin() as c:
        c.execute(text("UPDATE catalogue.label_jobs SET labels_written = 0"))

    # the real undo still works, and the moderator's own writes through the product count
    assert undo_job(engine=migrated, job_id=real.job_id, who=Who(name="alice")).images == 1
    with engine.begin() as connection:
        outcome = write_labels(
            connection=connection,
            kind="label",
            who=Who(name="ignored"),
            arguments={},
            wanted=[WantedLabel(image, "category", "Jeans")],
        )
        written = connection.execute(
            text("SELECT created_by, labels_written FROM catalogue.label_jobs WHERE id = :j"),
            {"j": outcome.job_id},
        ).one()
    assert tuple(written) == (login, 1)


def test_only_writers_may_lock_pictures_and_nobody_rewrites_a_job(migrated, shop, settings):
    roles = settings.role_names
    with migrated.connect() as connection:
        for role, allowed in ((roles["reader"], False), (roles["moderator"], True)):
            connection.execute(text(f"SET ROLE {role}"))
            connection.execute(text("SAVEPOINT s"))
            try:
                connection.execute(text("SELECT catalogue.lock_images(ARRAY[1::bigint])"))
                locked = True
            except ProgrammingError as exc:
                assert "permission denied" in str(exc)
                locked = False
            connection.execute(text("ROLLBACK TO SAVEPOINT s"))
            connection.execute(text("RESET ROLE"))
            assert locked is allowed, role
        connection.execute(text(f"SET ROLE {roles['app']}"))
        for statement in (
            "UPDATE catalogue.label_jobs SET created_by = 'mallory'",
            "DELETE FROM catalogue.label_jobs",
        ):
            connection.execute(text("SAVEPOINT s"))
            with pytest.raises(ProgrammingError, match="permission denied"):
                connection.execute(text(statement))
            connection.execute(text("ROLLBACK TO SAVEPOINT s"))
        connection.rollback()


def test_an_upgrade_keeps_a_history_forked_before_and_guards_what_follows(fresh_database, settings):
    """Histories forked by the old code stay (labels are append-only); writes after are one
    chain."""
    from pipeline.db import get_engine
    from pipeline.db.migrate import downgrade, upgrade

    engine = get_engine(fresh_database)
    upgrade(engine, role_names=settings.role_names, revision="0008")
    shop = add_posts(engine, {"forked_shop": 2}, prefix="F")
    image = shop.image(shop.accounts["forked_shop"][0])
    with engine.begin() as connection:
        job = connection.execute(
            text(
                "INSERT INTO catalogue.label_jobs (kind, created_by) VALUES ('import', 'old') RETURNING id"
            )
        ).scalar_one()
        for value in ("Red", "Blue"):  # two first labels: what two imports at once left
            connection.execute(
                text(
                    "INSERT INTO catalogue.labels (image_id, attribute, value, source, moderator, "
                    "created_by, job_id) VALUES (:i, 'colour', :v, 'import', 'old', 'old', :j)"
                ),
                {"i": image, "v": value, "j": job},
            )

    upgrade(engine, role_names=settings.role_names)

    outcome = import_labels_rows(engine, shop.accounts["forked_shop"], "Green")
    assert outcome.written == 2
    _history_is_one_chain_after(engine, job)
    downgrade(engine, role_names=settings.role_names, revision="0008")
    upgrade(engine, role_names=settings.role_names)


def import_labels_rows(engine, codes: list[str], colour: str):
    with engine.begin() as connection:
        ids = connection.execute(
            text(
                "SELECT i.id FROM raw.images i JOIN raw.posts p ON p.id = i.post_id "
                "WHERE p.shortcode = ANY(:codes) ORDER BY i.id"
            ),
            {"codes": codes},
        ).scalars()
        return write_labels(
            connection=connection, kind="label", who=Who(name="new"), arguments={},
            wanted=[WantedLabel(i, "colour", colour) for i in ids],
        )  # fmt: skip


def _history_is_one_chain_after(engine, job_id: int) -> None:
    """Every label written after the old job's replaces the one before it."""
    with engine.connect() as connection:
        broken = connection.execute(
            text(
                """
                SELECT count(*) FROM (
                    SELECT job_id, replaces_label_id, lag(id) OVER (PARTITION BY image_id,
                        attribute ORDER BY id) AS previous FROM catalogue.labels) AS l
                WHERE job_id <> :j AND replaces_label_id IS DISTINCT FROM previous
                """
            ),
            {"j": job_id},
        ).scalar_one()
    assert broken == 0
