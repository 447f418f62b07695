"""The catalogue's tables as typed SQLAlchemy models.

The schema itself changes only through Alembic revisions in `migrations/`; a test checks that these
models and the migrated database agree.

Three Postgres schemas:
- `raw`: what was collected, as Instagram gave it (accounts, posts, images, refused inputs).
- `catalogue`: what people and models decided about it (taxonomy, labels, models).
- `marketplace`: what the marketplace reads (one product row per catalogued image).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    REAL,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SCHEMAS = ("raw", "catalogue", "marketplace")

ACCOUNT_STATUSES = ("active", "private", "renamed", "deleted", "personal", "blocked", "failing")
MEDIA_TYPES = ("image", "sidecar", "video")
LABEL_SOURCES = ("moderator", "model")

Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def created_at_column() -> Mapped[datetime]:
    return mapped_column(Timestamp, nullable=False, server_default=func.now())


# -- raw ----------------------------------------------------------------------------------------
class Account(Base):
    """An Instagram account whose posts are collected, with the state of its collection."""

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(
            "status IN ('active', 'private', 'renamed', 'deleted', 'personal', 'blocked', "
            "'failing')",
            name="status",
        ),
        CheckConstraint("username = lower(username)", name="username_lowercase"),
        Index(None, "enabled", "status"),
        {"schema": "raw"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    username: Mapped[str] = mapped_column(String(30), nullable=False, unique=True)
    instagram_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    full_name: Mapped[str | None] = mapped_column(Text)
    is_business: Mapped[bool | None] = mapped_column(Boolean)
    allow_personal: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    follower_count: Mapped[int | None] = mapped_column(BigInteger)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="active")
    status_reason: Mapped[str | None] = mapped_column(Text)
    # Incremental collection: the newest post stored, and instaloader's frozen iterator state for
    # a capped run's backfill (NodeIterator.freeze()), continued until `backfill_until`.
    newest_post_taken_at: Mapped[datetime | None] = mapped_column(Timestamp)
    newest_shortcode: Mapped[str | None] = mapped_column(String(64))
    resume_cursor: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    backfill_until: Mapped[datetime | None] = mapped_column(Timestamp)
    last_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_success_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_failure_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(
        Timestamp, nullable=False, server_default=func.now(), onupdate=func.now()
    )
    # fields whose text held characters Postgres refuses (NUL, lone surrogates), stored cleaned
    cleaned: Mapped[list[str] | None] = mapped_column(ARRAY(Text))


class AccountName(Base):
    """A username an account was seen under: the current one and those before an Instagram
    rename (same Instagram id, new name), with when each was seen."""

    __tablename__ = "account_names"
    __table_args__ = (Index(None, "username"), {"schema": "raw"})

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("raw.accounts.id", ondelete="CASCADE"), primary_key=True
    )
    username: Mapped[str] = mapped_column(String(30), primary_key=True)
    seen_from: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    seen_until: Mapped[datetime] = mapped_column(Timestamp, nullable=False)


class Post(Base):
    """One Instagram post (single image, carousel or video), keyed on Instagram's ids."""

    __tablename__ = "posts"
    __table_args__ = (
        CheckConstraint("media_type IN ('image', 'sidecar', 'video')", name="media_type"),
        Index("ix_posts_account_id_taken_at", "account_id", text("taken_at DESC")),
        Index(None, "collected_at"),
        {"schema": "raw"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    shortcode: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    media_id: Mapped[int] = mapped_column(BigInteger, nullable=False, unique=True)
    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("raw.accounts.id", ondelete="CASCADE"), nullable=False
    )
    taken_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    caption: Mapped[str | None] = mapped_column(Text)
    hashtags: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")
    )
    like_count: Mapped[int | None] = mapped_column(BigInteger)
    comment_count: Mapped[int | None] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(16), nullable=False)
    location: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    node: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False, server_default="instagram")
    collected_at: Mapped[datetime] = created_at_column()
    refreshed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Set when Instagram no longer serves the post; it then leaves the marketplace.
    unavailable_since: Mapped[datetime | None] = mapped_column(Timestamp)
    # When the listing that the stored fields and slide positions follow was seen: an older one
    # (an earlier archive imported later) never moves what a newer one placed.
    listed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # fields whose text held characters Postgres refuses (NUL, lone surrogates), stored cleaned
    cleaned: Mapped[list[str] | None] = mapped_column(ARRAY(Text))


