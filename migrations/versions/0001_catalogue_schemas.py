"""Schemas raw, catalogue, marketplace; accounts, posts, images, quarantine, taxonomy versions,
marketplace products.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMAS = ("raw", "catalogue", "marketplace")
TS = sa.DateTime(timezone=True)


def _created_at(name: str = "created_at") -> sa.Column:
    return sa.Column(name, TS, server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    for schema in SCHEMAS:
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")

    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("username", sa.String(30), nullable=False),
        sa.Column("instagram_id", sa.BigInteger()),
        sa.Column("full_name", sa.Text()),
        sa.Column("is_business", sa.Boolean()),
        sa.Column("allow_personal", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("follower_count", sa.BigInteger()),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("status", sa.String(16), server_default="active", nullable=False),
        sa.Column("status_reason", sa.Text()),
        sa.Column("newest_post_taken_at", TS),
        sa.Column("newest_shortcode", sa.String(64)),
        sa.Column("resume_cursor", postgresql.JSONB()),
        sa.Column("backfill_until", TS),
        sa.Column("last_attempt_at", TS),
        sa.Column("last_success_at", TS),
        sa.Column("last_failure_at", TS),
        sa.Column("last_failure_reason", sa.Text()),
        _created_at(),
        _created_at("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("username", name="uq_accounts_username"),
        sa.UniqueConstraint("instagram_id", name="uq_accounts_instagram_id"),
        sa.CheckConstraint(
            "status IN ('active', 'private', 'renamed', 'deleted', 'personal', 'blocked', "
            "'failing')",
            name="ck_accounts_status",
        ),
        sa.CheckConstraint("username = lower(username)", name="ck_accounts_username_lowercase"),
        schema="raw",
    )
    op.create_index("ix_accounts_enabled_status", "accounts", ["enabled", "status"], schema="raw")

    op.create_table(
        "posts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("shortcode", sa.String(64), nullable=False),
        sa.Column("media_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("taken_at", TS, nullable=False),
        sa.Column("caption", sa.Text()),
        sa.Column(
            "hashtags",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("like_count", sa.BigInteger()),
        sa.Column("comment_count", sa.BigInteger()),
        sa.Column("media_type", sa.String(16), nullable=False),
        sa.Column("location", postgresql.JSONB()),
        sa.Column("node", postgresql.JSONB(), nullable=False),
        sa.Column("source", sa.String(16), server_default="instagram", nullable=False),
        _created_at("collected_at"),
        sa.Column("refreshed_at", TS),
        sa.Column("unavailable_since", TS),
        sa.PrimaryKeyConstraint("id", name="pk_posts"),
        sa.UniqueConstraint("shortcode", name="uq_posts_shortcode"),
        sa.UniqueConstraint("media_id", name="uq_posts_media_id"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["raw.accounts.id"],
            name="fk_posts_account_id_accounts",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "media_type IN ('image', 'sidecar', 'video')", name="ck_posts_media_type"
        ),
        schema="raw",
    )
    op.create_index(
        "ix_posts_account_id_taken_at",
        "posts",
        ["account_id", sa.text("taken_at DESC")],
        schema="raw",
    )
    op.create_index("ix_posts_collected_at", "posts", ["collected_at"], schema="raw")

    op.create_table(
        "images",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("media_id", sa.BigInteger(), nullable=False),
        sa.Column("post_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("is_video_cover", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("object_key", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        _created_at(),
        sa.Column("removed_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.UniqueConstraint("media_id", name="uq_images_media_id"),
        sa.ForeignKeyConstraint(
            ["post_id"], ["raw.posts.id"], name="fk_images_post_id_posts", ondelete="CASCADE"
        ),
        sa.CheckConstraint("position >= 0", name="ck_images_position_not_negative"),
        sa.CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name="ck_images_sha256_hex"),
        schema="raw",
    )
    op.create_index(
        "ix_images_post_id_position",
        "images",
        ["post_id", "position"],
        unique=True,
        postgresql_where=sa.text("removed_at IS NULL"),
        schema="raw",
    )
    op.create_index("ix_images_sha256", "images", ["sha256"], schema="raw")
    op.create_index("ix_images_created_at", "images", ["created_at"], schema="raw")

    op.create_table(
        "quarantine",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("input_ref", sa.Text(), nullable=False),
        sa.Column("account", sa.String(30)),
        sa.Column("shortcode", sa.String(64)),
        sa.Column("position", sa.SmallInteger()),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("sha256", sa.String(64)),
        sa.Column("bytes", sa.BigInteger()),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
        _created_at(),
        _created_at("last_seen_at"),
        sa.PrimaryKeyConstraint("id", name="pk_quarantine"),
        sa.UniqueConstraint("source", "input_ref", name="uq_quarantine_source_input_ref"),
        schema="raw",
    )
    op.create_index("ix_quarantine_created_at", "quarantine", ["created_at"], schema="raw")

    op.create_table(
        "taxonomy_versions",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("document", postgresql.JSONB(), nullable=False),
        sa.Column("loaded_by", sa.Text(), server_default=sa.text("current_user"), nullable=False),
        _created_at("loaded_at"),
        sa.PrimaryKeyConstraint("id", name="pk_taxonomy_versions"),
        sa.UniqueConstraint("checksum", name="uq_taxonomy_versions_checksum"),
        schema="catalogue",
    )

    op.create_table(
        "products",
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("shortcode", sa.String(64), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("account", sa.String(30), nullable=False),
        sa.Column("image_key", sa.Text(), nullable=False),
        sa.Column("colour", sa.Text()),
        sa.Column("colour_source", sa.String(16)),
        sa.Column("colour_confidence", sa.REAL()),
        sa.Column("category", sa.Text()),
        sa.Column("category_source", sa.String(16)),
        sa.Column("category_confidence", sa.REAL()),
        sa.Column("model_version", sa.Text()),
        sa.Column("needs_review", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _created_at("updated_at"),
        sa.PrimaryKeyConstraint("image_id", name="pk_products"),
        sa.UniqueConstraint("shortcode", "position", name="uq_products_shortcode_position"),
        sa.ForeignKeyConstraint(
            ["image_id"], ["raw.images.id"], name="fk_products_image_id_images", ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            "colour_source IN ('moderator', 'model')", name="ck_products_colour_source"
        ),
        sa.CheckConstraint(
            "category_source IN ('moderator', 'model')", name="ck_products_category_source"
        ),
        sa.CheckConstraint(
            "colour_confidence IS NULL OR colour_confidence BETWEEN 0 AND 1",
            name="ck_products_colour_confidence_range",
        ),
        sa.CheckConstraint(
            "category_confidence IS NULL OR category_confidence BETWEEN 0 AND 1",
            name="ck_products_category_confidence_range",
        ),
        schema="marketplace",
    )
    for column in ("account", "colour", "category", "updated_at"):
        op.create_index(f"ix_products_{column}", "products", [column], schema="marketplace")
    op.create_index(
        "ix_products_needs_review",
        "products",
        ["image_id"],
        postgresql_where=sa.text("needs_review"),
        schema="marketplace",
    )

    op.create_table(
        "product_attributes",
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("attribute", sa.String(64), nullable=False),
        sa.Column("value", sa.Text()),
        sa.Column("source", sa.String(16)),
        sa.Column("confidence", sa.REAL()),
        sa.Column("model_version", sa.Text()),
        sa.Column("needs_review", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _created_at("updated_at"),
        sa.PrimaryKeyConstraint("image_id", "attribute", name="pk_product_attributes"),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["marketplace.products.image_id"],
            name="fk_product_attributes_image_id_products",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("source IN ('moderator', 'model')", name="ck_product_attributes_source"),
        sa.CheckConstraint(
            "confidence IS NULL OR confidence BETWEEN 0 AND 1",
            name="ck_product_attributes_confidence_range",
        ),
        schema="marketplace",
    )
    op.create_index(
        "ix_product_attributes_attribute_value",
        "product_attributes",
        ["attribute", "value"],
        schema="marketplace",
    )


def downgrade() -> None:
    op.drop_table("product_attributes", schema="marketplace")
    op.drop_table("products", schema="marketplace")
    op.drop_table("taxonomy_versions", schema="catalogue")
    op.drop_table("quarantine", schema="raw")
    op.drop_table("images", schema="raw")
    op.drop_table("posts", schema="raw")
    op.drop_table("accounts", schema="raw")
    for schema in reversed(SCHEMAS):
        op.execute(f"DROP SCHEMA IF EXISTS {schema}")
