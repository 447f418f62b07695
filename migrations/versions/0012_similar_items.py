"""Similar items and duplicate listings: picture embeddings in pgvector, perceptual hashes, groups.

- The `vector` extension (pgvector) is required from here on; `pipeline.db.migrate` says what to
  install before this revision runs when the server lacks it.
- `catalogue.image_embeddings`: the champion network's penultimate layer, L2-normalised, per
  image and model version (the predict stage writes it in the pass that scores the picture). The
  column is a `vector` of the network's width; each model version gets its own HNSW index
  (cosine) on `embedding::vector(n)` restricted to its rows, made by the predict stage when the
  version starts embedding (`pipeline.similar.embeddings.ensure_index`), so a rollback finds the
  previous version's vectors and index as they were.
- `catalogue.image_hashes`: a 64-bit perceptual hash of each picture and of its mirror image, and
  its colour histogram (`pipeline.similar.hashing`).
- `catalogue.image_duplicates`: pictures found to show the same product as another, with their
  group (the smallest image id of the group); `catalogue.duplicate_checks`: the pictures the
  grouping step has compared with the rest, per embedding version, so a run does only the new ones.
- `marketplace.products.duplicate_group` and the view `marketplace.duplicate_listings` (a group,
  its listings and accounts; a group whose other listings left the marketplace is not one) for
  analysts; `marketplace.similar_products(shortcode, position, k)`
  returns the nearest products to a product's picture, callable by the reader role.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import context, op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = Path(__file__).parents[1] / "sql"  # functions other revisions redefine, as applied


def _roles() -> dict[str, str]:
    names = context.config.attributes.get("role_names")
    if names is None:
        from pipeline.config import Settings

        names = Settings.from_env().role_names
    return names


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    bind = op.get_bind()
    vector_schema = bind.exec_driver_sql(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'vector'"
    ).scalar_one()
    op.execute(
        f"""
        CREATE TABLE catalogue.image_embeddings (
            model_version_id integer NOT NULL
                REFERENCES catalogue.model_versions (id) ON DELETE CASCADE,
            image_id bigint NOT NULL REFERENCES raw.images (id) ON DELETE CASCADE,
            embedding {vector_schema}.vector NOT NULL,
            embedded_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_image_embeddings PRIMARY KEY (model_version_id, image_id)
        )
        """
    )
    op.execute("CREATE INDEX ix_image_embeddings_image_id ON catalogue.image_embeddings (image_id)")
    op.execute(
        """
        CREATE TABLE catalogue.image_hashes (
            image_id bigint PRIMARY KEY REFERENCES raw.images (id) ON DELETE CASCADE,
            phash bigint NOT NULL,
            phash_mirrored bigint NOT NULL,
            colours real[] NOT NULL CHECK (cardinality(colours) = 64),
            hashed_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE catalogue.image_duplicates (
            image_id bigint PRIMARY KEY REFERENCES raw.images (id) ON DELETE CASCADE,
            group_id bigint NOT NULL,
            model_version_id integer REFERENCES catalogue.model_versions (id) ON DELETE SET NULL,
            grouped_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ix_image_duplicates_group_id ON catalogue.image_duplicates (group_id)")
    op.execute(
        """
        CREATE TABLE catalogue.duplicate_checks (
            model_version_id integer NOT NULL
                REFERENCES catalogue.model_versions (id) ON DELETE CASCADE,
            image_id bigint NOT NULL REFERENCES raw.images (id) ON DELETE CASCADE,
            checked_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_duplicate_checks PRIMARY KEY (model_version_id, image_id)
        )
        """
    )
    op.execute("ALTER TABLE marketplace.products ADD COLUMN duplicate_group bigint")
    op.execute(
        "CREATE INDEX ix_products_duplicate_group ON marketplace.products (duplicate_group) "
        "WHERE duplicate_group IS NOT NULL"
    )
    op.execute(
        """
        CREATE VIEW marketplace.duplicate_listings AS
        SELECT duplicate_group AS group_id,
               count(*) AS listings,
               count(DISTINCT account) AS accounts,
               array_agg(DISTINCT account ORDER BY account) AS account_names,
               array_agg(shortcode || '/' || position ORDER BY image_id) AS pictures,
               min(category) AS category
        FROM marketplace.products
        WHERE duplicate_group IS NOT NULL
        GROUP BY duplicate_group
        HAVING count(*) > 1
        """
    )
    op.execute(
        """
        COMMENT ON VIEW marketplace.duplicate_listings IS
        'Groups of listings that show the same product (the same photo re-encoded, resized,
         cropped, mirrored, overlaid or reposted by another account): one row per group.'
        """
    )
    op.execute((SQL / "similar_products.0012.sql").read_text().replace("@vector@", vector_schema))
    roles = _roles()
    app, reader, moderator = roles["app"], roles["reader"], roles["moderator"]
    tables = ("catalogue.image_embeddings, catalogue.image_hashes, catalogue.image_duplicates, "
              "catalogue.duplicate_checks")  # fmt: skip
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {app}")
    op.execute(f"GRANT SELECT ON {tables} TO {reader}, {moderator}")
    op.execute(f"GRANT SELECT ON marketplace.duplicate_listings TO {app}, {reader}, {moderator}")
    op.execute(f"GRANT USAGE ON SCHEMA {vector_schema} TO {app}, {reader}, {moderator}")
    op.execute(
        "REVOKE ALL ON FUNCTION marketplace.similar_products(text, integer, integer) FROM PUBLIC"
    )
    op.execute(
        "GRANT EXECUTE ON FUNCTION marketplace.similar_products(text, integer, integer) "
        f"TO {app}, {reader}, {moderator}"
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION marketplace.similar_products(text, integer, integer)")
    op.execute("DROP VIEW marketplace.duplicate_listings")
    op.execute("ALTER TABLE marketplace.products DROP COLUMN duplicate_group")
    op.execute("DROP TABLE catalogue.duplicate_checks")
    op.execute("DROP TABLE catalogue.image_duplicates")
    op.execute("DROP TABLE catalogue.image_hashes")
    op.execute("DROP TABLE catalogue.image_embeddings")
    # the extension stays: other objects of the database may use it