class Image(Base):
    """One picture: a single post's image, a carousel child, or a video's cover.

    Identified by its own Instagram media id, so a shop deleting one carousel slide never moves
    labels onto another picture; `position` is only where it currently sits in its post.
    """

    __tablename__ = "images"
    __table_args__ = (
        CheckConstraint("position >= 0", name="position_not_negative"),
        CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name="sha256_hex"),
        Index(
            None,
            "post_id",
            "position",
            unique=True,
            postgresql_where=text("removed_at IS NULL"),
        ),
        Index(None, "sha256"),
        Index(None, "created_at"),
        {"schema": "raw"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    media_id: Mapped[int] = mapped_column(BigInteger, nullable=False, unique=True)
    post_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("raw.posts.id", ondelete="CASCADE"), nullable=False
    )
    position: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    is_video_cover: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    object_key: Mapped[str] = mapped_column(Text, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    content_type: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    # A slide the shop removed from its carousel; its labels stay attached to it.
    removed_at: Mapped[datetime | None] = mapped_column(Timestamp)


class QuarantinedInput(Base):
    """An input that was refused (corrupt image, malformed row...), with the reason.

    `input_ref` names the input (URL, archive path, CSV line) so a rerun updates the same row.
    """

    __tablename__ = "quarantine"
    __table_args__ = (
        UniqueConstraint("source", "input_ref"),
        Index(None, "created_at"),
        {"schema": "raw"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    input_ref: Mapped[str] = mapped_column(Text, nullable=False)
    account: Mapped[str | None] = mapped_column(String(30))
    shortcode: Mapped[str | None] = mapped_column(String(64))
    position: Mapped[int | None] = mapped_column(SmallInteger)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    detail: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    created_at: Mapped[datetime] = created_at_column()
    last_seen_at: Mapped[datetime] = created_at_column()


class Purge(Base):
    """The audit record of a takedown: what was deleted, for whom, by whom."""

    __tablename__ = "purges"
    __table_args__ = (
        CheckConstraint("target_kind IN ('account', 'post')", name="target_kind"),
        {"schema": "raw"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    target_kind: Mapped[str] = mapped_column(String(16), nullable=False)
    target: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text("current_user")
    )
    posts: Mapped[int] = mapped_column(Integer, nullable=False)
    images: Mapped[int] = mapped_column(Integer, nullable=False)
    objects_deleted: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = created_at_column()


class InstagramRequest(Base):
    """One request the rate controller let through: its sliding windows survive processes."""

    __tablename__ = "instagram_requests"
    __table_args__ = (
        Index("ix_instagram_requests_session_requested_at", "session", "requested_at"),
        {"schema": "raw"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    session: Mapped[str] = mapped_column(Text, nullable=False)
    query_type: Mapped[str] = mapped_column(Text, nullable=False)
    requested_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)


# -- catalogue ----------------------------------------------------------------------------------
class TaxonomyVersion(Base):
    """One loaded version of the colour/category taxonomy (a YAML document), by content hash."""

    __tablename__ = "taxonomy_versions"
    __table_args__ = ({"schema": "catalogue"},)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    checksum: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    loaded_by: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text("current_user")
    )
    loaded_at: Mapped[datetime] = created_at_column()


class Attribute(Base):
    """An attribute images are labelled with (colour, category, and any the taxonomy adds)."""

    __tablename__ = "attributes"
    __table_args__ = ({"schema": "catalogue"},)

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    levels: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    train_at: Mapped[str] = mapped_column(Text, nullable=False)
    position: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    taxonomy_version_id: Mapped[int] = mapped_column(
        ForeignKey("catalogue.taxonomy_versions.id"), nullable=False
    )


class AttributeValue(Base):
    """A value of an attribute, with its path in the grouping (family > colour, group > type)."""

    __tablename__ = "attribute_values"
    __table_args__ = ({"schema": "catalogue"},)

    attribute: Mapped[str] = mapped_column(
        String(64), ForeignKey("catalogue.attributes.name"), primary_key=True
    )
    value: Mapped[str] = mapped_column(Text, primary_key=True)
    path: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    parent: Mapped[str | None] = mapped_column(Text)
    depth: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    taxonomy_version_id: Mapped[int] = mapped_column(
        ForeignKey("catalogue.taxonomy_versions.id"), nullable=False
    )
    retired_at: Mapped[datetime | None] = mapped_column(Timestamp)


class ValueAlias(Base):
    """Another spelling of a value, by its comparison key (`taxonomy.value_key`)."""

    __tablename__ = "value_aliases"
    __table_args__ = (
        ForeignKeyConstraint(
            ["attribute", "value"],
            ["catalogue.attribute_values.attribute", "catalogue.attribute_values.value"],
            name="fk_value_aliases_attribute_attribute_values",
        ),
        {"schema": "catalogue"},
    )

    attribute: Mapped[str] = mapped_column(String(64), primary_key=True)
    alias_key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class LabelJob(Base):
    """One recorded change of labels: a moderator's labels, an import, a relabel job, an undo."""

    __tablename__ = "label_jobs"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('label', 'import', 'rename', 'move', 'clear', 'apply_csv', 'undo')",
            name="kind",
        ),
        Index(None, "created_at"),
        {"schema": "catalogue"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    arguments: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'")
    )
    created_by: Mapped[str] = mapped_column(Text, nullable=False)
    db_role: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("session_user"))
    origin: Mapped[str] = mapped_column(String(16), nullable=False, server_default=text("'cli'"))
    airflow_run_id: Mapped[str | None] = mapped_column(Text)
    labels_written: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    undoes_job_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("catalogue.label_jobs.id"), unique=True
    )
    created_at: Mapped[datetime] = created_at_column()


class Label(Base):
    """One label decision, never updated: the current label is the newest row (a view)."""

    __tablename__ = "labels"
    __table_args__ = (
        CheckConstraint("source IN ('moderator', 'import', 'relabel', 'undo')", name="source"),
        ForeignKeyConstraint(
            ["attribute", "value"],
            ["catalogue.attribute_values.attribute", "catalogue.attribute_values.value"],
            name="fk_labels_attribute_attribute_values",
        ),
        Index(None, "image_id", "attribute", "id"),
        Index(None, "job_id"),
        Index(None, "created_at"),
        # one chain per image and attribute: one first label, and each label replaced once
        Index(
            "ix_labels_replaces_label_id",
            "replaces_label_id",
            unique=True,
            postgresql_where=text("replaces_label_id IS NOT NULL"),
        ),
        Index(
            "ix_labels_image_id_attribute_first",
            "image_id",
            "attribute",
            unique=True,
            postgresql_where=text("replaces_label_id IS NULL"),
        ),
        {"schema": "catalogue"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    image_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("raw.images.id", ondelete="CASCADE"), nullable=False
    )
    attribute: Mapped[str] = mapped_column(
        String(64), ForeignKey("catalogue.attributes.name"), nullable=False
    )
    value: Mapped[str | None] = mapped_column(Text)  # NULL: the label was cleared
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    moderator: Mapped[str] = mapped_column(Text, nullable=False)
    created_by: Mapped[str] = mapped_column(Text, nullable=False)
    db_role: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("session_user"))
    note: Mapped[str | None] = mapped_column(Text)
    replaces_label_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("catalogue.labels.id")
    )
    job_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("catalogue.label_jobs.id"), nullable=False
    )
    created_at: Mapped[datetime] = created_at_column()


