"""More like this: the products nearest to a catalogued picture, or to a photo the catalogue has
never seen, by the category champion's embeddings.

A search walks the champion version's HNSW index (`embeddings`) and returns products of the
marketplace with their cosine distance (0: the same vector, 2: opposite). `--account` searches
that account's products exactly (a small set: the index would return other accounts' first);
`--same-category` reads more neighbours from the index and keeps those of the picture's category.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

from pipeline.errors import CatalogueError
from pipeline.picture_names import PictureNameError, find_picture
from pipeline.similar import EMBEDDING_ATTRIBUTE
from pipeline.similar.embeddings import distance_sql, normalised, vector_text

MAX_LIMIT = 1000
OVERFETCH = 5  # neighbours read from the index per answer kept, when filtering by category
MIN_EF_SEARCH = 100  # the HNSW candidate list, at least (pgvector's default is 40)


class SimilarError(CatalogueError, ValueError):
    """A search that cannot be answered; the message says why and what to do."""


@dataclass(frozen=True)
class Neighbour:
    image_id: int
    shortcode: str
    position: int
    account: str
    category: str | None
    colour: str | None
    duplicate_group: int | None
    distance: float


@dataclass(frozen=True)
class EmbeddingVersion:
    id: int
    version: str


@dataclass(frozen=True)
class Query:
    """What a search starts from: a vector, and the picture it is when it is catalogued."""

    vector: np.ndarray
    image_id: int | None = None
    category: str | None = None
    description: str = ""


def embedding_version(engine: Engine) -> EmbeddingVersion:
    """The version whose embeddings searches read: the category champion."""
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT id, version FROM catalogue.model_versions "
                "WHERE status = 'champion' AND attribute = :a"
            ),
            {"a": EMBEDDING_ATTRIBUTE},
        ).one_or_none()
    if row is None:
        raise SimilarError(
            f"no {EMBEDDING_ATTRIBUTE} champion yet, so no picture is embedded: train one "
            "(`catalogue train`) and run `catalogue predict`"
        )
    return EmbeddingVersion(row.id, row.version)


def catalogued_query(engine: Engine, version: EmbeddingVersion, name: str) -> Query:
    """The stored embedding of a catalogued picture (`pipeline.picture_names`), or why there is
    none."""
    with engine.connect() as connection:
        try:
            picture = find_picture(connection, name)
        except PictureNameError as exc:
            raise SimilarError(str(exc)) from None
        found = connection.execute(
            text(
                "SELECT CAST(e.embedding AS text) AS vector, "
                "(SELECT category FROM marketplace.products WHERE image_id = :i) AS category "
                "FROM catalogue.image_embeddings e "
                "WHERE e.model_version_id = :v AND e.image_id = :i"
            ),
            {"v": version.id, "i": picture.image_id},
        ).one_or_none()
    described = f"{picture.shortcode}/{picture.position}"
    if found is None:
        if not picture.listed:
            raise SimilarError(
                f"{described} is no longer listed on Instagram, so it is not embedded"
            )
        raise SimilarError(
            f"{described} is not embedded by {version.version} yet: the next predict run embeds "
            "it (`catalogue predict`, or the nightly predict_catalogue DAG)"
        )
    return Query(
        vector=np.asarray([float(x) for x in found.vector.strip("[]").split(",")], np.float32),
        image_id=picture.image_id,
        category=found.category,
        description=described,
    )


_LOADED: dict[str, Any] = {}  # champion version -> its loaded network, kept by a process


def photo_query(engine: Engine, *, settings, path: Path) -> Query:
    """A photo's embedding by the champion, after the checks every imported picture passes. The
    champion's network is loaded once per process (a web server answers many searches)."""
    from pipeline.artefacts import EMBEDDING, artefact_cache, decode
    from pipeline.collect.images import MAX_BYTES, ImageRefused, check_image
    from pipeline.predict.champions import current_champions, load_scoring_models
    from pipeline.storage import ObjectStore

    data = read_photo(path, max_bytes=MAX_BYTES)
    try:
        check_image(data)
    except ImageRefused as exc:
        raise SimilarError(f"{path}: {exc}") from exc
    champion = current_champions(engine=engine, attributes=[EMBEDDING_ATTRIBUTE])[0]
    model = _LOADED.get(champion.version)
    if model is None:
        (model,) = load_scoring_models(
            [champion], store=ObjectStore.for_models(settings), cache_dir=artefact_cache(settings)
        )
        _LOADED.clear()  # only the current champion's network stays in memory
        _LOADED[champion.version] = model
    try:
        picture = decode(data, model.image_size)
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's refusals
        raise SimilarError(f"{path}: not a picture Pillow can decode ({exc})") from exc
    answers = model.probabilities(picture[None])
    probabilities = answers[EMBEDDING_ATTRIBUTE][0]
    best = int(np.argmax(probabilities))
    return Query(
        vector=normalised(answers[EMBEDDING])[0],
        category=champion.classes[best],
        description=f"{path.name} (looks like {champion.classes[best]}, "
        f"{float(probabilities[best]):.2f})",
    )


