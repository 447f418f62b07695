"""Duplicate listings: recall and precision of the grouping on copies of the product photos.

    env -u CATALOGUE_DATABASE_URL CATALOGUE_STATE_DIR=/tmp/simstate \\
        .venv/bin/python bench/duplicates.py --distractors    # the catalogue's category champion
    .venv/bin/python bench/duplicates.py --network imagenet   # MobileNetV2 ImageNet, untrained head

1. Pictures: `--originals` product photos (seeded), each with the six copies of
   `pipeline.samples.copies` (re-encoded at quality 50, resized x1.5, cropped 10 %, mirrored, a
   text band drawn over, reposted byte for byte by another account): 7 pictures per product.
2. What the predict stage stores for each: the embedding of the configured catalogue's category
   champion (its artefact loaded as predict loads it; or `--network imagenet`), L2-normalised,
   and the perceptual hashes from the bytes. Cached under `--cache` per network and sample.
3. `--distractors`: every other photo of the configured catalogue (its predict pass's
   embeddings and hashes, read only), so the copies sit among look-alike products (colour
   variants shot the same way, shoes on white) as in a marketplace.
4. sweep: each picture's `neighbours` nearest by cosine distance (exact, numpy), linked to the
   nearest that passes the rule of `refresh_duplicates` (either way), groups by connected
   components; over a grid of each way's thresholds and of `neighbours`.
5. postgres: at the configured thresholds (CATALOGUE_DUPLICATE_*), the real `refresh_duplicates`
   (HNSW candidates, SQL, batches) in a scratch database made on the configured server and
   dropped after; the same measures from `catalogue.image_duplicates`.

Measures: pairwise precision and recall (a pair of pictures in one group is right when both
show the same product; recall over the 21 pairs of each product's 7 pictures), the recall of
each kind of copy (in its original's group), and the largest group. The data set holds a few
photos twice under two product ids (pixel for pixel): such originals count as one product. A pair
of two distractors in one group is not judged (the data set has photos of one product under
several ids, which no label tells apart; `precision_all_pairs` counts them as wrong). Results go to
bench/results/duplicates.json with the result header.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.header import result_header
from bench.scratch import add_category_champion, add_images_of_posts
from pipeline.config import Settings, load_settings
from pipeline.samples.copies import COPIES
from pipeline.similar.hashing import signature

KINDS = ("original", *COPIES)
DISTRACTOR = len(KINDS)  # a catalogue picture of another product (`--distractors`)
RESULTS = Path(__file__).resolve().parent / "results" / "duplicates.json"
HAMMINGS = (0, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24)
DISTANCES = (0.02, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
CLOSE_HAMMINGS = (8, 12, 16, 20, 24, 64)
CLOSE_DISTANCES = (0.04, 0.06, 0.08, 0.1, 0.12, 0.15)
OVERLAPS = (0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)
NEIGHBOURS = (1, 3, 10)


# -- the pictures -------------------------------------------------------------------------------
def originals(dataset: Path, count: int, seed: int) -> list[dict]:
    with (dataset / "styles.csv").open(newline="", encoding="utf-8") as fp:
        rows = [r for r in csv.DictReader(fp) if (dataset / "images" / f"{r['id']}.jpg").exists()]
    return random.Random(seed).sample(rows, count)


def pictures(dataset: Path, rows: list[dict]):
    """(product index, kind, bytes) of every picture: each original, then its copies."""
    for index, row in enumerate(rows):
        data = (dataset / "images" / f"{row['id']}.jpg").read_bytes()
        yield index, "original", data
        for kind, copy in COPIES.items():
            yield index, kind, copy(data)


# -- what predict stores --------------------------------------------------------------------------
def champion_network(settings: Settings):
    """The configured catalogue's category champion, loaded as predict loads it."""
    from pipeline.artefacts import artefact_cache, fetch_artefact, load_artefact, with_embedding
    from pipeline.db import get_engine
    from pipeline.predict.champions import current_champions
    from pipeline.similar import EMBEDDING_ATTRIBUTE
    from pipeline.storage import ObjectStore

    engine = get_engine(settings.database_url)
    (champion,) = current_champions(engine=engine, attributes=[EMBEDDING_ATTRIBUTE])
    folder = fetch_artefact(
        ObjectStore.for_models(settings), champion.artefact_key,
        artefact_cache(settings) / champion.run,
    )  # fmt: skip
    network, metadata = load_artefact(folder)
    size = (int(metadata["image_size"][0]), int(metadata["image_size"][1]))
    return (
        with_embedding(network, list(metadata["attributes"])),
        size,
        f"{champion.version} ({metadata.get('architecture')}, the catalogue's category champion)",
    )


