"""The moderators' workbench over HTTP: pages, rights, CSRF, throttling, escaping, the stale guard,
and bulk relabelling whose history is the command line's.

One app and one catalogue for the module: 12 sample photos imported into the real S3 server and
Postgres, predictions on some, four people (admin, two moderators, a viewer) signed in.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import text

from pipeline.collect.archive import import_archive
from pipeline.labels.history import Who
from pipeline.labels.jobs import Selection, run_job, undo_job
from pipeline.labels.label_csv import import_labels
from pipeline.samples import generate_sample_accounts
from pipeline.storage import ObjectStore
from pipeline.web import users
from pipeline.web.app import create_app
from tests.catalogue_rows import add_prediction, reset_catalogue

PASSWORD = "correct horse battery"
PEOPLE = {"ada": "admin", "mo": "moderator", "max": "moderator", "vic": "viewer"}


@pytest.fixture(scope="module")
def shop(migrated, settings, dataset, tmp_path_factory):
    """12 sample photos (1080x1350) imported; predictions for the first 8; the people."""
    reset_catalogue(migrated)
    with migrated.begin() as connection:
        connection.execute(text("TRUNCATE catalogue.moderators, catalogue.login_failures CASCADE"))
        connection.execute(
            text("TRUNCATE catalogue.model_versions, catalogue.dataset_snapshots CASCADE")
        )
    archive = tmp_path_factory.mktemp("web-archive")
    generate_sample_accounts(dataset, archive, size=12, seed=5, carousel_share=0, video_share=0)
    import_archive(archive, engine=migrated, store=ObjectStore.for_images(settings), workers=4)
    with migrated.connect() as connection:
        images = connection.execute(
            text("SELECT id, shortcode, account FROM raw.post_images ORDER BY id")
        ).all()
    for n, image in enumerate(images[:8]):
        add_prediction(migrated, image.id, "category", [("Tshirts", 0.4 + n / 20), ("Shirts", 0.3)])
    for name, role in PEOPLE.items():
        users.add_person(engine=migrated, name=name, role=role, password=PASSWORD)
    return images


@pytest.fixture(scope="module")
def app(shop, settings, migrated):
    return create_app(settings, engine=migrated)


def _signed_in(app, name: str) -> TestClient:
    client = TestClient(app)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    answer = client.post(
        "/login",
        data={"name": name, "password": PASSWORD, "csrf_token": token, "next": "/review"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    client.headers["X-CSRF-Token"] = client.get("/api/session").json()["csrf_token"]
    return client


@pytest.fixture(scope="module")
def people(app) -> dict[str, TestClient]:
    return {name: _signed_in(app, name) for name in PEOPLE}


def _csrf(client: TestClient) -> str:
    return client.headers["X-CSRF-Token"]


def _form(client: TestClient, url: str, data: dict, **kwargs):
    """A form post as the browser sends it: the token in the form, not in a header."""
    headers = {"X-CSRF-Token": ""}
    return client.post(url, data={"csrf_token": _csrf(client), **data}, headers=headers, **kwargs)


def _labels(engine, image_id: int) -> list[tuple]:
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT l.attribute, l.value, l.source, l.moderator, l.created_by, j.kind, "
                "j.origin FROM catalogue.labels l JOIN catalogue.label_jobs j ON j.id = l.job_id "
                "WHERE l.image_id = :i ORDER BY l.id"
            ),
            {"i": image_id},
        ).all()


# -- sessions and rights ----------------------------------------------------------------------------
def test_nothing_is_reachable_without_a_session(app, shop):
    anonymous = TestClient(app)
    image = shop[0].id
    for path in ("/review", f"/pictures/{image}", "/jobs", "/catalogue", "/catalogue/labels.csv"):
        answer = anonymous.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    assert anonymous.get(f"/thumbs/{image}.jpg").status_code == 401
    answer = anonymous.post("/api/labels", json={"attribute": "category", "labels": []})
    assert answer.status_code == 401


def test_the_session_cookie_is_http_only_and_same_site(app):
    client = TestClient(app)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    answer = client.post("/login", data={"name": "vic", "password": PASSWORD, "csrf_token": token},
                         follow_redirects=False)  # fmt: skip
    cookie = answer.headers["set-cookie"].lower()
    assert "catalogue_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie  # plain http in development; CATALOGUE_WEB_SECURE_COOKIES


def test_an_expired_session_signs_out(app, migrated):
    client = _signed_in(app, "vic")
    assert client.get("/jobs").status_code == 200
    with migrated.begin() as connection:
        connection.execute(
            text(
                "UPDATE catalogue.web_sessions SET expires_at = now() - interval '1 second' "
                "WHERE moderator_id = (SELECT id FROM catalogue.moderators WHERE name = 'vic')"
            )
        )
    assert client.get("/jobs", follow_redirects=False).status_code == 303


def test_signing_out_ends_the_session(app):
    client = _signed_in(app, "vic")
    cookie = client.cookies["catalogue_session"]
    assert _form(client, "/logout", {}, follow_redirects=False).status_code == 303
    again = TestClient(app, cookies={"catalogue_session": cookie})
    assert again.get("/review", follow_redirects=False).status_code == 303


def test_a_viewer_sees_but_cannot_label(people, shop, migrated):
    viewer = people["vic"]
    assert viewer.get("/review").status_code == 200
    answer = viewer.post("/api/labels", json={"attribute": "category", "labels": [
        {"image_id": shop[0].id, "value": "Tops", "expected_label_id": 0}]})  # fmt: skip
    assert answer.status_code == 403 and "moderator" in answer.json()["error"]
    assert _labels(migrated, shop[0].id) == []


def test_a_moderator_cannot_manage_people(people, migrated):
    moderator = people["mo"]
    assert moderator.get("/users").status_code == 403
    answer = _form(moderator, "/users", {"action": "add", "name": "eve", "role": "admin",
                                         "password": PASSWORD})  # fmt: skip
    assert answer.status_code == 403
    assert "eve" not in {p.name for p in users.list_people(engine=migrated)}


def test_an_admin_adds_and_disables_people(people, app, migrated):
    admin = people["ada"]
    answer = _form(admin, "/users", {"action": "add", "name": "zoe", "role": "viewer",
                                     "password": PASSWORD}, follow_redirects=False)  # fmt: skip
    assert answer.status_code == 303
    zoe = _signed_in(app, "zoe")
    assert zoe.get("/review").status_code == 200
    assert _form(admin, "/users", {"action": "disable", "name": "zoe"}).status_code == 200
    assert zoe.get("/review", follow_redirects=False).status_code == 303
    assert "zoe" in admin.get("/users").text


def test_state_changes_need_the_csrf_token(people, shop, migrated):
    moderator = people["mo"]
    body = {"attribute": "category", "labels": [
        {"image_id": shop[1].id, "value": "Tops", "expected_label_id": 0}]}  # fmt: skip
    assert moderator.post("/api/labels", json=body, headers={"X-CSRF-Token": ""}).status_code == 403
    assert moderator.post("/api/labels", json=body,
                          headers={"X-CSRF-Token": "forged"}).status_code == 403  # fmt: skip
    answer = moderator.post(f"/pictures/{shop[1].id}/labels", headers={"X-CSRF-Token": ""},
                            data={"attribute": "category", "value": "Tops"})  # fmt: skip
    assert answer.status_code == 403
    assert _labels(migrated, shop[1].id) == []


def test_the_sign_in_form_needs_its_token(app):
    answer = TestClient(app).post("/login", data={"name": "mo", "password": PASSWORD})
    assert answer.status_code == 403


def test_repeated_failed_sign_ins_are_refused_for_a_while(app, migrated, settings):
    users.add_person(engine=migrated, name="tess", role="viewer", password=PASSWORD)
    client = TestClient(app)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)

    def attempt(password: str):
        return client.post("/login", data={"name": "tess", "password": password,
                                           "csrf_token": token}, follow_redirects=False)  # fmt: skip

    for _ in range(settings.web_login_attempts):
        assert attempt("wrong password!").status_code == 401
    refused = attempt(PASSWORD)
    assert refused.status_code == 429 and "too many failed sign-ins" in refused.text
    users.reset_password(engine=migrated, name="tess", password=PASSWORD)  # an admin's way out
    assert attempt(PASSWORD).status_code == 303


def test_an_address_trying_many_names_is_refused_for_a_while(app, settings):
    client = TestClient(app, client=("192.0.2.7", 50000))
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    for n in range(settings.web_login_attempts * users.CLIENT_FACTOR):
        answer = client.post("/login", data={"name": f"guess{n}", "password": "guess",
                                             "csrf_token": token})  # fmt: skip
        assert answer.status_code == 401
    refused = client.post("/login", data={"name": "vic", "password": PASSWORD,
                                          "csrf_token": token})  # fmt: skip
    assert refused.status_code == 429 and "from this address" in refused.text
    assert _signed_in(app, "vic").get("/review").status_code == 200  # others sign in


# -- pages --------------------------------------------------------------------------------------
def test_the_review_grid_shows_the_queue_best_first_with_small_thumbnails(people, shop):
    viewer = people["vic"]
    page = viewer.get("/review?attribute=category")
    assert page.status_code == 200
    cells = re.findall(r'data-image-id="(\d+)"', page.text)
    assert len(cells) == len(shop)
    # tier 1 (unlabelled, model unsure) first, smallest margin first: the 8 predicted pictures
    predicted = [str(image.id) for image in shop[:8]]
    assert cells[:8] == predicted and "model: Tshirts 0.40" in page.text
    thumb = viewer.get(f"/thumbs/{cells[0]}.jpg")
    assert thumb.headers["content-type"] == "image/jpeg" and len(thumb.content) < 30_000
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 240
    large = viewer.get(f"/thumbs/{cells[0]}.jpg?size=large")
    assert max(Image.open(io.BytesIO(large.content)).size) <= 960
    assert viewer.get(f"/thumbs/{cells[0]}.jpg",
                      headers={"If-None-Match": thumb.headers["etag"]}).status_code == 304  # fmt: skip


def test_the_review_filters(people, shop):
    viewer = people["vic"]
    account = shop[0].account
    page = viewer.get("/review", params={"attribute": "category", "account": account})
    assert set(re.findall(r'data-shortcode="([^"]+)"', page.text)) == {
        image.shortcode for image in shop if image.account == account
    }
    page = viewer.get("/review", params={"attribute": "category", "predicted": "T-shirt"})
    assert len(re.findall(r'data-image-id="', page.text)) == 8  # an alias means its value
    assert viewer.get("/review", params={"since": "yesterday"}).status_code == 400


def test_pictures_are_served_by_id_only(people):
    viewer = people["vic"]
    assert viewer.get("/thumbs/999999999.jpg").status_code == 404
    assert viewer.get("/thumbs/..%2F..%2Fetc%2Fpasswd.jpg").status_code in (404, 422)
    assert viewer.get("/thumbs/1.jpg?size=original").status_code == 404


def test_a_caption_with_a_script_is_shown_as_text(people, shop, migrated):
    with migrated.begin() as connection:
        connection.execute(
            text("UPDATE raw.posts SET caption = :c WHERE shortcode = :s"),
            {"c": '<script>alert("x")</script> & <b>bold</b>', "s": shop[2].shortcode},
        )
    page = people["vic"].get(f"/pictures/{shop[2].id}")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<b>bold" not in page.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_a_label_from_the_grid_is_the_signed_in_persons_and_undoes(people, shop, migrated):
    moderator = people["mo"]
    image = shop[3].id
    before = moderator.get("/api/review/count?attribute=category").json()["remaining"]
    answer = moderator.post("/api/labels", json={"attribute": "category", "labels": [
        {"image_id": image, "value": "tshirt", "expected_label_id": 0}]})  # fmt: skip
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["written"] == 1 and result["stale"] == []
    assert result["labels"][str(image)]["value"] == "Tshirts"  # the alias, canonical
    assert _labels(migrated, image) == [
        ("category", "Tshirts", "moderator", "mo", "mo", "label", "web")
    ]
    after = moderator.get("/api/review/count?attribute=category").json()["remaining"]
    assert after == before - 1  # the model agrees with the label now: out of the queue
    undone = moderator.post(f"/api/jobs/{result['job_id']}/undo").json()
    assert undone["changed"] == 1
    assert _labels(migrated, image)[-1] == ("category", None, "undo", "mo", "mo", "undo", "web")
    page = moderator.get(f"/pictures/{image}")
    assert "undo" in page.text and f"{result['job_id']}</a> label (web)" in page.text


def test_labels_for_unknown_or_repeated_pictures_are_refused_whole(people, shop, migrated):
    moderator = people["mo"]
    label = {"image_id": shop[6].id, "value": "Tops", "expected_label_id": 0}
    unknown = moderator.post("/api/labels", json={"attribute": "category", "labels": [
        label, {**label, "image_id": 999_999_999}]})  # fmt: skip
    assert unknown.status_code == 404 and "999999999" in unknown.json()["error"]
    twice = moderator.post("/api/labels", json={"attribute": "category", "labels": [label, label]})
    assert twice.status_code == 400 and "twice" in twice.json()["error"]
    wrong = moderator.post("/api/labels", json={"attribute": "category", "labels": [
        {**label, "value": "Spaceship"}]})  # fmt: skip
    assert wrong.status_code == 400 and "Spaceship" in wrong.json()["error"]
    assert _labels(migrated, shop[6].id) == []


def test_two_moderators_at_once_nobody_is_overwritten_silently(people, shop, migrated):
    first, second = people["mo"], people["max"]
    image = shop[4].id
    for client in (first, second):
        page = client.get(f"/pictures/{image}")
        assert 'name="expected_label_id" value="0"' in page.text
    drawn = {"attribute": "category", "expected_label_id": "0"}
    answer = _form(first, f"/pictures/{image}/labels", {**drawn, "value": "Tops"},
                   follow_redirects=False)  # fmt: skip
    assert answer.status_code == 303
    stale = _form(second, f"/pictures/{image}/labels", {**drawn, "value": "Shirts"})
    assert stale.status_code == 409
    assert "changed by mo since this page was drawn; it is now Tops" in stale.text
    assert [row[1] for row in _labels(migrated, image)] == ["Tops"]
    # the page drawn again carries the new label: setting it now is a decision, not an accident
    label_id = re.search(
        r'value="category">\s*<input type="hidden" name="expected_label_id" value="(\d+)"',
        stale.text,
    ).group(1)
    answer = _form(second, f"/pictures/{image}/labels",
                   {**drawn, "expected_label_id": label_id, "value": "Shirts"})  # fmt: skip
    assert answer.status_code == 200
    assert [row[1] for row in _labels(migrated, image)] == ["Tops", "Shirts"]
    # the grid's API says the same
    grid = second.post("/api/labels", json={"attribute": "category", "labels": [
        {"image_id": image, "value": "Kurtas", "expected_label_id": int(label_id)}]}).json()  # fmt: skip
    assert grid["written"] == 0 and grid["stale"][0]["now"] == "Shirts"


def _history(engine, job_id: int) -> list[tuple]:
    """A job's labels as the history holds them, without ids and times."""
    with engine.connect() as connection:
        return connection.execute(
            text(
                """
                SELECT i.shortcode, i.position, l.attribute, l.value, l.source, l.moderator,
                       l.created_by, regexp_replace(l.note, '[0-9]+', 'N') AS note,
                       old.value AS replaced, j.kind, j.created_by AS job_by,
                       j.arguments - 'job' AS arguments, j.labels_written
                FROM catalogue.labels l JOIN raw.post_images i ON i.id = l.image_id
                JOIN catalogue.label_jobs j ON j.id = l.job_id
                LEFT JOIN catalogue.labels old ON old.id = l.replaces_label_id
                WHERE l.job_id = :j ORDER BY i.shortcode, i.position
                """
            ),
            {"j": job_id},
        ).all()