def read_photo(path: Path, *, max_bytes: int) -> bytes:
    """The file's bytes, refusing what is not a readable regular file or is too big (read no
    more than the limit, whatever the file claims)."""
    path = Path(path)
    if not path.exists():
        raise SimilarError(f"{path}: no such file")
    if not path.is_file():
        raise SimilarError(f"{path}: not a regular file")
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise SimilarError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if len(data) > max_bytes:
        raise SimilarError(f"{path}: file too big (over {max_bytes:,} bytes)")
    return data


def nearest(
    engine: Engine, version: EmbeddingVersion, query: Query, *, limit: int = 10,
    same_category: bool = False, account: str | None = None,
) -> list[Neighbour]:  # fmt: skip
    """The products nearest to the query, nearest first (the query's own picture left out)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise SimilarError(f"--limit must be between 1 and {MAX_LIMIT}, not {limit}")
    if same_category and not query.category:
        raise SimilarError(f"{query.description} has no category yet, so --same-category has none")
    dims = int(query.vector.shape[0])
    distance = distance_sql(dims, ":query")
    where = ["e.model_version_id = :version"]
    params = {"query": vector_text(query.vector), "version": version.id,
              "exclude": query.image_id or 0}  # fmt: skip
    with engine.begin() as connection:
        if account is not None:
            found = connection.execute(
                text("SELECT 1 FROM raw.accounts WHERE username = :a"), {"a": account}
            ).first()
            if found is None:
                raise SimilarError(f"no account {account!r} in the catalogue")
            # one account's products: an exact scan of a small set
            where.append("e.image_id IN (SELECT image_id FROM marketplace.products "
                         "WHERE account = :account)")  # fmt: skip
            params["account"] = account
            candidates = limit + 1
            order = f"{distance} + 0.0"  # not the index's expression: an exact scan
        else:
            order = distance
            candidates = (limit + 1) * (OVERFETCH if same_category else 1)
            connection.execute(
                text("SELECT set_config('hnsw.ef_search', :ef, true)"),
                {"ef": str(max(candidates, MIN_EF_SEARCH))},
            )
        rows = connection.execute(
            text(
                f"""
                SELECT p.image_id, p.shortcode, p.position, p.account, p.category, p.colour,
                       p.duplicate_group, n.distance
                FROM (SELECT e.image_id, CAST({distance} AS float8) AS distance
                      FROM catalogue.image_embeddings e
                      WHERE {" AND ".join(where)}
                      ORDER BY {order}
                      LIMIT :candidates) n
                JOIN marketplace.products p ON p.image_id = n.image_id
                WHERE n.image_id <> :exclude
                  AND (CAST(:category AS text) IS NULL OR p.category = :category)
                ORDER BY n.distance, p.image_id
                LIMIT :limit
                """
            ),
            {**params, "candidates": candidates, "limit": limit,
             "category": query.category if same_category else None},
        ).all()  # fmt: skip
    return [Neighbour(*row) for row in rows]
