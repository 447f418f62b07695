"""Similar items on real parts: pictures imported from an instaloader archive into the real object
store, embedded by the predict pass with a champion built on the shared ImageNet MobileNetV2
weights, and searched through pgvector's HNSW index, the command line and the analysts' SQL
function."""

from __future__ import annotations

import io
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import create_engine, text

from pipeline.collect.archive import import_archive
from pipeline.predict.batch import PredictOptions, predict_catalogue
from pipeline.samples.archive import Account, PlannedPost, write_accounts
from pipeline.samples.listings import read_catalogue
from pipeline.similar.embeddings import index_name
from pipeline.similar.search import (
    SimilarError,
    catalogued_query,
    embedding_version,
    nearest,
)
from pipeline.storage import ObjectStore
from pipeline.train import registry
from tests.catalogue_rows import reset_catalogue
from tests.cli import catalogue
from tests.model_artefacts import (
    KnownModel,
    colour_by_channel,
    pretrained_category,
    register_model,
)

TYPES = ("Watches", "Handbags", "Sports Shoes")
PER_TYPE = 5


def imagenet_category_model() -> KnownModel:
    """The product's mobilenet_v2_035 with ImageNet's backbone and a seeded, untrained category
    head and embedding layer: its embeddings are (a fixed projection of) ImageNet features, which
    tell watches, handbags and shoes apart."""
    from pipeline.train.pretrained import MissingWeights

    try:
        return pretrained_category(list(TYPES))
    except MissingWeights as exc:
        pytest.skip(f"the ImageNet weights are not at hand: {exc}")


def mean_colour_category_model() -> KnownModel:
    """A different 'category' network whose embedding is the picture's mean colour."""
    known = colour_by_channel()
    known.network.get_layer("colour").name = "category"
    return KnownModel(known.network, "category", ["Watches", "Handbags", "Sports Shoes"])


def _reencoded(path: Path, quality: int = 60) -> bytes:
    with Image.open(path) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=quality)
        return out.getvalue()


@pytest.fixture(scope="module")
def stores(settings):
    return ObjectStore.for_images(settings), ObjectStore.for_models(settings)


@pytest.fixture(scope="module")
def shop(migrated, dataset, stores, tmp_path_factory):
    """@similar_shop posts 5 watches, 5 handbags and 5 sports shoes; @reseller reposts the first
    watch re-encoded. Returns the first watch's shortcode, the copy's, and each shortcode's type."""
    with migrated.begin() as connection:
        connection.execute(text("TRUNCATE catalogue.model_versions, catalogue.dataset_snapshots "
                                "CASCADE"))  # fmt: skip
    reset_catalogue(migrated)
    products = read_catalogue(dataset / "styles.csv", dataset / "images").products
    chosen = []
    for kind in TYPES:
        of_kind = sorted(
            (p for p in products if p.article_type == kind), key=lambda p: p.product_id
        )
        chosen += of_kind[:PER_TYPE]
    images = tmp_path_factory.mktemp("similar-images")
    for product in chosen:
        shutil.copy(dataset / "images" / product.image_file, images / product.image_file)
    original = chosen[0]
    (images / "copy.jpg").write_bytes(_reencoded(images / original.image_file))
    copy = replace(original, product_id=original.product_id + 10_000_000, image_file="copy.jpg",
                   username="reseller")  # fmt: skip
    accounts = {name: Account(name, 1000 + i, name, "Clothing (Brand)", 10, 1)
                for i, name in enumerate(("similar_shop", "reseller"))}  # fmt: skip
    plans = {
        "similar_shop": [PlannedPost("GraphImage", (p,)) for p in chosen],
        "reseller": [PlannedPost("GraphImage", (copy,))],
    }
    archive = tmp_path_factory.mktemp("similar-archive")
    manifest = write_accounts(archive, accounts, plans, seed=1, images_dir=images,
                              image_size=None)  # fmt: skip
    import_archive(archive, engine=migrated, store=stores[0], workers=2)
    types = {p.product_id: p.article_type for p in chosen}
    shortcode = {product_id: code for _, code, _, _, product_id, _ in manifest}
    return {
        "original": shortcode[original.product_id],
        "copy": shortcode[copy.product_id],
        "copy_file": images / "copy.jpg",
        "kinds": {shortcode[i]: kind for i, kind in types.items()},
    }


def _predict(engine, stores, tmp_path, **options):
    return predict_catalogue(
        engine=engine, images=stores[0], models=stores[1], cache_dir=tmp_path / "artefacts",
        options=PredictOptions(batch_size=8, workers=2, **options),
    )  # fmt: skip


@pytest.fixture(scope="module")
def embedded(migrated, shop, stores, tmp_path_factory):
    """The ImageNet champion registered and the shop predicted once."""
    folder = tmp_path_factory.mktemp("imagenet-model")
    version = register_model(migrated, stores[1], imagenet_category_model(), folder / "v1",
                             champion=True)  # fmt: skip
    run = _predict(migrated, stores, folder)
    return {"version": version, "run": run, "work": folder}


