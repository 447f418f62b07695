"""Similar items: the HNSW query against an exact scan, embedding write rate, retrieval quality.

    .venv/bin/python bench/similar.py scale --size 100000      # latency, recall, index build
    .venv/bin/python bench/similar.py write --size 100000      # write_scores against COPY
    .venv/bin/python bench/similar.py scale --size 1000000 --maintenance-work-mem 8GB
    env -u CATALOGUE_DATABASE_URL CATALOGUE_STATE_DIR=/tmp/simstate \\
        .venv/bin/python bench/similar.py quality              # precision@5 on real embeddings
    .venv/bin/python bench/similar.py clean                    # stop and remove the scratch server

Each finished part goes to bench/results/similar.json (`--out`) at once, under its own key with
its own header, so a rerun continues where it stopped (`--force` redoes a part).

`scale` and `write` run on an embedded Postgres with pgvector (the `pgserver` wheel) in
/tmp/bench-similar-pg (`--pg`), one database per size, migrated by the product's migrations and
kept between runs (`clean` removes it). The catalogue holds `--size` single-picture products with
synthetic embeddings of the real width (1408: mobilenet_v2_050's 1280 backbone features and 128
colour features), loaded by binary COPY, then the category champion's HNSW index is built as
`ensure_index` makes it (m=16, ef_construction=64, partial, on `embedding::vector(1408)`).

The vectors are not uniform noise: like the network's pooled ReLU features they are non-negative
and share a common profile, in clusters (article types) of Zipf-distributed sizes, each with
sub-centres (products, variants) and its own spread, then L2-normalised. The result file gives
their statistics (cosine of random pairs, of the 1st and 10th neighbour) beside the real ones'.

- scale: `marketplace.similar_products(shortcode, 1, 10)` (the product's query, ef_search 100)
  on random products through the HNSW index, and the same call with `SET LOCAL enable_indexscan
  = off` (a sequential scan and sort: the exact answer); p50/p95 of each, and recall@10 of the
  HNSW answers against the exact ones. Targets: recall@10 >= 0.95, p95 under 50 ms at 1M.
- write: `write_scores(embeddings=...)` in batches of 256 into the indexed table (N vectors),
  against a plain COPY of the same vectors (same text form) into the same indexed table, and into
  a table of the same columns without any index, in the same run. Target ratio >= 0.5.
- quality: precision@5 of "same article type" on the category champion's snapshot test split:
  each test picture's 5 nearest among the split's other pictures, exactly (numpy) and through an
  HNSW index of the same parameters built over the split in the scratch server. Reads the
  catalogue that CATALOGUE_* configure (never writes to it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import struct
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from sqlalchemy import create_engine, make_url, text  # noqa: E402

from bench.header import result_header  # noqa: E402
from bench.scratch import add_category_champion, add_images_of_posts  # noqa: E402

DIMS = 1408
BATCH = 256  # the predict stage's write-back batch (one batch of pictures, one transaction)
K = 10
PG_DIR = Path("/tmp/bench-similar-pg")
ROLE_PREFIX = "simbench"
VERSION = "category-bench"
SEED = 24
CHUNK = 10_000

# the synthetic catalogue: clusters, sub-centres, spread (see the docstring)
CLUSTERS = 400
SUBCENTRES = 40
ZIPF = 0.9


# ---------------------------------------------------------------- results


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save_part(path: Path, key: str, part: dict) -> None:
    results = load_results(path)  # re-read: another part may have finished meanwhile
    results[key] = {**result_header(f"similar/{key}"), **part}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {key} to {path}", flush=True)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# ---------------------------------------------------------------- synthetic vectors


class Generator:
    """Deterministic clustered, non-negative, L2-normalised vectors: `chunk(i)` is always the
    same rows, so a part can regenerate any rows without storing them."""

    def __init__(self, seed: int = SEED):
        rng = np.random.default_rng(seed)
        profile = rng.gamma(0.6, 1.0, DIMS)  # the features every picture shares
        self.centres = profile * rng.lognormal(0.0, 0.9, (CLUSTERS, DIMS))
        self.sub = rng.lognormal(0.0, 0.45, (CLUSTERS, SUBCENTRES, DIMS)).astype(np.float32)
        self.spread = rng.uniform(0.35, 0.75, CLUSTERS)  # per cluster, lognormal sigma
        weights = 1.0 / np.arange(1, CLUSTERS + 1) ** ZIPF
        self.weights = weights / weights.sum()
        self.centres = self.centres.astype(np.float32)
        self.seed = seed

    def chunk(self, index: int, size: int = CHUNK) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index])
        cluster = rng.choice(CLUSTERS, size=size, p=self.weights)
        sub = rng.integers(0, SUBCENTRES, size)
        noise = rng.standard_normal((size, DIMS), dtype=np.float32)
        noise *= self.spread[cluster, None].astype(np.float32)
        vectors = self.centres[cluster] * self.sub[cluster, sub] * np.exp(noise)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def rows(self, start: int, count: int) -> np.ndarray:
        """Rows start..start+count of the endless sequence of chunks."""
        parts, first = [], start // CHUNK
        last = (start + count - 1) // CHUNK
        for index in range(first, last + 1):
            parts.append(self.chunk(index))
        block = np.concatenate(parts)
        offset = start - first * CHUNK
        return block[offset : offset + count]


def vector_stats(vectors: np.ndarray, sample: int = 500, seed: int = 1) -> dict:
    """Cosine of random pairs and of each sampled vector's 1st and 10th neighbour."""
    rng = np.random.default_rng(seed)
    vectors = np.asarray(vectors, dtype=np.float32)
    queries = rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)
    similarity = vectors[queries] @ vectors.T
    similarity[np.arange(len(queries)), queries] = -np.inf
    top = -np.sort(-similarity, axis=1)[:, :K]
    pairs = rng.integers(0, len(vectors), (2000, 2))
    random_pairs = np.einsum("ij,ij->i", vectors[pairs[:, 0]], vectors[pairs[:, 1]])
    return {
        "vectors": len(vectors),
        "random_pair_cosine_mean": round(float(random_pairs.mean()), 3),
        "neighbour_1_cosine_mean": round(float(top[:, 0].mean()), 3),
        "neighbour_10_cosine_mean": round(float(top[:, K - 1].mean()), 3),
        "zero_share": round(float((vectors == 0).mean()), 3),
    }