def test_bulk_relabel_and_its_undo_leave_the_history_the_cli_leaves(people, shop, migrated):
    moderator = people["mo"]
    account = shop[-1].account
    picked = moderator.get("/relabel", params=[("shortcode", shop[0].shortcode),
                                               ("shortcode", shop[1].shortcode)])  # fmt: skip
    assert f"{shop[0].shortcode} {shop[1].shortcode}</textarea>" in picked.text
    fields = {"kind": "move", "attribute": "colour", "to": "Navy Blue", "account": account}
    dry = _form(moderator, "/relabel", fields)
    count = sum(1 for image in shop if image.account == account)
    assert f"Dry run: {count} labels would change" in dry.text
    assert f"Apply as one job ({count})" in dry.text
    applied = _form(moderator, "/relabel", {**fields, "confirm": "1"})
    job = int(re.search(r"Job (\d+): (\d+) labels changed", applied.text).group(1))
    undo = _form(moderator, f"/jobs/{job}/undo", {}, follow_redirects=False)
    assert undo.status_code == 303
    jobs_page = moderator.get("/jobs").text
    undo_job_id = int(re.search(rf'id="job-{job}">.*?undone by (\d+)', jobs_page, re.S).group(1))
    web = (_history(migrated, job), _history(migrated, undo_job_id))
    # the command line's job on the same rows, by the same person
    who = Who(name="mo", origin="cli")
    cli = run_job(engine=migrated, kind="move", attribute="colour", who=who, to="Navy Blue",
                  selection=Selection(account=account))  # fmt: skip
    cli_undo = undo_job(engine=migrated, job_id=cli.job_id, who=who)
    assert web == (_history(migrated, cli.job_id), _history(migrated, cli_undo.job_id))
    assert len(web[0]) == count and {row.value for row in web[1]} == {None}