def imagenet_network():
    """mobilenet_v2_050 with the ImageNet weights and untrained heads (no catalogue needed)."""
    import keras

    from pipeline.artefacts import with_embedding
    from pipeline.train.fit import load_pretrained
    from pipeline.train.models import architecture, build_model

    keras.utils.set_random_seed(0)
    spec = architecture("mobilenet_v2_050")
    model = build_model(spec.name, {"category": 10})
    load_pretrained(model, spec, weights_dir=None, download=False)
    return with_embedding(model, ["category"]), spec.image_size, "mobilenet_v2_050 ImageNet"


def embed(args, settings: Settings, rows: list[dict]) -> dict:
    """Embeddings, hashes and labels of every picture (cached)."""
    from pipeline.artefacts import EMBEDDING, decode
    from pipeline.similar.embeddings import normalised

    if args.network == "champion":
        network, size, described = champion_network(settings)
    else:
        network, size, described = imagenet_network()
    tag = described.split(" ")[0]
    cache = Path(args.cache) / f"{tag}-{args.originals}-{args.seed}.npz"
    if cache.exists():
        found = np.load(cache)
        return {"network": described, **{k: found[k] for k in found.files}}
    started = time.perf_counter()
    products, kinds, hashes, colours, vectors, batch = [], [], [], [], [], []

    def flush() -> None:
        if batch:
            out = network.predict_on_batch(np.stack(batch))
            vectors.append(normalised(np.asarray(out[EMBEDDING], dtype=np.float32)))
            batch.clear()

    for product, kind, data in pictures(Path(settings.dataset_dir), rows):
        products.append(product)
        kinds.append(KINDS.index(kind))
        found = signature(data)
        hashes.append((found.phash, found.phash_mirrored))
        colours.append(found.colours)
        batch.append(decode(data, size))
        if len(batch) == 256:
            flush()
            print(f"  {len(products):,} pictures embedded", file=sys.stderr, flush=True)
    flush()
    found = {
        "products": np.array(products, dtype=np.int32),
        "kinds": np.array(kinds, dtype=np.int8),
        "hashes": np.array(hashes, dtype=np.int64),
        "colours": np.array(colours, dtype=np.float32),
        "vectors": np.concatenate(vectors),
        "embed_seconds": np.array(time.perf_counter() - started),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **found)
    return {"network": described, **found}