# ---------------------------------------------------------------- the scratch server


def scratch_server(pg_dir: Path):
    """The embedded Postgres (pgvector), configured for the benchmark (restarted once when the
    configuration changes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        pg_dir.parent.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(pg_dir, cleanup_mode="stop")
        wanted = {
            "shared_buffers": "2GB",
            "max_wal_size": "8GB",
            "checkpoint_timeout": "30min",
            "max_parallel_maintenance_workers": "2",
            "max_parallel_workers_per_gather": "2",
            "dynamic_shared_memory_type": "posix",
        }
        engine = create_engine(_url(server, "postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            current = {
                name: connection.execute(text(f"SHOW {name}")).scalar_one() for name in wanted
            }
            changed = {n: v for n, v in wanted.items() if current[n] != v}
            for name, value in changed.items():
                connection.execute(text(f"ALTER SYSTEM SET {name} = '{value}'"))
        engine.dispose()
        if changed:
            print(f"restarting the scratch server for {sorted(changed)}", flush=True)
            server.cleanup()
            server = pgserver.get_server(pg_dir, cleanup_mode="stop")
    return server


def _url(server, database: str):
    return make_url(server.get_uri(database)).set(drivername="postgresql+psycopg2")


def size_database(server, size: int):
    """The migrated database of one size, with `size` products and their vectors loaded (and
    nothing else written yet); returns (engine, loaded-now info or None)."""
    from pipeline.db import get_engine
    from pipeline.db.migrate import upgrade

    name = f"similar_{size}"
    admin = create_engine(_url(server, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        ).scalar()
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = get_engine(_url(server, name))
    with engine.connect() as connection:
        done = connection.execute(
            text("SELECT to_regclass('public.bench_loaded') IS NOT NULL")
        ).scalar_one()
    if done:  # made by an earlier run: the product's query as the tree defines it now
        with engine.begin() as connection:
            connection.execute(
                text((REPO / "migrations" / "sql" / "similar_products.0012.sql").read_text()
                     .replace("@vector@", "public"))
            )  # fmt: skip
        return engine, None
    roles = {r: f"{ROLE_PREFIX}_{r}" for r in ("app", "reader", "moderator")}
    started = time.perf_counter()
    upgrade(engine, role_names=roles)
    info = {"migrate_seconds": round(time.perf_counter() - started, 1)}
    info.update(make_catalogue(engine, size))
    info.update(load_vectors(engine, size))
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE public.bench_loaded (info jsonb)"))
        connection.execute(
            text("INSERT INTO public.bench_loaded VALUES (CAST(:i AS jsonb))"),
            {"i": json.dumps(info)},
        )
    return engine, info


def make_catalogue(engine, size: int, spare: int = 40_000) -> dict:
    """`size + spare` single-picture posts of 500 accounts (the spare ones for the write part),
    their marketplace rows, and a category champion."""
    started = time.perf_counter()
    count = size + spare
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO raw.accounts (username, is_business) "
                "SELECT 'shop_' || n, true FROM generate_series(0, 499) AS n"
            )
        )
        connection.execute(
            text(
                """
                INSERT INTO raw.posts (shortcode, media_id, account_id, taken_at, media_type,
                                       node, source)
                SELECT 'S' || lpad(n::text, 8, '0'), n, a.id,
                       timestamptz '2026-01-01' + n * interval '1 second', 'image', '{}',
                       'archive'
                FROM generate_series(1, :count) AS n
                JOIN raw.accounts a ON a.username = 'shop_' || (n % 500)
                """
            ),
            {"count": count},
        )
        add_images_of_posts(connection)
        version = add_category_champion(
            connection, version=VERSION, architecture="mobilenet_v2_050", image_size=(96, 128)
        )
        connection.execute(
            text(
                """
                INSERT INTO marketplace.products (image_id, shortcode, position, account,
                    image_key, category, category_source, category_confidence, model_version,
                    needs_review, updated_at)
                SELECT i.id, i.shortcode, i.position, i.account, i.object_key, 'Tshirts',
                       'model', 0.9, :v, false, now()
                FROM raw.live_images i
                """
            ),
            {"v": VERSION},
        )
    return {
        "pictures": count,
        "version_id": version,
        "catalogue_seconds": round(time.perf_counter() - started, 1),
    }


def champion(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT id FROM catalogue.model_versions WHERE status = 'champion' "
                "AND attribute = 'category'"
            )
        ).scalar_one()


def image_ids(engine) -> np.ndarray:
    with engine.connect() as connection:
        return np.asarray(
            connection.execute(text("SELECT id FROM raw.images ORDER BY id")).scalars().all()
        )


def binary_copy(version: int | None, ids: np.ndarray, vectors: np.ndarray) -> io.BytesIO:
    """COPY ... (FORMAT binary) of (model_version_id, image_id, embedding) rows, or of
    (image_id, embedding) rows when `version` is None."""
    dims = vectors.shape[1]
    fields = [("fields", ">i2")]
    if version is not None:
        fields += [("l1", ">i4"), ("version", ">i4")]
    fields += [("l2", ">i4"), ("id", ">i8"), ("l3", ">i4"), ("dim", ">i2"), ("unused", ">i2"),
               ("vector", ">f4", (dims,))]  # fmt: skip
    records = np.zeros(len(ids), dtype=np.dtype(fields))
    records["fields"] = 2 if version is None else 3
    records["l2"], records["l3"] = 8, 4 + 4 * dims
    if version is not None:
        records["l1"], records["version"] = 4, version
    records["id"], records["dim"], records["vector"] = ids, dims, vectors
    header = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
    return io.BytesIO(header + records.tobytes() + struct.pack(">h", -1))


def load_vectors(engine, size: int) -> dict:
    version, ids = champion(engine), image_ids(engine)[:size]
    generator = Generator()
    started = time.perf_counter()
    generate_s = 0.0
    for start in range(0, size, CHUNK):
        began = time.perf_counter()
        vectors = generator.chunk(start // CHUNK)[: size - start]
        generate_s += time.perf_counter() - began
        connection = engine.raw_connection()
        try:
            with connection.cursor() as cursor:
                cursor.copy_expert(
                    "COPY catalogue.image_embeddings (model_version_id, image_id, embedding) "
                    "FROM STDIN WITH (FORMAT binary)",
                    binary_copy(version, ids[start : start + len(vectors)], vectors),
                )
            connection.commit()
        finally:
            connection.close()
        if start // CHUNK % 10 == 9:
            print(f"loaded {start + len(vectors):,} vectors", flush=True)
    load_s = time.perf_counter() - started
    with engine.connect() as connection:
        connection.execute(text("COMMIT"))
        connection.execute(text("VACUUM ANALYZE catalogue.image_embeddings"))
    return {
        "vectors": size,
        "load_seconds": round(load_s, 1),
        "generate_seconds": round(generate_s, 1),
    }


def build_index(engine, maintenance_work_mem: str) -> dict:
    """The champion's index, as `ensure_index` makes it, built over the loaded rows."""
    from pipeline.similar.embeddings import HNSW_EF_CONSTRUCTION, HNSW_M, index_name

    version = champion(engine)
    name = index_name(version)
    with engine.connect() as connection:
        connection.execute(text("COMMIT"))
        exists = connection.execute(
            text("SELECT to_regclass(:q) IS NOT NULL"), {"q": f"catalogue.{name}"}
        ).scalar_one()
        if exists:
            return {}
        connection.execute(text(f"SET maintenance_work_mem = '{maintenance_work_mem}'"))
        workers = connection.execute(text("SHOW max_parallel_maintenance_workers")).scalar_one()
        started = time.perf_counter()
        connection.execute(
            text(
                f"CREATE INDEX {name} ON catalogue.image_embeddings USING hnsw "
                f"((embedding::vector({DIMS})) vector_cosine_ops) "
                f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) "
                f"WHERE model_version_id = {version}"
            )
        )
        build_s = time.perf_counter() - started
        index_bytes = connection.execute(
            text("SELECT pg_relation_size(:q)"), {"q": f"catalogue.{name}"}
        ).scalar_one()
        table_bytes = connection.execute(
            text("SELECT pg_total_relation_size('catalogue.image_embeddings') - "
                 "pg_indexes_size('catalogue.image_embeddings')")
        ).scalar_one()  # fmt: skip
        connection.execute(text("ANALYZE catalogue.image_embeddings"))
    return {
        "build_seconds": round(build_s, 1),
        "maintenance_work_mem": maintenance_work_mem,
        "max_parallel_maintenance_workers": int(workers),
        "m": HNSW_M,
        "ef_construction": HNSW_EF_CONSTRUCTION,
        "index_mib": round(index_bytes / 2**20),
        "table_mib": round(table_bytes / 2**20),
    }