def test_jobs_catalogue_and_the_label_csv(people, shop, migrated):
    viewer = people["vic"]
    jobs = viewer.get("/jobs")
    assert jobs.status_code == 200 and "mo" in jobs.text and "Undo" not in jobs.text
    page = viewer.get("/catalogue", params={"attribute": "category", "predicted": "Tshirts"})
    assert page.status_code == 200 and "8 products" in page.text
    exported = viewer.get("/catalogue/labels.csv", params={"predicted": "Tshirts"})
    assert exported.headers["content-type"].startswith("text/csv")
    lines = exported.text.splitlines()
    assert lines[0].startswith("shortcode,position,colour,category") and len(lines) == 1 + 8
    labelled = next(line for line in lines if line.startswith(shop[4].shortcode))
    assert ",Shirts," in labelled  # the label given on the picture page, with its id
    # the label CSV as exported imports without changing anything
    report = import_labels(io.BytesIO(exported.content), engine=migrated, who=Who(name="vic"),
                           dry_run=True)  # fmt: skip
    assert report.refused == [] and report.labels_wanted == report.unchanged


def test_past_its_cap_the_review_counter_says_more_and_the_pages_go_on(people, shop, settings,
                                                                     migrated):  # fmt: skip
    """The queue is counted up to the cap (1,000 in the workbench; 5 here): beyond it the page
    says "5+ left", a smaller queue its exact size, and the Next link follows the queue."""
    exact = people["vic"].get("/api/review/count?attribute=category").json()
    assert exact["more"] is False and exact["remaining"] > 6
    capped = _signed_in(create_app(settings, engine=migrated, count_cap=5), "vic")
    page = capped.get("/review", params={"attribute": "category", "limit": 4})
    assert '<span id="remaining">5+</span> left in the queue' in page.text
    assert capped.get("/api/review/count?attribute=category").json() == {
        "remaining": 5, "more": True, "shown": "5+"}  # fmt: skip
    account = shop[0].account  # a queue of a few pictures: its size, exactly
    few = sum(1 for image in shop if image.account == account)
    assert few <= 5
    narrow = capped.get("/review", params={"attribute": "category", "account": account})
    assert f'<span id="remaining">{few}</span> left' in narrow.text
    seen = []
    while page is not None:
        seen += re.findall(r'data-image-id="(\d+)"', page.text)
        following = re.search(r'<a href="(/review\?[^"]+)">Next 4</a>', page.text)
        page = capped.get(following.group(1).replace("&amp;", "&")) if following else None
    whole = people["vic"].get("/review", params={"attribute": "category"})
    assert seen == re.findall(r'data-image-id="(\d+)"', whole.text)
    assert len(seen) == exact["remaining"]


