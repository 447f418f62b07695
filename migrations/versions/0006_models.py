"""Training: dataset snapshots and the model registry.

- `catalogue.dataset_snapshots`: each training set made from the labels, by content hash, with the
  object key of its manifest, the taxonomy version, counts, and the newest label it includes.
- `catalogue.model_versions`: one row per attribute per trained artefact, with its metrics on the
  snapshot's test split, status (candidate, champion, retired), the promotion gate's verdict, and
  who promoted it when. At most one champion per attribute.

Moderators read both (default privileges); only the application changes them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _now(name: str = "created_at") -> sa.Column:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "dataset_snapshots",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("manifest_key", sa.Text(), nullable=False),
        sa.Column("taxonomy_version_id", sa.Integer(), nullable=False),
        sa.Column("attributes", postgresql.JSONB(), nullable=False),
        sa.Column("counts", postgresql.JSONB(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("labels_up_to", sa.BigInteger()),
        sa.Column("created_by", sa.Text(), nullable=False),
        _now(),
        sa.PrimaryKeyConstraint("id", name="pk_dataset_snapshots"),
        sa.UniqueConstraint("checksum", name="uq_dataset_snapshots_checksum"),
        sa.ForeignKeyConstraint(
            ["taxonomy_version_id"],
            ["catalogue.taxonomy_versions.id"],
            name="fk_dataset_snapshots_taxonomy_version_id_taxonomy_versions",
        ),
        schema="catalogue",
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("attribute", sa.String(64), nullable=False),
        sa.Column("version", sa.String(80), nullable=False),
        sa.Column("run", sa.String(64), nullable=False),
        sa.Column("artefact_key", sa.Text(), nullable=False),
        sa.Column("architecture", sa.String(64), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("classes", postgresql.JSONB(), nullable=False),
        sa.Column("image_size", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("metrics", postgresql.JSONB(), nullable=False),
        sa.Column("params", postgresql.JSONB(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("gate", postgresql.JSONB()),
        sa.Column("status", sa.String(16), server_default=sa.text("'candidate'"), nullable=False),
        sa.Column("status_reason", sa.Text()),
        sa.Column("created_by", sa.Text(), nullable=False),
        _now(),
        sa.Column("promoted_at", sa.DateTime(timezone=True)),
        sa.Column("promoted_by", sa.Text()),
        sa.Column("retired_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint("version", name="uq_model_versions_version"),
        sa.ForeignKeyConstraint(
            ["attribute"],
            ["catalogue.attributes.name"],
            name="fk_model_versions_attribute_attributes",
        ),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["catalogue.dataset_snapshots.id"],
            name="fk_model_versions_snapshot_id_dataset_snapshots",
        ),
        sa.CheckConstraint(
            "status IN ('candidate', 'champion', 'retired')", name="ck_model_versions_status"
        ),
        schema="catalogue",
    )
    op.create_index(
        "ix_model_versions_one_champion",
        "model_versions",
        ["attribute"],
        unique=True,
        postgresql_where=sa.text("status = 'champion'"),
        schema="catalogue",
    )


def downgrade() -> None:
    op.drop_table("model_versions", schema="catalogue")
    op.drop_table("dataset_snapshots", schema="catalogue")