class Prediction(Base):
    """The latest model prediction of an image's attribute, with what the review queue needs."""

    __tablename__ = "predictions"
    __table_args__ = (
        CheckConstraint("confidence BETWEEN 0 AND 1", name="confidence_range"),
        Index(None, "attribute", "margin"),
        {"schema": "catalogue"},
    )

    image_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("raw.images.id", ondelete="CASCADE"), primary_key=True
    )
    attribute: Mapped[str] = mapped_column(
        String(64), ForeignKey("catalogue.attributes.name"), primary_key=True
    )
    value: Mapped[str] = mapped_column(Text, nullable=False)
    confidence: Mapped[float] = mapped_column(REAL, nullable=False)
    margin: Mapped[float] = mapped_column(REAL, nullable=False)  # top-1 minus top-2 probability
    top: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'")
    )
    needs_review: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    model_version: Mapped[str] = mapped_column(Text, nullable=False)
    predicted_at: Mapped[datetime] = created_at_column()


class DatasetSnapshot(Base):
    """A training set made from the labels, by content hash; its manifest is in the models bucket."""

    __tablename__ = "dataset_snapshots"
    __table_args__ = ({"schema": "catalogue"},)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    checksum: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    manifest_key: Mapped[str] = mapped_column(Text, nullable=False)
    taxonomy_version_id: Mapped[int] = mapped_column(
        ForeignKey("catalogue.taxonomy_versions.id"), nullable=False
    )
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    counts: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    images: Mapped[int] = mapped_column(Integer, nullable=False)
    labels_up_to: Mapped[int | None] = mapped_column(BigInteger)  # newest label id included
    created_by: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = created_at_column()


class ModelVersion(Base):
    """One attribute's model from one training run; at most one champion per attribute."""

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint("status IN ('candidate', 'champion', 'retired')", name="status"),
        Index(
            "ix_model_versions_one_champion",
            "attribute",
            unique=True,
            postgresql_where=text("status = 'champion'"),
        ),
        {"schema": "catalogue"},
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    attribute: Mapped[str] = mapped_column(
        String(64), ForeignKey("catalogue.attributes.name"), nullable=False
    )
    version: Mapped[str] = mapped_column(String(80), nullable=False, unique=True)
    run: Mapped[str] = mapped_column(String(64), nullable=False)  # one artefact, many heads
    artefact_key: Mapped[str] = mapped_column(Text, nullable=False)
    architecture: Mapped[str] = mapped_column(String(64), nullable=False)
    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("catalogue.dataset_snapshots.id"), nullable=False
    )
    backend: Mapped[str] = mapped_column(String(16), nullable=False)
    classes: Mapped[list[str]] = mapped_column(JSONB, nullable=False)
    image_size: Mapped[list[int]] = mapped_column(ARRAY(Integer), nullable=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'")
    )
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # the promotion gate's verdict
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=text("'candidate'")
    )
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    promoted_at: Mapped[datetime | None] = mapped_column(Timestamp)
    promoted_by: Mapped[str | None] = mapped_column(Text)
    retired_at: Mapped[datetime | None] = mapped_column(Timestamp)