def _count(engine, sql: str, **params) -> int:
    with engine.connect() as connection:
        return connection.execute(text(sql), params).scalar_one()


def test_each_picture_is_embedded_and_hashed_once_and_a_rerun_adds_nothing(
    migrated, shop, embedded, stores, tmp_path
):
    pictures = len(shop["kinds"]) + 1
    assert embedded["run"].embedded == pictures
    version = embedding_version(migrated)
    assert _count(migrated, "SELECT count(*) FROM catalogue.image_embeddings "
                  "WHERE model_version_id = :v", v=version.id) == pictures  # fmt: skip
    assert _count(migrated, "SELECT count(*) FROM catalogue.image_hashes") == pictures
    assert _count(migrated, "SELECT count(DISTINCT vector_dims(embedding)) "
                  "FROM catalogue.image_embeddings") == 1  # fmt: skip
    # L2-normalised
    assert _count(migrated, "SELECT count(*) FROM catalogue.image_embeddings "
                  "WHERE abs(vector_norm(embedding) - 1) > 1e-4") == 0  # fmt: skip
    assert _count(migrated, "SELECT count(*) FROM pg_indexes WHERE indexname = :n",
                  n=index_name(version.id)) == 1  # fmt: skip

    again = _predict(migrated, stores, tmp_path)
    assert (again.planned, again.embedded) == (0, 0)
    everything = _predict(migrated, stores, tmp_path, everything=True)
    assert everything.embedded == pictures  # offered again, kept once
    assert _count(migrated, "SELECT count(*) FROM catalogue.image_embeddings") == pictures


def test_pictures_scored_before_embeddings_existed_are_embedded_by_the_next_run(
    migrated, shop, embedded, stores, tmp_path
):
    version = embedding_version(migrated)
    with migrated.begin() as connection:
        connection.execute(
            text("DELETE FROM catalogue.image_embeddings WHERE image_id IN "
                 "(SELECT id FROM raw.images ORDER BY id LIMIT 3)")
        )  # fmt: skip
    run = _predict(migrated, stores, tmp_path)
    assert (run.planned, run.embedded) == (3, 3)
    assert _count(migrated, "SELECT count(*) FROM catalogue.image_embeddings "
                  "WHERE model_version_id = :v", v=version.id) == len(shop["kinds"]) + 1  # fmt: skip


def test_the_nearest_products_are_the_repost_then_the_same_article_type(migrated, shop, embedded):
    version = embedding_version(migrated)
    query = catalogued_query(migrated, version, shop["original"])
    found = nearest(migrated, version, query, limit=PER_TYPE)
    assert found[0].shortcode == shop["copy"] and found[0].account == "reseller"
    assert found[0].distance < found[1].distance / 2  # clearly the nearest
    watches = [n.shortcode for n in found[1:]]
    assert all(shop["kinds"][code] == "Watches" for code in watches), watches
    assert [n.distance for n in found] == sorted(n.distance for n in found)

    # and for every picture, most of its 4 nearest are of its own type
    hits = total = 0
    for code, kind in shop["kinds"].items():
        neighbours = nearest(migrated, version, catalogued_query(migrated, version, code), limit=4)
        codes = [n.shortcode for n in neighbours if n.shortcode != shop["copy"]][:3]
        hits += sum(shop["kinds"][c] == kind for c in codes)
        total += len(codes)
    assert hits / total >= 0.8

    only_reseller = nearest(migrated, version, query, limit=3, account="reseller")
    assert [n.shortcode for n in only_reseller] == [shop["copy"]]
    with pytest.raises(SimilarError, match="no account 'nobody'"):
        nearest(migrated, version, query, limit=3, account="nobody")


def test_the_reader_role_calls_similar_products_and_cannot_write(
    migrated, settings, services, shop, embedded
):
    reader = settings.role_names["reader"]
    engine = create_engine(services.database_url)
    try:
        with engine.connect() as connection:
            connection.execute(text(f'SET ROLE "{reader}"'))
            rows = connection.execute(
                text("SELECT shortcode, account, distance "
                     "FROM marketplace.similar_products(:s, 0, 3)"), {"s": shop["original"]}
            ).all()  # fmt: skip
            assert rows[0].shortcode == shop["copy"] and len(rows) == 3
            with pytest.raises(Exception, match="permission denied"):
                connection.execute(text("DELETE FROM catalogue.image_embeddings"))
            connection.rollback()
            connection.execute(text(f'SET ROLE "{reader}"'))
            with pytest.raises(Exception, match="no product NOSUCH/0"):
                connection.execute(text("SELECT * FROM marketplace.similar_products('NOSUCH')"))
    finally:
        engine.dispose()