# ---------------------------------------------------------------- scale


def similar_call(engine, shortcode: str, position: int, exact: bool) -> tuple[float, list[int]]:
    connection = engine.raw_connection()
    try:
        with connection.cursor() as cursor:
            started = time.perf_counter()
            if exact:
                cursor.execute("SET LOCAL enable_indexscan = off")
            cursor.execute(
                "SELECT image_id FROM marketplace.similar_products(%s, %s, %s)",
                (shortcode, position, K),
            )
            ids = [row[0] for row in cursor.fetchall()]
            connection.commit()
            return time.perf_counter() - started, ids
    finally:
        connection.close()


def plan_of(engine, exact: bool) -> str:
    """The plan of the function's inner query, as it runs (auto_explain is not loaded: the same
    statement explained with the same settings)."""
    version = champion(engine)
    with engine.connect() as connection:
        vector = connection.execute(
            text("SELECT embedding::text FROM catalogue.image_embeddings LIMIT 1")
        ).scalar_one()
        if exact:
            connection.execute(text("SET LOCAL enable_indexscan = off"))
        connection.execute(text("SET LOCAL hnsw.ef_search = 100"))
        rows = connection.execute(
            text(
                f"EXPLAIN SELECT e.image_id FROM catalogue.image_embeddings e "
                f"WHERE e.model_version_id = {version} "
                f"ORDER BY e.embedding::vector({DIMS}) <=> CAST(:q AS vector({DIMS})) LIMIT 11"
            ),
            {"q": vector},
        ).scalars()
        return re.sub(r"'\[[^\]]*\]'", "$1", "\n".join(rows))  # the query vector: $1