def test_the_catalogue_pages_on_from_the_last_product_shown(people, shop, settings, migrated,
                                                            monkeypatch):  # fmt: skip
    """Each Next page starts after the last product shown: a product that comes to the front
    meanwhile (a newer post) moves no product onto two pages, and none is left out."""
    from pipeline.web import browse, pages

    monkeypatch.setattr(browse, "PAGE", 3)
    viewer = _signed_in(create_app(settings, engine=migrated, count_cap=5), "vic")
    with migrated.connect() as connection:
        products = connection.execute(
            text(
                "SELECT p.image_id, i.post_id, i.taken_at FROM marketplace.products p "
                "JOIN raw.post_images i ON i.id = p.image_id "
                "ORDER BY i.taken_at DESC, p.shortcode, p.position"
            )
        ).all()
    assert len(products) > 6
    page = viewer.get("/catalogue")
    assert "5+ products" in page.text
    first = re.findall(r'href="/pictures/(\d+)"', page.text)
    assert first == [str(p.image_id) for p in products[:3]]
    oldest = products[-1]
    with migrated.begin() as connection:  # the oldest post comes to the front
        connection.execute(text("UPDATE raw.posts SET taken_at = now() WHERE id = :p"),
                           {"p": oldest.post_id})  # fmt: skip
    try:
        seen = list(first)
        while following := re.search(r'<a id="next" href="([^"]+)">Next 3</a>', page.text):
            page = viewer.get(following.group(1).replace("&amp;", "&"))
            assert page.status_code == 200
            seen += re.findall(r'href="/pictures/(\d+)"', page.text)
    finally:
        with migrated.begin() as connection:
            connection.execute(text("UPDATE raw.posts SET taken_at = :t WHERE id = :p"),
                               {"t": oldest.taken_at, "p": oldest.post_id})  # fmt: skip
    assert len(seen) == len(set(seen))  # none twice
    assert set(seen) == {str(p.image_id) for p in products[:-1] if p.post_id != oldest.post_id}
    filtered = viewer.get("/catalogue", params={"predicted": "Tshirts", "after": "yesterday"})
    assert filtered.status_code == 400 and "not a place in the catalogue" in filtered.text
    few = viewer.get("/catalogue", params={"predicted": "Tshirts", "account": shop[0].account})
    assert re.search(r"<small>\d products</small>", few.text) and 'id="next"' not in few.text
    # the export is every product the filters select, not a page, read in pieces
    monkeypatch.setattr(pages, "CSV_PIECE", 2)
    exported = viewer.get("/catalogue/labels.csv").text.splitlines()[1:]
    with migrated.connect() as connection:
        every = connection.execute(
            text("SELECT shortcode || ',' || position FROM marketplace.products")
        ).scalars()  # fmt: skip
        assert sorted(",".join(line.split(",")[:2]) for line in exported) == sorted(every)