def test_the_command_line_searches_by_shortcode_and_by_a_new_photo(
    services, shop, embedded, dataset, tmp_path
):
    env = services.env()
    done = catalogue(env, "similar", shop["original"], "--limit", "3")
    assert done.returncode == 0, done.stderr
    assert f"{shop['copy']}/0  @reseller" in done.stdout.splitlines()[1]

    # a shopper's photo: the original watch, resized and saved as PNG
    with Image.open(shop["copy_file"]) as image:
        image.resize((120, 160)).save(tmp_path / "shopper.png")
    done = catalogue(env, "similar", "--image", str(tmp_path / "shopper.png"), "--limit", "2",
                     timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[1]
    assert shop["original"] in first or shop["copy"] in first, done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["NOSUCHPOST"], "unknown shortcode 'NOSUCHPOST' (no collected post)"),
        ([], "name a catalogued picture"),
        (["--image", "{text}"], "not an image"),
    ],
)
def test_bad_searches_are_one_clear_line(services, shop, embedded, tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("not a picture at all\n")
    values = {"text": str(tmp_path / "notes.txt")}
    done = catalogue(services.env(), "similar", *[a.format(**values) for a in args], timeout=300)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


@pytest.mark.parametrize(
    ("reference", "limit", "message"),
    [
        ("bad;code", 3, "'bad;code' is not a picture: write SHORTCODE, or SHORTCODE/POSITION"),
        ("{original}/7", 3, "has no picture at position 7 (positions 0)"),
        ("{original}/-1", 3, "is not a picture"),
        ("{original}", 0, "--limit must be between 1 and 1000"),
        ("{original}", 1001, "--limit must be between 1 and 1000"),
    ],
)
def test_bad_references_and_limits_are_refused(migrated, shop, embedded, reference, limit,
                                               message):  # fmt: skip
    version = embedding_version(migrated)
    with pytest.raises(SimilarError) as refused:
        query = catalogued_query(migrated, version, reference.format(original=shop["original"]))
        nearest(migrated, version, query, limit=limit)
    assert message in str(refused.value)


def test_photos_that_are_not_pictures_are_refused_like_imports(migrated, settings, shop,
                                                               embedded, tmp_path):  # fmt: skip
    from pipeline.similar.search import photo_query

    bomb = tmp_path / "bomb.png"
    Image.new("L", (9000, 9000)).save(bomb)  # 81 megapixels: over the import's limit
    with pytest.raises(SimilarError, match="too many pixels"):
        photo_query(migrated, settings=settings, path=bomb)
    with pytest.raises(SimilarError, match="no such file"):
        photo_query(migrated, settings=settings, path=tmp_path / "missing.jpg")
    with pytest.raises(SimilarError, match="not a regular file"):
        photo_query(migrated, settings=settings, path=tmp_path)


def test_a_picture_not_embedded_yet_says_when_it_will_be(migrated, shop, embedded):
    version = embedding_version(migrated)
    with migrated.begin() as connection:
        image_id = connection.execute(
            text("SELECT id FROM raw.post_images WHERE shortcode = :s"), {"s": shop["copy"]}
        ).scalar_one()
        connection.execute(text("DELETE FROM catalogue.image_embeddings WHERE image_id = :i"),
                           {"i": image_id})  # fmt: skip
    with pytest.raises(SimilarError, match=r"not embedded by .* yet: the next predict run"):
        catalogued_query(migrated, version, shop["copy"])


def test_a_new_champion_reembeds_and_rollback_restores_its_neighbours(
    migrated, shop, embedded, stores, tmp_path
):
    _predict(migrated, stores, tmp_path)  # whatever an earlier test removed is back
    first = embedding_version(migrated)
    before = [n.shortcode for n in nearest(
        migrated, first, catalogued_query(migrated, first, shop["original"]), limit=6)]  # fmt: skip

    register_model(migrated, stores[1], mean_colour_category_model(), tmp_path / "v2",
                   champion=True)  # fmt: skip
    second = embedding_version(migrated)
    assert second.id != first.id
    run = _predict(migrated, stores, tmp_path)
    assert run.embedded == len(shop["kinds"]) + 1
    assert _count(migrated, "SELECT count(*) FROM pg_indexes WHERE indexname = :n",
                  n=index_name(second.id)) == 1  # fmt: skip

    registry.rollback(engine=migrated, attribute="category", who="tests")
    assert embedding_version(migrated) == first
    after = [n.shortcode for n in nearest(
        migrated, first, catalogued_query(migrated, first, shop["original"]), limit=6)]  # fmt: skip
    assert after == before
    assert _predict(migrated, stores, tmp_path).planned == 0  # nothing recomputed


def test_without_a_champion_the_search_says_what_to_do(services, shop, embedded, fresh_database):
    from pipeline.db import get_engine
    from pipeline.db.migrate import upgrade

    settings = services.settings(CATALOGUE_DATABASE_URL=fresh_database.render_as_string(False))
    upgrade(get_engine(settings.database_url), role_names=settings.role_names)
    with pytest.raises(SimilarError, match="no category champion yet"):
        embedding_version(get_engine(settings.database_url))
