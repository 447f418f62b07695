"""Archive import of instaloader-format folders into the real Postgres and S3 server."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pipeline.accounts import upsert_account
from pipeline.collect.archive import import_archive
from pipeline.collect.posts import CollectedImage, CollectedPost, store_post
from pipeline.samples import generate_sample_accounts
from pipeline.storage import ObjectStore
from tests.cli import catalogue


@pytest.fixture
def clean_catalogue(migrated):
    """Each test starts with empty raw tables."""
    with migrated.begin() as connection:
        connection.execute(text("TRUNCATE raw.accounts, raw.quarantine CASCADE"))
    return migrated


@pytest.fixture(scope="module")
def sample_archive(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("archive")
    generate_sample_accounts(dataset, out, size=150, seed=11)
    return out


def _counts(engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: connection.execute(text(f"SELECT count(*) FROM raw.{table}")).scalar_one()
            for table in ("accounts", "posts", "images", "quarantine")
        }


def _manifest(archive: Path) -> list[dict[str, str]]:
    with (archive / "manifest.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_import_loads_every_post_and_picture_once(clean_catalogue, settings, sample_archive):
    store = ObjectStore.for_images(settings)
    manifest = _manifest(sample_archive)
    summary = import_archive(sample_archive, engine=clean_catalogue, store=store, workers=4)

    counts = _counts(clean_catalogue)
    assert counts["posts"] == len({row["shortcode"] for row in manifest}) == summary.posts_new
    assert counts["images"] == len(manifest) == summary.images_new
    assert counts["quarantine"] == 0
    assert counts["accounts"] == len({row["account"] for row in manifest})

    with clean_catalogue.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT p.shortcode, i.position, i.media_id, i.object_key, i.sha256, a.username "
                "FROM raw.images i JOIN raw.posts p ON p.id = i.post_id "
                "JOIN raw.accounts a ON a.id = p.account_id"
            )
        ).all()
    by_place = {(r.shortcode, r.position): r for r in rows}
    for entry in manifest:
        row = by_place[(entry["shortcode"], int(entry["position"]))]
        assert row.media_id == int(entry["media_id"]) and row.username == entry["account"]
        # the stored object is the product photo itself
        original = (sample_archive / entry["file"]).read_bytes()
        assert store.get(row.object_key) == original

    sidecars = [r for r in manifest if int(r["position"]) > 0]
    assert sidecars, "the sample should contain carousels"


def test_reimport_changes_nothing(clean_catalogue, settings, sample_archive):
    store = ObjectStore.for_images(settings)
    import_archive(sample_archive, engine=clean_catalogue, store=store, workers=4)
    before = _counts(clean_catalogue)
    with clean_catalogue.connect() as connection:
        snapshot = connection.execute(
            text("SELECT media_id, like_count, refreshed_at FROM raw.posts ORDER BY media_id")
        ).all()
    again = import_archive(sample_archive, engine=clean_catalogue, store=store, workers=4)
    assert _counts(clean_catalogue) == before
    assert again.posts_new == again.posts_updated == again.images_new == 0
    assert again.objects_written == 0
    with clean_catalogue.connect() as connection:
        assert (
            connection.execute(
                text("SELECT media_id, like_count, refreshed_at FROM raw.posts ORDER BY media_id")
            ).all()
            == snapshot
        )


def test_same_picture_in_two_posts_is_one_object(
    clean_catalogue, settings, sample_archive, tmp_path
):
    archive = tmp_path / "archive"
    shutil.copytree(sample_archive, archive)
    manifest = _manifest(archive)
    first, second = manifest[0], next(r for r in manifest if r["account"] != manifest[0]["account"])
    shutil.copyfile(archive / first["file"], archive / second["file"])
    store = ObjectStore.for_images(settings)
    import_archive(archive, engine=clean_catalogue, store=store, workers=4)
    with clean_catalogue.connect() as connection:
        keys = (
            connection.execute(
                text(
                    "SELECT i.object_key FROM raw.images i JOIN raw.posts p ON p.id = i.post_id "
                    "WHERE (p.shortcode, i.position) IN ((:s1, :p1), (:s2, :p2))"
                ),
                {
                    "s1": first["shortcode"],
                    "p1": int(first["position"]),
                    "s2": second["shortcode"],
                    "p2": int(second["position"]),
                },
            )
            .scalars()
            .all()
        )
    assert len(keys) == 2 and keys[0] == keys[1]


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        pytest.param(lambda p: _write(p, b""), "empty file", id="zero-bytes"),
        pytest.param(
            lambda p: _write(p, p.read_bytes()[: len(p.read_bytes()) // 2]),
            "truncated or corrupt",
            id="truncated",
        ),
        pytest.param(
            lambda p: _write(p, b"<html>not a picture</html>"), "not an image", id="not-an-image"
        ),
        pytest.param(
            lambda p: _write(p, b"\xff\xd8\xff\xe0" + os.urandom(3000)),
            "corrupt|not an image",
            id="corrupt-jpeg",
        ),
        pytest.param(lambda p: p.unlink(), "image file missing", id="missing"),
    ],
)
def test_bad_pictures_are_quarantined_and_the_run_goes_on(
    clean_catalogue, settings, sample_archive, tmp_path, damage, reason
):
    archive = tmp_path / "archive"
    shutil.copytree(sample_archive, archive)
    manifest = _manifest(archive)
    victim = manifest[3]
    damage(archive / victim["file"])
    summary = import_archive(
        archive, engine=clean_catalogue, store=ObjectStore.for_images(settings), workers=4
    )
    assert summary.quarantined == 1
    assert summary.images_new == len(manifest) - 1
    with clean_catalogue.connect() as connection:
        row = connection.execute(
            text("SELECT shortcode, position, reason FROM raw.quarantine")
        ).one()
    assert (row.shortcode, row.position) == (victim["shortcode"], int(victim["position"]))
    assert re.search(reason, row.reason), row.reason


def test_oversized_picture_is_refused_by_the_pixel_guard(
    clean_catalogue, settings, sample_archive, tmp_path
):
    from PIL import Image

    archive = tmp_path / "archive"
    shutil.copytree(sample_archive, archive)
    victim = _manifest(archive)[5]
    Image.new("L", (9000, 9000)).save(archive / victim["file"], "PNG")
    summary = import_archive(
        archive, engine=clean_catalogue, store=ObjectStore.for_images(settings), workers=4
    )
    assert summary.quarantined == 1
    with clean_catalogue.connect() as connection:
        reason = connection.execute(text("SELECT reason FROM raw.quarantine")).scalar_one()
    assert "decompression-bomb guard" in reason


def test_untrusted_names_never_leave_the_archive(
    clean_catalogue, settings, sample_archive, tmp_path
):
    archive = tmp_path / "archive"
    shutil.copytree(sample_archive, archive)
    outside = tmp_path / "secret.jpg"
    shutil.copyfile(next(archive.rglob("*_UTC.jpg")), outside)
    victim = _manifest(archive)[7]
    link = archive / victim["file"]
    link.unlink()
    link.symlink_to(outside)  # a picture that points outside the archive
    (archive / "..evil").mkdir()
    (archive / "Not A User!").mkdir()
    summary = import_archive(
        archive, engine=clean_catalogue, store=ObjectStore.for_images(settings), workers=4
    )
    assert "Not A User!" in summary.skipped_accounts and "..evil" in summary.skipped_accounts
    with clean_catalogue.connect() as connection:
        reasons = connection.execute(text("SELECT input_ref, reason FROM raw.quarantine")).all()
    assert any("outside the archive" in r.reason for r in reasons)


def test_kill_during_import_then_rerun_completes_without_duplicates(
    clean_catalogue, services, settings, sample_archive
):
    env = services.env()
    command = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "import-archive",
        str(sample_archive),
        "--workers",
        "2",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _counts(clean_catalogue)["images"] >= 20:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = _counts(clean_catalogue)["images"]
    assert 0 < partial < len(_manifest(sample_archive)), "the kill should land mid-import"

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    manifest = _manifest(sample_archive)
    counts = _counts(clean_catalogue)
    assert counts["images"] == len(manifest)
    assert counts["posts"] == len({r["shortcode"] for r in manifest})
    store = ObjectStore.for_images(settings)
    with clean_catalogue.connect() as connection:
        keys = connection.execute(text("SELECT DISTINCT object_key FROM raw.images")).scalars()
        assert all(store.exists(key) for key in keys)  # no row without its picture


def test_connections_ended_by_postgres_mid_import_are_replaced(
    clean_catalogue, settings, sample_archive
):
    """The storing threads hold their connections for the whole import; Postgres ending them
    (a restart, an administrator) costs the import nothing."""
    manifest = _manifest(sample_archive)
    ended: list[tuple[int, int]] = []  # (backends ended, images stored at that moment)

    def end_the_import_connections() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ended:
            with clean_catalogue.connect() as connection:
                stored = connection.execute(text("SELECT count(*) FROM raw.images")).scalar_one()
                if stored >= 20:
                    count = connection.execute(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                            "AND application_name = 'catalogue'"
                        )
                    ).scalar_one()
                    ended.append((count, stored))
            time.sleep(0.005)

    terminator = threading.Thread(target=end_the_import_connections)
    terminator.start()
    summary = import_archive(
        sample_archive, engine=clean_catalogue, store=ObjectStore.for_images(settings), workers=4
    )
    terminator.join()
    assert ended and ended[0][0] >= 1 and ended[0][1] < len(manifest), (
        "the connections should be ended mid-import"
    )
    assert summary.images_new == len(manifest) and summary.quarantined == 0
    counts = _counts(clean_catalogue)
    assert counts["images"] == len(manifest)
    assert counts["posts"] == len({row["shortcode"] for row in manifest})


def test_an_import_in_many_chunks_stores_every_post_once_and_caps_the_bytes_held(
    clean_catalogue, settings, sample_archive, monkeypatch
):
    """Posts are read, checked, uploaded and written a chunk at a time; after the first, a chunk
    holds about CHUNK_BYTES of pictures at the bytes per post seen so far."""
    from pipeline.collect import archive

    chunks: list[int] = []
    stored_post_ids = archive._stored_post_ids

    def counting(engine, media_ids):
        chunks.append(len(media_ids))
        return stored_post_ids(engine, media_ids)

    monkeypatch.setattr(archive, "_stored_post_ids", counting)
    monkeypatch.setattr(archive, "CHUNK_POSTS", (5, 40))
    manifest = _manifest(sample_archive)
    per_post = sum((sample_archive / row["file"]).stat().st_size for row in manifest) / len(
        {row["shortcode"] for row in manifest}
    )
    monkeypatch.setattr(archive, "CHUNK_BYTES", int(per_post * 8))

    summary = import_archive(
        sample_archive, engine=clean_catalogue, store=ObjectStore.for_images(settings), workers=3
    )

    counts = _counts(clean_catalogue)
    assert counts["posts"] == len({row["shortcode"] for row in manifest}) == summary.posts_new
    assert counts["images"] == len(manifest) == summary.images_new
    assert sum(chunks) == counts["posts"] and chunks[0] == 5
    # the byte cap, not the 40-post limit, sized the later chunks (pictures vary in size)
    assert all(2 <= size <= 20 for size in chunks[1:-1]), chunks


def test_more_threads_than_the_pool_holds_share_the_rest(clean_catalogue, settings, sample_archive):
    """Threads beyond what the engine's pool can hold for the whole import take a connection per
    post instead of waiting for one that is never returned."""
    small = create_engine(clean_catalogue.url, pool_size=2, max_overflow=1, pool_timeout=5)
    try:
        summary = import_archive(
            sample_archive, engine=small, store=ObjectStore.for_images(settings), workers=6
        )
    finally:
        small.dispose()
    manifest = _manifest(sample_archive)
    assert summary.images_new == len(manifest) == _counts(clean_catalogue)["images"]


def _post(media_id: int, image_ids: list[int], picture: bytes) -> CollectedPost:
    return CollectedPost(
        shortcode=f"P{media_id}",
        media_id=media_id,
        taken_at=datetime(2026, 5, 1, tzinfo=UTC),
        media_type="sidecar" if len(image_ids) > 1 else "image",
        caption="linen shirt #linen",
        hashtags=["linen"],
        like_count=3,
        comment_count=0,
        location=None,
        node={"id": str(media_id)},
        images=[
            CollectedImage(media_id=i, position=n, read=lambda: picture, source_ref=f"test/{i}")
            for n, i in enumerate(image_ids)
        ],
        source="archive",
    )


def test_a_post_taken_for_new_that_is_stored_already_is_settled_by_the_upsert(
    clean_catalogue, settings, sample_archive
):
    """The import inserts posts it found new without the upsert; when another run stored one
    meanwhile, the upsert settles it. A picture id stored under another post stays there."""
    store = ObjectStore.for_images(settings)
    picture = (sample_archive / _manifest(sample_archive)[0]["file"]).read_bytes()
    with clean_catalogue.begin() as connection:
        account_id = upsert_account(connection=connection, username="racing_shop").id

    def stored(post: CollectedPost):
        return store_post(
            db=clean_catalogue, store=store, account_id=account_id, account="racing_shop",
            post=post, known_new=True,
        )  # fmt: skip

    first = stored(_post(1001, [11, 12], picture))
    assert (first.post_inserted, first.post_updated, first.images_inserted) == (True, False, 2)
    again = stored(_post(1001, [11, 12], picture))  # another run stored it meanwhile
    assert (again.post_inserted, again.post_updated, again.images_inserted) == (False, False, 0)
    assert again.post_id == first.post_id
    # a new post whose first picture is stored already (second in post 1001)
    overlap = stored(_post(1002, [12, 13], picture))
    assert (overlap.post_inserted, overlap.post_updated, overlap.images_inserted) == (
        True,
        False,
        1,
    )
    counts = _counts(clean_catalogue)
    assert (counts["posts"], counts["images"]) == (2, 3)
    with clean_catalogue.connect() as connection:
        images = {
            row.media_id: (row.post_id, row.position)
            for row in connection.execute(
                text("SELECT media_id, post_id, position FROM raw.images")
            )
        }
    assert images == {11: (first.post_id, 0), 12: (first.post_id, 1), 13: (overlap.post_id, 1)}


def test_a_held_connection_is_transactional_again_after_a_new_posts_single_statement(
    clean_catalogue, settings, sample_archive
):
    """A new post's write is one statement sent in autocommit on the import's held connection;
    afterwards the connection is back in transactions: work that fails is rolled back whole."""
    store = ObjectStore.for_images(settings)
    picture = (sample_archive / _manifest(sample_archive)[0]["file"]).read_bytes()
    with clean_catalogue.begin() as connection:
        account_id = upsert_account(connection=connection, username="held_shop").id
    with clean_catalogue.connect() as held:
        for media_id in (2001, 2001):  # new, then stored already: the upsert in a transaction
            outcome = store_post(
                db=held, store=store, account_id=account_id, account="held_shop",
                post=_post(media_id, [21], picture), known_new=True,
            )  # fmt: skip
        assert outcome.post_id is not None and not outcome.post_inserted
        with pytest.raises(RuntimeError), held.begin():
            held.execute(text("UPDATE raw.posts SET caption = 'changed' WHERE media_id = 2001"))
            raise RuntimeError("the rest of the work failed")
        assert (
            held.execute(text("SELECT caption FROM raw.posts WHERE media_id = 2001")).scalar_one()
            == "linen shirt #linen"
        )
    assert (_counts(clean_catalogue)["posts"], _counts(clean_catalogue)["images"]) == (1, 1)


def test_purge_an_account_deletes_rows_and_pictures_and_keeps_an_audit_record(
    clean_catalogue, settings, sample_archive, services
):
    store = ObjectStore.for_images(settings)
    import_archive(sample_archive, engine=clean_catalogue, store=store, workers=4)
    manifest = _manifest(sample_archive)
    account = manifest[0]["account"]
    with clean_catalogue.connect() as connection:
        keys = (
            connection.execute(
                text(
                    "SELECT i.object_key FROM raw.images i JOIN raw.posts p ON p.id = i.post_id "
                    "JOIN raw.accounts a ON a.id = p.account_id WHERE a.username = :u"
                ),
                {"u": account},
            )
            .scalars()
            .all()
        )
    result = catalogue(
        services.env(CATALOGUE_MODERATOR="legal-team"), "purge", account, "--reason", "takedown #1"
    )
    assert result.returncode == 0, result.stderr
    assert keys and not any(store.exists(key) for key in keys)
    with clean_catalogue.connect() as connection:
        assert (
            connection.execute(
                text("SELECT count(*) FROM raw.accounts WHERE username = :u"), {"u": account}
            ).scalar_one()
            == 0
        )
        audit = connection.execute(text("SELECT * FROM raw.purges")).one()
    assert (audit.target_kind, audit.target, audit.requested_by) == (
        "account",
        account,
        "legal-team",
    )
    assert audit.images == len(keys) and audit.reason == "takedown #1"
    others = [r for r in manifest if r["account"] != account]
    assert _counts(clean_catalogue)["images"] == len(others)

    unknown = catalogue(services.env(), "purge", account)
    assert unknown.returncode == 1 and "neither a collected post" in unknown.stderr


def test_purge_one_post_keeps_a_picture_another_post_shares(
    clean_catalogue, settings, sample_archive, tmp_path
):
    from pipeline.collect.purge import purge

    archive = tmp_path / "archive"
    shutil.copytree(sample_archive, archive)
    manifest = _manifest(archive)
    first = next(r for r in manifest if r["position"] == "0")
    second = next(r for r in manifest if r["account"] != first["account"])
    shutil.copyfile(archive / first["file"], archive / second["file"])
    store = ObjectStore.for_images(settings)
    import_archive(archive, engine=clean_catalogue, store=store, workers=4)
    outcome = purge(engine=clean_catalogue, store=store, target=first["shortcode"])
    assert outcome.target_kind == "post" and outcome.objects_deleted == 0
    with clean_catalogue.connect() as connection:
        key = connection.execute(
            text(
                "SELECT i.object_key FROM raw.images i JOIN raw.posts p ON p.id = i.post_id "
                "WHERE p.shortcode = :s AND i.position = :pos"
            ),
            {"s": second["shortcode"], "pos": int(second["position"])},
        ).scalar_one()
    assert store.exists(key)  # the other account's post still shows the same picture


def test_an_unreadable_post_file_is_quarantined_and_the_rest_imported(
    clean_catalogue, settings, sample_archive, tmp_path
):
    archive = tmp_path / "archive"
    shutil.copytree(sample_archive, archive)
    victim = sorted(archive.glob("*/*_UTC.json.xz"))[0]
    victim.write_bytes(b"not xz at all")
    summary = import_archive(archive, engine=clean_catalogue,
                             store=ObjectStore.for_images(settings), workers=4)  # fmt: skip
    posts = len({row["shortcode"] for row in _manifest(archive)})
    assert summary.posts_new == posts - 1
    with clean_catalogue.connect() as connection:
        row = connection.execute(text("SELECT input_ref, reason FROM raw.quarantine")).one()
    assert row.input_ref == str(victim.relative_to(archive))
    assert "unreadable post file" in row.reason


# -- archives written here with instaloader's own code: small, one case each ---------------------
PROFILE_ID = 52_000_000_001


def _picture(media_id: int) -> bytes:
    """A tiny JPEG of its own colour (a distinct object per media id)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    colour = (media_id * 37 % 256, media_id * 91 % 256, media_id * 53 % 256)
    Image.new("RGB", (12, 16), colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _loader(root: Path):
    import instaloader

    pattern = str(root).replace("{", "{{").replace("}", "}}") + os.sep + "{target}"
    return instaloader.Instaloader(quiet=True, dirname_pattern=pattern)


def _write_profile(
    root: Path, username: str, *, profile_id: int = PROFILE_ID, full_name: object = "A Shop",
    seen: float | None = None, business: bool = True,
) -> None:  # fmt: skip
    """A profile folder as `instaloader <profile>` writes it; `seen`: when it was downloaded."""
    import instaloader

    loader = _loader(root)
    profile = instaloader.Profile(
        loader.context,
        {
            "id": str(profile_id), "username": username, "full_name": full_name,
            "is_business_account": business, "is_private": False,
            "edge_followed_by": {"count": 1200}, "edge_follow": {"count": 10},
        },
    )  # fmt: skip
    (root / username).mkdir(parents=True, exist_ok=True)
    base = root / username / f"{username}_{profile_id}"
    loader.save_metadata_json(str(base), profile)
    if seen is not None:
        os.utime(f"{base}.json.xz", (seen, seen))


def _write_post(
    root: Path, username: str, *, media_id: int, slides: list[int] | None = None,
    caption: str = "linen shirt #linen", owner_id: int = PROFILE_ID, shortcode: str | None = None,
    taken_at: int = 1_780_000_000, extra: dict | None = None, seen: float | None = None,
) -> Path:  # fmt: skip
    """A post as `instaloader <profile>` writes it: `<date>_UTC.json.xz` and its pictures
    (`_1.jpg`, `_2.jpg`... for a carousel of `slides` media ids); `seen`: when it was listed."""
    import instaloader

    loader = _loader(root)
    folder = root / username
    folder.mkdir(parents=True, exist_ok=True)
    node: dict = {
        "__typename": "GraphSidecar" if slides else "GraphImage",
        "id": str(media_id),
        "shortcode": shortcode or instaloader.Post.mediaid_to_shortcode(media_id),
        "taken_at_timestamp": taken_at,
        "owner": {"id": str(owner_id)},
        "is_video": False,
        "edge_media_to_caption": {"edges": [{"node": {"text": caption}}]},
        "edge_media_preview_like": {"count": 5},
        "edge_media_to_comment": {"count": 1},
        "location": None,
        **(extra or {}),
    }
    if slides:
        node["edge_sidecar_to_children"] = {
            "edges": [
                {"node": {"__typename": "GraphImage", "id": str(s), "is_video": False}}
                for s in slides
            ]
        }
    stem = datetime.fromtimestamp(taken_at, UTC).strftime("%Y-%m-%d_%H-%M-%S_UTC")
    for number, picture_id in enumerate(slides or [media_id], start=1):
        name = f"{stem}_{number}.jpg" if slides else f"{stem}.jpg"
        (folder / name).write_bytes(_picture(picture_id))
    loader.save_metadata_json(str(folder / stem), instaloader.Post(loader.context, node))
    written = folder / f"{stem}.json.xz"
    if seen is not None:
        os.utime(written, (seen, seen))
    return written


def _import(engine, settings, archive: Path):
    return import_archive(archive, engine=engine, store=ObjectStore.for_images(settings), workers=2)


def _slides(engine, media_id: int) -> dict[int, tuple[int, bool]]:
    """media id -> (position, live) of the post's pictures."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT i.media_id, i.position, i.removed_at IS NULL AS live FROM raw.images i "
                "JOIN raw.posts p ON p.id = i.post_id WHERE p.media_id = :m"
            ),
            {"m": media_id},
        ).all()
    return {row.media_id: (row.position, row.live) for row in rows}


def _reasons(engine) -> dict[str, str]:
    with engine.connect() as connection:
        return dict(connection.execute(text("SELECT input_ref, reason FROM raw.quarantine")).all())


def test_text_postgres_refuses_is_cleaned_and_the_post_stored(clean_catalogue, settings, tmp_path):
    """NUL (and lone surrogates) in any text of a post or profile: the post is stored with the
    text cleaned and the cleaned fields recorded, the run goes on, a rerun changes nothing."""
    archive = tmp_path / "archive"
    _write_profile(archive, "nul_shop", full_name="Nul\x00 Shop")
    _write_post(
        archive, "nul_shop", media_id=7001, caption="linen\x00 shirt #linen\x00",
        extra={"location": {"id": "1", "name": "Mum\x00bai", "slug": "x"},
               "accessibility_caption": "a \ud800 shirt", "nul\x00key": ["v\x00"]},
    )  # fmt: skip
    _write_post(archive, "nul_shop", media_id=7002, taken_at=1_780_000_100)

    first = _import(clean_catalogue, settings, archive)
    assert (first.posts_new, first.images_new, first.quarantined) == (2, 2, 0)
    assert first.posts_cleaned == 1
    with clean_catalogue.connect() as connection:
        post = connection.execute(
            text("SELECT caption, hashtags, location, node, cleaned FROM raw.posts "
                 "WHERE media_id = 7001")
        ).one()  # fmt: skip
        account = connection.execute(text("SELECT full_name, cleaned FROM raw.accounts")).one()
    assert post.caption == "linen shirt #linen" and post.hashtags == ["linen"]
    assert post.location["name"] == "Mumbai" and post.node["nulkey"] == ["v"]
    assert post.node["accessibility_caption"] == "a \ufffd shirt"
    assert sorted(post.cleaned) == ["caption", "location", "node"]  # no NUL in a hashtag
    assert (account.full_name, account.cleaned) == ("Nul Shop", ["full_name"])

    again = _import(clean_catalogue, settings, archive)
    assert (again.posts_new, again.posts_updated, again.images_new, again.quarantined) == (
        0, 0, 0, 0,
    )  # fmt: skip
    assert _counts(clean_catalogue) == {"accounts": 1, "posts": 2, "images": 2, "quarantine": 0}


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        pytest.param([11, 12, 13], [13, 11], id="slide-deleted-and-reordered"),
        pytest.param([11, 12], [12, 11], id="swapped"),
        pytest.param([11, 12, 13], [11, 13], id="slide-deleted"),
    ],
)
@pytest.mark.parametrize("newest_first", [True, False], ids=["newest-first", "oldest-first"])
def test_slides_follow_the_newest_listing_in_either_order(
    clean_catalogue, settings, tmp_path, older, newer, newest_first
):
    """Two archives of one carousel, listed at different times: slides are matched by their own
    media id, positions follow the newest listing, and a slide it lacks is kept as removed."""
    archives = {}
    for name, slides, seen in (("old", older, 1_780_000_000), ("new", newer, 1_790_000_000)):
        archives[name] = tmp_path / name
        _write_profile(archives[name], "carousel_shop")
        _write_post(archives[name], "carousel_shop", media_id=9000, slides=slides, seen=seen)

    order = ["new", "old"] if newest_first else ["old", "new"]
    for name in order + order:  # each twice: a rerun changes nothing
        summary = _import(clean_catalogue, settings, archives[name])
        assert summary.quarantined == 0

    expected = {media_id: (position, True) for position, media_id in enumerate(newer)}
    slides = _slides(clean_catalogue, 9000)
    assert {m: s for m, s in slides.items() if s[1]} == expected
    assert {m for m, s in slides.items() if not s[1]} == set(older) - set(newer)
    counts = _counts(clean_catalogue)
    assert (counts["posts"], counts["images"]) == (1, len(set(older) | set(newer)))


def test_a_picture_id_stored_under_another_post_is_quarantined_not_moved(
    clean_catalogue, settings, tmp_path
):
    """A slide whose media id another post holds stays with that post; the refusal is counted."""
    archive = tmp_path / "archive"
    _write_profile(archive, "overlap_shop")
    _write_post(archive, "overlap_shop", media_id=9100, slides=[21, 22])
    _import(clean_catalogue, settings, archive)
    second = tmp_path / "second"
    _write_profile(second, "overlap_shop")
    _write_post(second, "overlap_shop", media_id=9200, slides=[23, 22], taken_at=1_780_000_500)
    for _ in range(2):
        summary = _import(clean_catalogue, settings, second)
        assert (summary.quarantined, summary.posts_refused) == (1, 0)
    assert _slides(clean_catalogue, 9100) == {21: (0, True), 22: (1, True)}
    assert _slides(clean_catalogue, 9200) == {23: (0, True)}
    (reason,) = _reasons(clean_catalogue).values()
    assert "already stored under post" in reason


def test_a_shortcode_stored_under_another_media_id_is_refused_with_its_reason(
    clean_catalogue, settings, tmp_path
):
    archive = tmp_path / "archive"
    _write_profile(archive, "code_shop")
    _write_post(archive, "code_shop", media_id=9300, shortcode="SameCode1")
    _write_post(archive, "code_shop", media_id=9400, shortcode="SameCode1", taken_at=1_780_000_900)
    _write_post(archive, "code_shop", media_id=9500, taken_at=1_780_001_000)
    for run in range(2):
        summary = _import(clean_catalogue, settings, archive)
        assert (summary.posts_seen, summary.posts_refused) == (3, 1)
        assert summary.posts_new == (2 if run == 0 else 0)
    counts = _counts(clean_catalogue)
    assert (counts["posts"], counts["images"], counts["quarantine"]) == (2, 2, 1)
    ((ref, reason),) = _reasons(clean_catalogue).items()
    assert ref.startswith("code_shop/") and "shortcode SameCode1 is already stored" in reason


def test_a_renamed_account_is_one_account_that_keeps_its_old_name(
    clean_catalogue, settings, tmp_path
):
    """Two profile folders with the same Instagram id under two names (the shop renamed itself
    between two downloads): one account, named as the newer download says, the old name kept."""
    archive = tmp_path / "archive"
    _write_profile(archive, "old_name", seen=1_780_000_000)
    _write_post(archive, "old_name", media_id=9601)
    _write_profile(archive, "new_name", seen=1_790_000_000)
    _write_post(archive, "new_name", media_id=9601)
    _write_post(archive, "new_name", media_id=9602, taken_at=1_780_009_000)
    for _ in range(2):
        summary = _import(clean_catalogue, settings, archive)
        assert summary.posts_refused == 0 and summary.quarantined == 0
        assert summary.accounts == ["new_name"]
    counts = _counts(clean_catalogue)
    assert (counts["accounts"], counts["posts"], counts["images"]) == (1, 2, 2)
    with clean_catalogue.connect() as connection:
        account = connection.execute(text("SELECT id, username FROM raw.accounts")).one()
        names = connection.execute(
            text("SELECT username FROM raw.account_names WHERE account_id = :a ORDER BY seen_from"),
            {"a": account.id},
        ).scalars().all()  # fmt: skip
    assert account.username == "new_name" and names == ["old_name", "new_name"]


def test_an_archive_of_the_old_name_after_the_account_was_renamed(
    clean_catalogue, settings, tmp_path
):
    """The account is stored under its new name; an archive downloaded under its old name later
    adds its posts to the same account and leaves the name alone."""
    with clean_catalogue.begin() as connection:
        upsert_account(connection=connection, username="renamed_shop", instagram_id=PROFILE_ID)
    archive = tmp_path / "archive"
    _write_profile(archive, "first_name", seen=1_700_000_000)
    _write_post(archive, "first_name", media_id=9701)
    summary = _import(clean_catalogue, settings, archive)
    assert summary.accounts == ["renamed_shop"] and summary.posts_new == 1
    with clean_catalogue.connect() as connection:
        assert connection.execute(text("SELECT username FROM raw.accounts")).scalars().all() == [
            "renamed_shop"
        ]
        assert set(
            connection.execute(text("SELECT username FROM raw.account_names")).scalars()
        ) == {"renamed_shop", "first_name"}


def test_a_post_file_of_another_account_goes_to_its_owner_or_is_refused(
    clean_catalogue, settings, tmp_path
):
    archive = tmp_path / "archive"
    _write_profile(archive, "shop_one", profile_id=PROFILE_ID)
    _write_profile(archive, "shop_two", profile_id=PROFILE_ID + 1)
    _write_post(archive, "shop_one", media_id=9801)
    _write_post(archive, "shop_one", media_id=9802, owner_id=PROFILE_ID + 1, taken_at=1_780_000_700)
    _write_post(archive, "shop_one", media_id=9803, owner_id=123, taken_at=1_780_000_800)
    for _ in range(2):
        summary = _import(clean_catalogue, settings, archive)
        assert summary.posts_refused == 1
    with clean_catalogue.connect() as connection:
        owners = dict(
            connection.execute(
                text("SELECT p.media_id, a.username FROM raw.posts p "
                     "JOIN raw.accounts a ON a.id = p.account_id")
            ).all()
        )  # fmt: skip
    assert owners == {9801: "shop_one", 9802: "shop_two"}
    ((ref, reason),) = _reasons(clean_catalogue).items()
    assert ref.endswith(".json.xz") and "belongs to Instagram id 123" in reason


def test_a_post_file_cannot_reach_an_account_the_import_refuses(
    clean_catalogue, settings, tmp_path
):
    """A personal account is not collected; a post of its, put in a business shop's folder, is
    not stored under it either."""
    archive = tmp_path / "archive"
    _write_profile(archive, "business_shop", profile_id=PROFILE_ID)
    _write_profile(archive, "a_person", profile_id=PROFILE_ID + 1, business=False)
    _write_post(archive, "business_shop", media_id=9811)
    _write_post(archive, "business_shop", media_id=9812, owner_id=PROFILE_ID + 1,
                taken_at=1_780_000_700)  # fmt: skip

    summary = _import(clean_catalogue, settings, archive)

    assert summary.posts_refused == 1 and "a_person" in summary.skipped_accounts
    with clean_catalogue.connect() as connection:
        stored = connection.execute(text("SELECT media_id FROM raw.posts")).scalars().all()
    assert stored == [9811]


@pytest.mark.parametrize(
    ("profile_id", "full_name"),
    [
        pytest.param(2**64, "A Shop", id="id-beyond-bigint"),
        pytest.param(PROFILE_ID, {"text": "not a name"}, id="full-name-not-text"),
    ],
)
def test_a_hostile_profile_file_never_stops_the_import(
    clean_catalogue, settings, tmp_path, profile_id, full_name
):
    archive = tmp_path / "archive"
    _write_profile(archive, "odd_shop", profile_id=profile_id, full_name=full_name)
    _write_post(archive, "odd_shop", media_id=9821)
    _write_profile(archive, "next_shop", profile_id=PROFILE_ID + 7)
    _write_post(archive, "next_shop", media_id=9822, owner_id=PROFILE_ID + 7)

    for _ in range(2):  # and a rerun ends the same
        _import(clean_catalogue, settings, archive)

    with clean_catalogue.connect() as connection:
        accounts = dict(
            connection.execute(text("SELECT username, full_name FROM raw.accounts")).all()
        )
        posts = connection.execute(text("SELECT count(*) FROM raw.posts")).scalar_one()
    assert accounts["next_shop"] == "A Shop" and accounts["odd_shop"] in (None, "A Shop")
    assert posts == 2


def test_a_post_file_that_expands_beyond_the_cap_is_refused(
    clean_catalogue, settings, tmp_path, monkeypatch
):
    """A small `.json.xz` that expands to more than the cap is refused without expanding it."""
    from pipeline.collect import archive_files as archive_module

    monkeypatch.setattr(archive_module, "MAX_POST_FILE_BYTES", 64 * 1024)
    archive = tmp_path / "archive"
    _write_profile(archive, "bomb_shop")
    bomb = _write_post(archive, "bomb_shop", media_id=9901, caption="x" * 200_000)
    _write_post(archive, "bomb_shop", media_id=9902, taken_at=1_780_000_300)
    assert bomb.stat().st_size < 4096
    summary = _import(clean_catalogue, settings, archive)
    assert (summary.posts_new, summary.posts_refused) == (1, 1)
    reason = _reasons(clean_catalogue)[str(bomb.relative_to(archive))]
    assert "expands to more than 65,536 bytes" in reason


def test_a_picture_beyond_the_size_limit_is_refused_unread(
    clean_catalogue, settings, tmp_path, monkeypatch
):
    """A sparse picture file far above the limit is refused from its size alone."""
    from pipeline.collect.images import MAX_BYTES

    archive = tmp_path / "archive"
    _write_profile(archive, "sparse_shop")
    post = _write_post(archive, "sparse_shop", media_id=9951)
    picture = post.with_name(post.name.replace(".json.xz", ".jpg"))
    with picture.open("r+b") as handle:
        handle.truncate(1024**3)  # 1 GiB, no disk used
    real_read_bytes = Path.read_bytes

    def read_bytes(self):
        assert self != picture, "the oversized picture was read in full"
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    summary = _import(clean_catalogue, settings, archive)
    assert (summary.posts_new, summary.quarantined) == (1, 1)
    reason = _reasons(clean_catalogue)[str(picture.relative_to(archive)).removesuffix(".jpg")]
    assert f"file too big: {1024**3:,} bytes > limit {MAX_BYTES:,}" in reason


def test_a_smaller_sample_imported_after_a_larger_one_settles_every_post(
    clean_catalogue, settings, dataset, tmp_path
):
    """The sample generator groups products into posts by the sample's size, so the same media
    ids come as other posts and carousels in two sizes (`samples --size 200` after `--size
    2000` stopped the import): every post settles, refusals are counted, a rerun is exact."""
    large, small = tmp_path / "large", tmp_path / "small"
    generate_sample_accounts(dataset, large, size=300, seed=11)
    generate_sample_accounts(dataset, small, size=40, seed=11)
    _import(clean_catalogue, settings, large)
    first = _import(clean_catalogue, settings, small)
    settled = _counts(clean_catalogue)
    again = _import(clean_catalogue, settings, small)
    assert _counts(clean_catalogue) == settled
    assert (again.posts_new, again.posts_updated, again.images_new) == (0, 0, 0)
    assert again.posts_seen == first.posts_seen and again.quarantined == first.quarantined
    assert first.posts_seen == len({row["shortcode"] for row in _manifest(small)})
