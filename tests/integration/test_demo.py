"""The README's first command, small: every stage runs and the report says what a newcomer needs."""

from __future__ import annotations

import re

from sqlalchemy import create_engine, text

from tests.cli import catalogue


def test_the_demo_runs_end_to_end_and_reports(services, dataset, fresh_database, tmp_path):
    env = services.env(
        CATALOGUE_DATABASE_URL=fresh_database.render_as_string(hide_password=False),
        CATALOGUE_STATE_DIR=str(tmp_path / "state"),
        CATALOGUE_DATASET_DIR=str(dataset),
    )
    result = catalogue(env, "demo", "--no-airflow", "--size", "300", "--epochs", "1",
                       timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    # no TensorFlow C++ INFO line for a newcomer to read as an error, at start or in training
    assert not re.search(r"^I\d{4} ", result.stderr, re.M), result.stderr[-3000:]
    for step in range(1, 8):
        assert f"== {step}/7" in out
    assert re.search(r"catalogue: \d+ accounts, \d+ posts, 300 pictures; \d+ labelled", out)
    assert re.search(r"champion colour-\d+ \(mobilenet_v2_050, tensorflow.*test accuracy", out)
    assert "next to the seed compact CNN" in out
    held_out = re.findall(r"predictions on the (\d+) unlabelled pictures whose true (\w+)", out)
    assert {attribute for _, attribute in held_out} == {"colour", "category"}
    assert all(int(n) > 0 for n, _ in held_out)

    engine = create_engine(fresh_database)
    with engine.connect() as connection:
        sources = dict(connection.execute(text(
            "SELECT colour_source, count(*) FROM marketplace.products GROUP BY 1"
        )).all())  # fmt: skip
    engine.dispose()
    assert sum(sources.values()) == 300  # every picture has a colour
    assert sources["model"] > 0 and sources["moderator"] > 0  # the unlabelled share is predicted

    # the "next" list's similar-items command works as printed
    suggested = re.search(r"similar +\.venv/bin/catalogue (similar \S+ --limit 5)", out)
    assert suggested, out[-2000:]
    similar = catalogue(env, *suggested.group(1).split())
    assert similar.returncode == 0, similar.stderr
    assert len(re.findall(r"^ +\d\.\d{3}  \S+/\d+  @", similar.stdout, re.M)) == 5

    again = catalogue(env, "demo", "--no-airflow", "--size", "300", "--epochs", "1", timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "were trained on this snapshot" in again.stdout  # a rerun does not train again
    assert "every picture was scored" in again.stdout