def measure_scale(engine, *, queries: int, exact_queries: int, warmup: int) -> dict:
    rng = np.random.default_rng(SEED + 1)
    with engine.connect() as connection:
        products = connection.execute(
            text(
                "SELECT p.shortcode, p.position FROM marketplace.products p "
                "JOIN catalogue.image_embeddings e USING (image_id) ORDER BY p.image_id"
            )
        ).all()
    chosen = [tuple(products[i]) for i in rng.choice(len(products), size=queries, replace=False)]
    for i in rng.choice(len(products), size=warmup):
        similar_call(engine, *products[i], exact=False)
    hnsw_s, hnsw_ids = [], {}
    for product in chosen:
        seconds, ids = similar_call(engine, *product, exact=False)
        hnsw_s.append(seconds)
        hnsw_ids[product] = ids
    print(f"hnsw p50 {percentile(hnsw_s, 50) * 1000:.1f} ms", flush=True)
    exact_s, recalls = [], []
    for product in chosen[:exact_queries]:
        seconds, ids = similar_call(engine, *product, exact=True)
        exact_s.append(seconds)
        assert len(ids) == K, (product, ids)
        recalls.append(len(set(ids) & set(hnsw_ids[product])) / K)
    print(f"exact p50 {percentile(exact_s, 50) * 1000:.1f} ms", flush=True)
    recall = float(np.mean(recalls))
    return {
        "queries": queries,
        "warmup_queries": warmup,
        "k": K,
        "ef_search": max(K + 1, 100),
        "hnsw_ms": {
            "p50": round(percentile(hnsw_s, 50) * 1000, 2),
            "p95": round(percentile(hnsw_s, 95) * 1000, 2),
            "max": round(max(hnsw_s) * 1000, 2),
        },
        "exact_queries": len(exact_s),
        "exact_ms": {
            "p50": round(percentile(exact_s, 50) * 1000, 2),
            "p95": round(percentile(exact_s, 95) * 1000, 2),
        },
        "speedup_p50": round(percentile(exact_s, 50) / percentile(hnsw_s, 50), 1),
        "recall_at_10": round(recall, 4),
        "recall_at_10_min": round(min(recalls), 2),
        "target_recall": 0.95,
        "target_p95_ms_at_1m": 50,
        "plans": {"hnsw": plan_of(engine, False), "exact": plan_of(engine, True)},
    }