def test_search_by_picture_refuses_big_files_and_says_what_is_missing(
    people, shop, settings, migrated
):
    moderator = people["mo"]
    too_big = moderator.post("/api/similar", files={"photo": ("big.jpg", b"0" * (11 * 2**20))})
    assert too_big.status_code == 413
    with migrated.connect() as connection:
        key = connection.execute(
            text("SELECT object_key FROM raw.images WHERE id = :i"), {"i": shop[0].id}
        ).scalar_one()
    photo = ObjectStore.for_images(settings).get(key)
    answer = moderator.post("/api/similar", files={"photo": ("mine.jpg", photo)})
    assert answer.status_code == 400 and "no category champion" in answer.json()["error"]


def test_search_by_picture_finds_the_product_and_the_picture_page_its_models(
    people, shop, settings, migrated, tmp_path
):
    """A champion whose embedding is the picture's mean colour, the shop predicted once: the photo
    of a catalogued product finds that product first."""
    from pipeline.predict.batch import PredictOptions, predict_catalogue
    from tests.model_artefacts import KnownModel, colour_by_channel, register_model

    known = colour_by_channel()
    known.network.get_layer("colour").name = "category"
    model = KnownModel(known.network, "category", ["Watches", "Handbags", "Sports Shoes"])
    models = ObjectStore.for_models(settings)
    version = register_model(migrated, models, model, tmp_path / "v1", champion=True)
    predict_catalogue(
        engine=migrated, images=ObjectStore.for_images(settings), models=models,
        cache_dir=tmp_path / "artefacts", options=PredictOptions(batch_size=8, workers=2),
    )  # fmt: skip
    with migrated.connect() as connection:
        key = connection.execute(
            text("SELECT object_key FROM raw.images WHERE id = :i"), {"i": shop[5].id}
        ).scalar_one()
    photo = ObjectStore.for_images(settings).get(key)
    viewer = people["vic"]
    found = viewer.post("/api/similar", files={"photo": ("mine.jpg", photo)}, data={"limit": "3"})
    assert found.status_code == 200, found.text
    answer = found.json()
    assert answer["model_version"] == version and len(answer["neighbours"]) == 3
    assert answer["neighbours"][0]["image_id"] == shop[5].id
    assert answer["neighbours"][0]["distance"] < 0.01
    page = _form(viewer, "/search", {}, files={"photo": ("mine.jpg", photo)})
    assert page.status_code == 200 and f"/pictures/{shop[5].id}" in page.text
    picture = viewer.get(f"/pictures/{shop[5].id}").text
    assert version in picture and "champion" in picture


def test_users_command_line(services, migrated):
    env = services.env()
    added = _catalogue(env, "users", "add", "cli-person", "--role", "moderator", stdin=PASSWORD)
    assert added.returncode == 0, added.stderr
    listed = _catalogue(env, "users", "list")
    assert re.search(r"cli-person\s+moderator\s+active", listed.stdout)
    short = _catalogue(env, "users", "reset-password", "cli-person", stdin="short")
    assert short.returncode == 1 and "too short" in short.stderr


def _catalogue(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """The command as a user runs it, a password piped to it."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env, input=stdin + "\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