def with_distractors(settings: Settings, rows: list[dict], found: dict) -> dict:
    """`found` and, as singletons of kind DISTRACTOR, every picture of the configured catalogue
    (its category champion's embeddings and the stored hashes) whose product is not one of the
    originals: the catalogue's density of look-alike products (colour variants shot the same
    way, shoes on white) around the copies. Products are read from the sample manifests."""
    from sqlalchemy import text

    from pipeline.db import get_engine
    from pipeline.predict.champions import current_champions
    from pipeline.similar import EMBEDDING_ATTRIBUTE

    product_of: dict[int, int] = {}
    for manifest in Path(settings.state_dir).glob("samples/*/manifest.csv"):
        with manifest.open(newline="", encoding="utf-8") as fp:
            for row in csv.DictReader(fp):
                product_of[int(row["media_id"])] = int(row["product_id"])
    sampled = {int(row["id"]) for row in rows}
    engine = get_engine(settings.database_url)
    (champion,) = current_champions(engine=engine, attributes=[EMBEDDING_ATTRIBUTE])
    vectors, hashes, colours = [], [], []
    with engine.connect() as connection:
        result = connection.execution_options(stream_results=True).execute(
            text(
                "SELECT i.media_id, e.embedding::text AS embedding, h.phash, h.phash_mirrored, "
                "h.colours FROM catalogue.image_embeddings e "
                "JOIN catalogue.image_hashes h ON h.image_id = e.image_id "
                "JOIN raw.images i ON i.id = e.image_id WHERE e.model_version_id = :v"
            ),
            {"v": champion.version_id},
        )
        for row in result:
            if product_of.get(int(row.media_id)) in sampled:
                continue
            vectors.append(np.array(row.embedding[1:-1].split(","), dtype=np.float32))
            hashes.append((row.phash, row.phash_mirrored))
            colours.append(np.asarray(row.colours, dtype=np.float32))
    first = int(found["products"].max()) + 1
    return {
        **found,
        "products": np.r_[found["products"], np.arange(first, first + len(vectors))],
        "kinds": np.r_[found["kinds"], np.full(len(vectors), DISTRACTOR, dtype=np.int8)],
        "hashes": np.r_[found["hashes"], np.array(hashes, dtype=np.int64)],
        "colours": np.r_[found["colours"], np.array(colours, dtype=np.float32)],
        "vectors": np.r_[found["vectors"], np.array(vectors, dtype=np.float32)],
    }


# -- the rule, exactly ----------------------------------------------------------------------------
def bit_count(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.uint64)
    count = np.zeros(values.shape, dtype=np.int64)
    for _ in range(64):
        count += (values & np.uint64(1)).astype(np.int64)
        values = values >> np.uint64(1)
    return count


def candidates(found: dict, k: int, block: int = 1024):
    """Each picture's k nearest others: (i, j, distance, hamming, colour overlap), nearest first
    per i."""
    vectors, hashes, colours = found["vectors"], found["hashes"], found["colours"]
    n = len(vectors)
    rows, cols, dists = [], [], []
    for start in range(0, n, block):
        sims = vectors[start : start + block] @ vectors.T
        for r in range(len(sims)):
            sims[r, start + r] = -np.inf
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        rows.append(np.repeat(np.arange(start, start + len(sims)), k))
        cols.append(top.ravel())
        dists.append(1.0 - np.take_along_axis(sims, top, axis=1).ravel())
    i, j, d = np.concatenate(rows), np.concatenate(cols), np.concatenate(dists)
    direct = bit_count(hashes[i, 0] ^ hashes[j, 0])
    mirrored = bit_count(hashes[i, 0] ^ hashes[j, 1])
    overlap = np.minimum(colours[i], colours[j]).sum(axis=1)
    return i, j, d, np.minimum(direct, mirrored), overlap