def part_scale(args) -> None:
    key = f"scale-{args.size}{_width(args)}"
    if key in load_results(args.out) and not args.force:
        print(f"{key} is done (--force to redo)")
        return
    server = scratch_server(args.pg)
    engine, loaded = size_database(server, args.size)
    if loaded:
        print(f"loaded: {loaded}", flush=True)
    with engine.connect() as connection:
        loaded_info = connection.execute(text("SELECT info FROM public.bench_loaded")).scalar_one()
    built = build_index(engine, args.maintenance_work_mem)
    if built:
        print(f"index: {built}", flush=True)
        save_part(
            args.out, f"build-{args.size}{_width(args)}", {"loaded": loaded_info, "index": built}
        )
    measured = measure_scale(
        engine, queries=args.queries, exact_queries=args.exact_queries, warmup=args.warmup
    )
    sample = Generator().rows(0, min(args.size, 50_000))
    save_part(
        args.out,
        key,
        {
            "size": args.size,
            "dims": DIMS,
            "vectors": {
                "kind": "synthetic: clustered, non-negative, L2-normalised",
                "clusters": CLUSTERS,
                "subcentres_per_cluster": SUBCENTRES,
                "cluster_sizes": f"Zipf {ZIPF}",
                "seed": SEED,
                "stats_first_50k": vector_stats(sample),
            },
            "server": server_settings(engine),
            **measured,
            "beside": args.beside,
        },
    )
    engine.dispose()


def server_settings(engine) -> dict:
    with engine.connect() as connection:
        names = ("server_version", "shared_buffers", "max_parallel_workers_per_gather")
        info = {n: connection.execute(text(f"SHOW {n}")).scalar_one() for n in names}
        info["pgvector"] = connection.execute(
            text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        ).scalar_one()
    return info


# ---------------------------------------------------------------- write