class ModelPrediction(Base):
    """What one model version said about one image, kept after the model is retired: a rollback
    restores the previous champion's values from here without rescoring."""

    __tablename__ = "model_predictions"
    __table_args__ = (
        CheckConstraint("confidence BETWEEN 0 AND 1", name="confidence_range"),
        Index(None, "image_id"),
        {"schema": "catalogue"},
    )

    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("catalogue.model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("raw.images.id", ondelete="CASCADE"), primary_key=True
    )
    value: Mapped[str] = mapped_column(Text, nullable=False)
    confidence: Mapped[float] = mapped_column(REAL, nullable=False)
    margin: Mapped[float] = mapped_column(REAL, nullable=False)
    top: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    needs_review: Mapped[bool] = mapped_column(Boolean, nullable=False)
    predicted_at: Mapped[datetime] = created_at_column()


class UnscorableImage(Base):
    """A picture predict could not use: `undecodable` (never tried again) or `missing`."""

    __tablename__ = "unscorable_images"
    __table_args__ = (
        CheckConstraint("kind IN ('undecodable', 'missing')", name="kind"),
        {"schema": "catalogue"},
    )

    image_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("raw.images.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    first_seen: Mapped[datetime] = created_at_column()
    last_seen: Mapped[datetime] = created_at_column()


# -- marketplace --------------------------------------------------------------------------------
class Product(Base):
    """One catalogued image as the marketplace sees it (the contract in ARCHITECTURE.md)."""

    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("colour_source IN ('moderator', 'model')", name="colour_source"),
        CheckConstraint("category_source IN ('moderator', 'model')", name="category_source"),
        CheckConstraint(
            "colour_confidence IS NULL OR colour_confidence BETWEEN 0 AND 1",
            name="colour_confidence_range",
        ),
        CheckConstraint(
            "category_confidence IS NULL OR category_confidence BETWEEN 0 AND 1",
            name="category_confidence_range",
        ),
        UniqueConstraint("shortcode", "position"),
        Index(None, "account"),
        Index(None, "colour"),
        Index(None, "category"),
        Index(None, "updated_at"),
        Index("ix_products_needs_review", "image_id", postgresql_where=text("needs_review")),
        {"schema": "marketplace"},
    )

    image_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("raw.images.id", ondelete="CASCADE"), primary_key=True
    )
    shortcode: Mapped[str] = mapped_column(String(64), nullable=False)
    position: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    account: Mapped[str] = mapped_column(String(30), nullable=False)
    image_key: Mapped[str] = mapped_column(Text, nullable=False)
    colour: Mapped[str | None] = mapped_column(Text)
    colour_source: Mapped[str | None] = mapped_column(String(16))
    colour_confidence: Mapped[float | None] = mapped_column(REAL)
    category: Mapped[str | None] = mapped_column(Text)
    category_source: Mapped[str | None] = mapped_column(String(16))
    category_confidence: Mapped[float | None] = mapped_column(REAL)
    model_version: Mapped[str | None] = mapped_column(Text)
    needs_review: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    updated_at: Mapped[datetime] = mapped_column(
        Timestamp, nullable=False, server_default=func.now(), onupdate=func.now()
    )


class ProductAttribute(Base):
    """Attributes added to the taxonomy beyond colour and category, with the same fields."""

    __tablename__ = "product_attributes"
    __table_args__ = (
        CheckConstraint("source IN ('moderator', 'model')", name="source"),
        CheckConstraint(
            "confidence IS NULL OR confidence BETWEEN 0 AND 1", name="confidence_range"
        ),
        Index(None, "attribute", "value"),
        {"schema": "marketplace"},
    )

    image_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("marketplace.products.image_id", ondelete="CASCADE"),
        primary_key=True,
    )
    attribute: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(16))
    confidence: Mapped[float | None] = mapped_column(REAL)
    model_version: Mapped[str | None] = mapped_column(Text)
    needs_review: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    updated_at: Mapped[datetime] = mapped_column(
        Timestamp, nullable=False, server_default=func.now(), onupdate=func.now()
    )