def score(groups: np.ndarray, products: np.ndarray, kinds: np.ndarray) -> dict:
    """Pairwise precision and recall of `groups` (a group label per picture), recall per kind."""
    _, sizes = np.unique(groups, return_counts=True)
    predicted = int((sizes * (sizes - 1) // 2).sum())
    _, both = np.unique(np.stack([groups, products]), axis=1, return_counts=True)
    right = int((both * (both - 1) // 2).sum())
    _, per_product = np.unique(products, return_counts=True)
    truth = int((per_product * (per_product - 1) // 2).sum())
    # pairs of two catalogue photos (`--distractors`) are not judged: the data set holds
    # photos of one product under several ids, which no label tells apart
    lone = kinds == DISTRACTOR
    _, lone_sizes = np.unique(groups[lone], return_counts=True)
    unjudged = int((lone_sizes * (lone_sizes - 1) // 2).sum())
    original_group = {p: g for p, g, k in zip(products, groups, kinds, strict=True) if k == 0}
    by_kind = {}
    for index, kind in enumerate(KINDS[1:], start=1):
        chosen = kinds == index
        same = [
            original_group[p] == g for p, g in zip(products[chosen], groups[chosen], strict=True)
        ]
        by_kind[kind] = round(float(np.mean(same)), 4)
    return {
        "precision": round(right / (predicted - unjudged), 4) if predicted > unjudged else 1.0,
        "precision_all_pairs": round(right / predicted, 4) if predicted else 1.0,
        "recall": round(right / truth, 4),
        "recall_by_kind": by_kind,
        "false_pairs": predicted - unjudged - right,
        "catalogue_pairs_grouped": unjudged,
        "largest_group": int(sizes.max()),
    }


def group(n: int, i, j, keep) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(int(keep.sum())), (i[keep], j[keep])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def passes(d: np.ndarray, h: np.ndarray, o: np.ndarray, rule: dict) -> np.ndarray:
    """The rule of `refresh_duplicates`: hash close and embedding near, or embedding closer and
    hash less close; and the colours alike."""
    either = ((h <= rule["max_hamming"]) & (d <= rule["max_distance"])) | (
        (h <= rule["close_max_hamming"]) & (d <= rule["close_distance"])
    )
    return either & (o >= rule["min_colour_overlap"])


def links(edges, rule: dict):
    """Each picture's link: the nearest of its candidates that passes (as `refresh_duplicates`
    links them)."""
    i, j, d, h, o = edges
    keep = passes(d, h, o, rule)
    i, j, d = i[keep], j[keep], d[keep]
    order = np.lexsort((j, d, i))
    i, j = i[order], j[order]
    first = np.r_[True, i[1:] != i[:-1]] if len(i) else np.zeros(0, dtype=bool)
    return i[first], j[first]


def at(found: dict, edges, rule: dict) -> dict:
    """The grouping the rule makes from the candidate `edges`, scored."""
    i, j = links(edges, rule)
    groups = group(len(found["vectors"]), i, j, np.ones(len(i), dtype=bool))
    return {**rule, **score(groups, found["products"], found["kinds"])}


OFF = {"close_max_hamming": 0, "close_distance": -1.0}  # the second way switched off


def nearest(edges, k: int):
    """The first `k` of candidates computed with more per picture (nearest first per row)."""
    per = int(np.count_nonzero(edges[0] == edges[0][0]))
    keep = (np.arange(len(edges[0])) % per) < k
    return tuple(column[keep] for column in edges)


def sweep(found: dict, edges, *, neighbours: int, configured: dict) -> list[dict]:
    """The first way alone over a grid, then the second way over a grid beside the configured
    first way."""
    edges = nearest(edges, neighbours)
    overlap = configured["min_colour_overlap"]
    rows = [
        {"neighbours": neighbours,
         **at(found, edges, {"max_hamming": h, "max_distance": d, **OFF,
                             "min_colour_overlap": overlap})}
        for h in HAMMINGS
        for d in DISTANCES
    ]  # fmt: skip
    first = {k: configured[k] for k in ("max_hamming", "max_distance")}
    rows += [
        {"neighbours": neighbours,
         **at(found, edges, {**first, "close_max_hamming": h, "close_distance": d,
                             "min_colour_overlap": overlap})}
        for h in CLOSE_HAMMINGS
        for d in CLOSE_DISTANCES
    ]  # fmt: skip
    rows += [
        {"neighbours": neighbours, **at(found, edges, {**configured, "min_colour_overlap": o})}
        for o in OVERLAPS
    ]
    return rows


def identical_originals(dataset: Path, rows: list[dict], found: dict) -> int:
    """Count as one product the originals the data set holds twice under two ids: the same
    perceptual hash and pixels that differ by less than 2 levels of 255 on average. Returns
    how many were joined (`found["products"]` is changed in place)."""
    from PIL import Image

    originals_at = np.flatnonzero(found["kinds"] == 0)
    by_hash: dict[int, list[int]] = {}
    for index in originals_at:
        by_hash.setdefault(int(found["hashes"][index, 0]), []).append(int(found["products"][index]))

    def pixels(product: int) -> np.ndarray:
        with Image.open(dataset / "images" / f"{rows[product]['id']}.jpg") as image:
            return np.asarray(image.convert("RGB").resize((60, 80)), dtype=np.float32)

    same = {}
    for products in by_hash.values():
        for a in products:
            for b in products:
                if a < b and np.abs(pixels(a) - pixels(b)).mean() < 2:
                    same[b] = same.get(a, a)
    found["products"] = np.array([same.get(int(p), int(p)) for p in found["products"]])
    return len(same)


def best(rows: list[dict], precision: float) -> dict | None:
    """The highest recall at or above `precision`."""
    fit = [r for r in rows if r["precision"] >= precision]
    return max(fit, key=lambda r: (r["recall"], r["precision"])) if fit else None


# -- the real refresh, in a scratch database ------------------------------------------------------
def through_postgres(settings: Settings, found: dict) -> dict:
    from sqlalchemy import text

    from bench.scratch import drop_database, scratch_database
    from pipeline.similar.duplicates import DuplicateOptions, candidates_sql, refresh_duplicates
    from pipeline.similar.embeddings import ensure_index, index_name, vector_text

    name, engine = scratch_database(settings)
    try:
        vectors, hashes = found["vectors"], found["hashes"]
        products, kinds = found["products"], found["kinds"]
        n, dims = vectors.shape
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO raw.accounts (username, is_business) "
                    "SELECT unnest(CAST(:names AS text[])), true"
                ),
                {"names": [f"shop_{kind}" for kind in (*KINDS, "distractor")]},
            )
            connection.execute(
                text(
                    """
                    INSERT INTO raw.posts (shortcode, media_id, account_id, taken_at,
                                           media_type, node, source)
                    SELECT 'D' || lpad(n::text, 8, '0'), n, a.id,
                           timestamptz '2026-01-01' + n * interval '1 second', 'image', '{}',
                           'archive'
                    FROM unnest(CAST(:kinds AS text[])) WITH ORDINALITY AS k(kind, n)
                    JOIN raw.accounts a ON a.username = 'shop_' || k.kind
                    """
                ),
                {"kinds": [(*KINDS, "distractor")[k] for k in kinds]},
            )
            add_images_of_posts(connection)
            version = add_category_champion(
                connection, version="bench-1", architecture="bench", image_size=(128, 96)
            )
            connection.execute(
                text(
                    "INSERT INTO marketplace.products (image_id, shortcode, position, account, "
                    "image_key, category, category_source, category_confidence, model_version, "
                    "needs_review, updated_at) SELECT i.id, i.shortcode, i.position, i.account, "
                    "i.object_key, 'Tshirts', 'model', 0.9, 'bench-1', false, now() "
                    "FROM raw.live_images i"
                )
            )
        ensure_index(engine, version_id=version, dims=dims)
        ids = [None] * n
        with engine.connect() as connection:
            for image_id, media_id in connection.execute(
                text("SELECT id, media_id FROM raw.images")
            ).all():
                ids[int(media_id) - 1] = int(image_id)
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cursor:
                buffer = io.StringIO()
                writer = csv.writer(buffer, lineterminator="\n")
                for row in range(n):
                    writer.writerow((version, ids[row], vector_text(vectors[row])))
                buffer.seek(0)
                cursor.copy_expert(
                    "COPY catalogue.image_embeddings (model_version_id, image_id, embedding) "
                    "FROM STDIN WITH (FORMAT csv)",
                    buffer,
                )
                buffer = io.StringIO()
                writer = csv.writer(buffer, lineterminator="\n")
                for row in range(n):
                    shares = "{" + ",".join(f"{v:.6g}" for v in found["colours"][row]) + "}"
                    writer.writerow((ids[row], int(hashes[row, 0]), int(hashes[row, 1]), shares))
                buffer.seek(0)
                cursor.copy_expert(
                    "COPY catalogue.image_hashes (image_id, phash, phash_mirrored, colours) "
                    "FROM STDIN WITH (FORMAT csv)",
                    buffer,
                )
            raw.commit()
        finally:
            raw.close()
        options = DuplicateOptions.from_settings(settings)
        with engine.connect() as connection:  # the candidates come through the version's index
            plan = connection.execute(
                text("EXPLAIN " + candidates_sql(version_id=version, dims=dims)),
                {"ids": ids[:1], "k": options.neighbours + 1},
            ).scalars()
            plan_uses_index = any(index_name(version) in line for line in plan)
        started = time.perf_counter()
        run = refresh_duplicates(engine, options=options)
        seconds = time.perf_counter() - started
        with engine.connect() as connection:
            grouped = dict(
                connection.execute(
                    text("SELECT image_id, group_id FROM catalogue.image_duplicates")
                ).all()
            )
            shown = connection.execute(
                text("SELECT count(*) FROM marketplace.products WHERE duplicate_group IS NOT NULL")
            ).scalar_one()
        groups = np.array([grouped.get(ids[row], -1 - row) for row in range(n)])
        return {
            "thresholds": {
                "max_hamming": options.max_hamming,
                "max_distance": options.max_distance,
                "close_max_hamming": options.close_max_hamming,
                "close_distance": options.close_distance,
                "min_colour_overlap": options.min_colour_overlap,
                "neighbours": options.neighbours,
            },
            **score(groups, products, kinds),
            "plan_uses_hnsw_index": plan_uses_index,
            "checked": run.checked,
            "pairs": run.pairs,
            "marketplace_rows_grouped": int(shown),
            "refresh_seconds": round(seconds, 1),
            "pictures_per_s": round(n / seconds, 1),
        }
    finally:
        drop_database(settings, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--network", choices=("champion", "imagenet"), default="champion")
    parser.add_argument("--cache", default="/tmp/bench-duplicates")
    parser.add_argument("--no-postgres", action="store_true", help="the sweep only")
    parser.add_argument(
        "--distractors",
        action="store_true",
        help="add the configured catalogue's other product photos, as its predict pass embedded "
        "them (read only), as pictures no copy should be grouped with",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    settings = Settings.from_env()
    if args.network == "champion" or not args.no_postgres:
        settings = load_settings()  # the catalogue's services
    rows = originals(Path(settings.dataset_dir), args.originals, args.seed)
    found = embed(args, settings, rows)
    print(f"{len(found['vectors']):,} pictures, {found['network']}", file=sys.stderr)
    configured = {
        "max_hamming": settings.duplicate_max_hamming,
        "max_distance": settings.duplicate_max_distance,
        "close_max_hamming": settings.duplicate_close_max_hamming,
        "close_distance": settings.duplicate_close_distance,
        "min_colour_overlap": settings.duplicate_min_colour_overlap,
    }
    joined = identical_originals(Path(settings.dataset_dir), rows, found)
    if args.distractors:
        found = with_distractors(settings, rows, found)
    ks = sorted({1, 2, 3, 5, 10, 20, settings.duplicate_neighbours})
    edges = candidates(found, max(ks))
    grid = [
        row for k in NEIGHBOURS for row in sweep(found, edges, neighbours=k, configured=configured)
    ]
    neighbours = {k: at(found, nearest(edges, k), configured) for k in ks}
    chosen = neighbours[settings.duplicate_neighbours]
    configured["neighbours"] = settings.duplicate_neighbours
    result = {
        **result_header("duplicates"),
        "command": " ".join(["bench/duplicates.py", *sys.argv[1:]]),
        "network": found["network"],
        "originals": args.originals,
        "seed": args.seed,
        "pictures": len(found["vectors"]),
        "distractors": int((found["kinds"] == DISTRACTOR).sum()),
        "embed_seconds": round(float(found["embed_seconds"]), 1),
        "identical_originals_joined": joined,
        "configured": configured,
        "at_configured": chosen,
        "best_at_precision_0.99": best(grid, 0.99),
        "other_neighbours_at_configured": neighbours,
        "sweep": grid,
    }
    if not args.no_postgres:
        result["postgres"] = through_postgres(settings, found)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "sweep"}, indent=1))


if __name__ == "__main__":
    main()