def part_write(args) -> None:
    from pipeline.predict.writeback import Embedding, _csv, write_scores
    from pipeline.similar.embeddings import vector_text

    key = f"write-{args.size}{_width(args)}"
    if key in load_results(args.out) and not args.force:
        print(f"{key} is done (--force to redo)")
        return
    server = scratch_server(args.pg)
    engine, _ = size_database(server, args.size)
    build_index(engine, args.maintenance_work_mem)
    version = champion(engine)
    ids = image_ids(engine)
    with engine.begin() as connection:  # a rerun starts from the N loaded vectors again
        connection.execute(
            text("DELETE FROM catalogue.image_embeddings WHERE image_id > :n"),
            {"n": int(ids[args.size - 1])},
        )
        connection.execute(text("DROP TABLE IF EXISTS public.embeddings_unindexed"))
        connection.execute(
            text(
                "CREATE TABLE public.embeddings_unindexed (model_version_id integer, "
                "image_id bigint, embedding vector)"
            )
        )
    with engine.connect() as connection:
        connection.execute(text("COMMIT"))
        connection.execute(text("VACUUM catalogue.image_embeddings"))
    rows = args.rows
    # new pictures of the same catalogue, different ones for each path: pgvector files a vector
    # equal to one already in the graph under that element (a cheap insert), so a COPY of the
    # very vectors write_scores has just written would be no bound
    warm = 4 * BATCH  # untimed first: two batches of each path, so neither meets a cold cache
    vectors = Generator(seed=SEED + 7).rows(0, 2 * rows + warm)
    spare = ids[args.size :]
    rounds = 2  # product, COPY, product, COPY: each path on the same share of a growing index
    per = rows // rounds
    timings = {"write_scores": 0.0, "copy_indexed": 0.0, "copy_unindexed": 0.0}

    def copy_rows(table: str, batch_ids, batch_vectors) -> None:
        connection = engine.raw_connection()
        try:
            with connection.cursor() as cursor:
                lines = (
                    (version, i, vector_text(v))
                    for i, v in zip(batch_ids, batch_vectors, strict=True)
                )
                cursor.copy_expert(
                    f"COPY {table} (model_version_id, image_id, embedding) FROM STDIN "
                    "WITH (FORMAT csv)",
                    _csv(lines),
                )
            connection.commit()
        finally:
            connection.close()

    for start in range(2 * rows, 2 * rows + warm, 2 * BATCH):
        batch = slice(start, start + BATCH)
        write_scores(engine=engine, scores=[], unscorable=[],
                     embeddings=[Embedding(version, int(i), v) for i, v in
                                 zip(spare[batch], vectors[batch], strict=True)])  # fmt: skip
        batch = slice(start + BATCH, start + 2 * BATCH)
        copy_rows("catalogue.image_embeddings", spare[batch], vectors[batch])
    used = 0
    for round_ in range(rounds):
        for path in ("write_scores", "copy_indexed"):
            target = spare[used : used + per]
            part = slice(used, used + per)
            used += per
            started = time.perf_counter()
            for start in range(0, per, BATCH):
                batch_ids = target[start : start + BATCH]
                batch_vectors = vectors[part][start : start + BATCH]
                if path == "write_scores":
                    write_scores(
                        engine=engine, scores=[], unscorable=[],
                        embeddings=[Embedding(version, int(i), v)
                                    for i, v in zip(batch_ids, batch_vectors, strict=True)],
                    )  # fmt: skip
                else:
                    copy_rows("catalogue.image_embeddings", batch_ids, batch_vectors)
            timings[path] += time.perf_counter() - started
            print(f"round {round_} {path}: {per / (time.perf_counter() - started):.0f} rows/s",
                  flush=True)  # fmt: skip
    started = time.perf_counter()  # the vectors the indexed COPY wrote, now without any index
    for first in range(per, 2 * rounds * per, 2 * per):
        for start in range(first, first + per, BATCH):
            copy_rows("public.embeddings_unindexed", spare[start : start + BATCH],
                      vectors[start : start + BATCH])  # fmt: skip
    timings["copy_unindexed"] = time.perf_counter() - started
    with engine.connect() as connection:
        written = connection.execute(
            text("SELECT count(*) FROM catalogue.image_embeddings WHERE image_id > :n"),
            {"n": int(ids[args.size - 1])},
        ).scalar_one()
    assert written == 2 * rounds * per + warm, written
    count = rounds * per
    rate = {p: round(count / s, 1) for p, s in timings.items()}
    save_part(
        args.out,
        key,
        {
            "size": args.size,
            "dims": DIMS,
            "rows_per_path": count,
            "batch": BATCH,
            "rounds": rounds,
            "rows_per_s": rate,
            "ratio_to_copy_indexed": round(timings["copy_indexed"] / timings["write_scores"], 3),
            "ratio_to_copy_unindexed": round(
                timings["copy_unindexed"] / timings["write_scores"], 3
            ),
            "target_ratio": 0.5,
            "note": "one transaction per batch in each path; the COPYs format the vectors with "
            "the product's vector_text, as write_scores does; each indexed path writes vectors of "
            "its own (drawn alike: pgvector files a vector equal to one in the graph cheaply); "
            "the unindexed table has the same columns and no index, key or foreign key and "
            "takes the indexed COPY's vectors",
            "server": server_settings(engine),
            "beside": args.beside,
        },
    )
    with engine.begin() as connection:  # back to N vectors (the next write run vacuums)
        connection.execute(
            text("DELETE FROM catalogue.image_embeddings WHERE image_id > :n"),
            {"n": int(ids[args.size - 1])},
        )
        connection.execute(text("DROP TABLE public.embeddings_unindexed"))
    engine.dispose()


# ---------------------------------------------------------------- quality


def part_quality(args) -> None:
    from pipeline.config import load_settings
    from pipeline.db import get_engine
    from pipeline.similar.embeddings import HNSW_EF_CONSTRUCTION, HNSW_M
    from pipeline.storage import ObjectStore
    from pipeline.train.snapshot import load_snapshot

    key = f"quality-{args.version}" if args.version else "quality"
    if key in load_results(args.out) and not args.force:
        print(f"{key} is done (--force to redo)")
        return
    settings = load_settings()
    catalogue = get_engine(settings.database_url)
    with catalogue.connect() as connection:
        connection.execute(text("SET TRANSACTION READ ONLY"))
        version = connection.execute(
            text(
                "SELECT id, version, status, architecture, snapshot_id, classes "
                "FROM catalogue.model_versions "
                "WHERE attribute = 'category' AND (version = :v OR (:v IS NULL "
                "AND status = 'champion'))"
            ),
            {"v": args.version},
        ).one()
        embedded = connection.execute(
            text("SELECT count(*) FROM catalogue.image_embeddings WHERE model_version_id = :v"),
            {"v": version.id},
        ).scalar_one()
        images = connection.execute(text("SELECT count(*) FROM raw.images")).scalar_one()
    print(f"champion {version.version}: {embedded:,} of {images:,} pictures embedded", flush=True)
    if not embedded:
        raise SystemExit(
            f"{version.version} has embedded no picture yet: run `catalogue predict`, "
            "or name an embedded version with --version"
        )
    snapshot = load_snapshot(
        engine=catalogue, store=ObjectStore.for_models(settings), snapshot_id=version.snapshot_id
    )
    test = [item["image_id"] for item in snapshot.manifest["images"] if item["split"] == "test"]
    with catalogue.connect() as connection:
        connection.execute(text("SET TRANSACTION READ ONLY"))
        labels = dict(
            connection.execute(
                text(
                    "SELECT image_id, value FROM catalogue.current_labels "
                    "WHERE attribute = 'category' AND image_id = ANY(:ids)"
                ),
                {"ids": test},
            ).all()
        )
        rows = connection.execute(
            text(
                "SELECT image_id, embedding::text FROM catalogue.image_embeddings "
                "WHERE model_version_id = :v AND image_id = ANY(:ids) ORDER BY image_id"
            ),
            {"v": version.id, "ids": test},
        ).all()
        everything = connection.execute(
            text(
                "SELECT embedding::text FROM catalogue.image_embeddings "
                "WHERE model_version_id = :v"
            ),
            {"v": version.id},
        ).scalars().all()  # fmt: skip
        # the product's use: a test picture's nearest among every labelled picture of the catalogue
        gallery = connection.execute(
            text(
                "SELECT e.image_id, e.embedding::text, l.value FROM catalogue.image_embeddings e "
                "JOIN catalogue.current_labels l ON l.image_id = e.image_id "
                "AND l.attribute = 'category' WHERE e.model_version_id = :v"
            ),
            {"v": version.id},
        ).all()
    catalogue.dispose()
    rows = [(i, v) for i, v in rows if i in labels]
    ids = np.asarray([i for i, _ in rows])
    vectors = np.asarray([json.loads(v) for _, v in rows], dtype=np.float32)
    truth = np.asarray([labels[i] for i in ids])
    print(f"{len(ids):,} of {len(test):,} test pictures embedded and labelled", flush=True)

    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1)[:, :5]
    exact = float((truth[nearest] == truth[:, None]).mean())
    parts = {}  # where the answer comes from: the layer is backbone features, then colour ones
    for name, columns in (("backbone_1280", slice(0, 1280)), ("colour_128", slice(1280, None))):
        part = vectors[:, columns]
        part = part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
        similarity_part = part @ part.T
        np.fill_diagonal(similarity_part, -np.inf)
        top = np.argsort(-similarity_part, axis=1)[:, :5]
        parts[name] = round(float((truth[top] == truth[:, None]).mean()), 4)
    print(f"precision@5 by part {parts}", flush=True)
    learnt = np.isin(truth, list(version.classes))  # the article types the champion answers
    hits = (truth[nearest] == truth[:, None]).mean(axis=1)
    learnt_only = {
        "queries": int(learnt.sum()),
        "precision_at_5": round(float(hits[learnt].mean()), 4),
    }
    print(f"precision@5 exact {exact:.4f}", flush=True)

    # the same through an HNSW index of the product's parameters over the test split alone
    server = scratch_server(args.pg)
    admin = create_engine(_url(server, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE IF EXISTS similar_quality"))
        connection.execute(text("CREATE DATABASE similar_quality"))
    admin.dispose()
    scratch = create_engine(_url(server, "similar_quality"))
    dims = vectors.shape[1]
    with scratch.begin() as connection:
        connection.execute(text("CREATE EXTENSION vector"))
        connection.execute(text(f"CREATE TABLE e (image_id bigint, embedding vector({dims}))"))
    raw = scratch.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.copy_expert(
                "COPY e FROM STDIN WITH (FORMAT binary)", binary_copy(None, ids, vectors)
            )
        raw.commit()
    finally:
        raw.close()
    with scratch.begin() as connection:
        connection.execute(
            text(
                f"CREATE INDEX ON e USING hnsw (embedding vector_cosine_ops) "
                f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
            )
        )
    found = []
    with scratch.connect() as connection:
        connection.execute(text("SET hnsw.ef_search = 100"))
        for image_id, vector in zip(ids, vectors, strict=True):
            answer = connection.execute(
                text(
                    "SELECT image_id FROM e ORDER BY embedding <=> CAST(:q AS vector) LIMIT 6"
                ),
                {"q": "[" + ",".join(f"{x:.7g}" for x in vector) + "]"},
            ).scalars().all()  # fmt: skip
            found.append([i for i in answer if i != image_id][:5])
    scratch.dispose()
    position = {int(i): n for n, i in enumerate(ids)}
    hnsw_hits = [
        np.mean([truth[position[int(i)]] == truth[n] for i in answer]) if answer else 0.0
        for n, answer in enumerate(found)
    ]
    hnsw = float(np.mean(hnsw_hits))
    print(f"precision@5 HNSW {hnsw:.4f}", flush=True)
    real = np.asarray([json.loads(v) for v in everything], dtype=np.float32)
    save_part(
        args.out,
        key,
        {
            "catalogue": settings.database_url.render_as_string(hide_password=True),
            "model_version": {
                "id": version.id,
                "version": version.version,
                "status": version.status,
                "architecture": version.architecture,
                "snapshot_id": version.snapshot_id,
            },
            "embedded_pictures": embedded,
            "pictures": images,
            "dims": dims,
            "test_pictures": len(test),
            "queried": len(ids),
            "article_types": len(set(truth.tolist())),
            "precision_at_5_exact": round(exact, 4),
            "precision_at_5_catalogue_gallery": catalogue_gallery(gallery, set(test)),
            "precision_at_5_hnsw": round(hnsw, 4),
            "precision_at_5_exact_by_part": parts,
            "precision_at_5_exact_learnt_types": learnt_only,
            "champion_classes": len(version.classes),
            "target": 0.90,
            "reference": "0.75 ImageNet DenseNet-161, 0.85 fine-tuned (a public project on "
            "this data set)",
            "real_vector_stats": vector_stats(real),
            "synthetic_vector_stats": vector_stats(Generator().rows(0, len(real))),
            "beside": args.beside,
        },
    )


def catalogue_gallery(gallery, test: set[int]) -> dict:
    """Precision@5 of each labelled test picture's nearest among every other labelled picture of
    the catalogue (train and validation pictures included: what a search meets)."""
    ids = np.asarray([i for i, _, _ in gallery])
    vectors = np.asarray([json.loads(v) for _, v, _ in gallery], dtype=np.float32)
    truth = np.asarray([t for _, _, t in gallery])
    queries = np.flatnonzero(np.isin(ids, list(test)))
    hits = []
    for start in range(0, len(queries), 512):
        chunk = queries[start : start + 512]
        similarity = vectors[chunk] @ vectors.T
        similarity[np.arange(len(chunk)), chunk] = -np.inf
        top = np.argpartition(-similarity, 5, axis=1)[:, :5]
        hits.append((truth[top] == truth[chunk, None]).mean(axis=1))
    found = np.concatenate(hits)
    print(f"precision@5 against the whole catalogue {found.mean():.4f}", flush=True)
    return {"queries": len(queries), "gallery": len(ids),
            "precision_at_5": round(float(found.mean()), 4)}  # fmt: skip


# ---------------------------------------------------------------- main


def part_clean(args) -> None:
    if args.pg.exists():
        server = scratch_server(args.pg)
        server.cleanup()
        shutil.rmtree(args.pg, ignore_errors=True)
    print(f"removed {args.pg}")


def _width(args) -> str:
    """Result keys name the width unless it is 1,408 (the first runs': the old head's input)."""
    return "" if args.dims == 1408 else f"-d{args.dims}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["scale", "write", "quality", "clean"])
    parser.add_argument("--size", type=int, default=100_000, help="stored vectors")
    parser.add_argument("--queries", type=int, default=500, help="HNSW queries timed")
    parser.add_argument("--exact-queries", type=int, default=100, help="exact queries timed")
    parser.add_argument("--warmup", type=int, default=100, help="untimed HNSW queries first")
    parser.add_argument("--rows", type=int, default=10_240, help="vectors written per path")
    parser.add_argument("--maintenance-work-mem", default="2GB")
    parser.add_argument("--pg", type=Path, default=PG_DIR, help="the scratch server's folder")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "similar.json")
    parser.add_argument("--beside", default=os.environ.get("BENCH_BESIDE", ""),
                        help="what else ran on the machine (recorded)")  # fmt: skip
    parser.add_argument("--version", help="quality: the category model version (default: champion)")
    parser.add_argument("--force", action="store_true")
    parser.add_argument(
        "--dims", type=int, default=256,
        help="synthetic vectors' width (256: the pretrained networks' category embedding; 1408: "
        "mobilenet_v2_050's features, which networks trained before it stored)",
    )  # fmt: skip
    args = parser.parse_args()
    global DIMS
    DIMS = args.dims
    {"scale": part_scale, "write": part_write, "quality": part_quality, "clean": part_clean}[
        args.part
    ](args)


if __name__ == "__main__":
    main()
