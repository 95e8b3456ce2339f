"""Consensus batches: annotation batches of kind 'consensus' (one mask per sample agreed from several
annotators' masks, with each annotator's reliability in the provenance).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 05:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_OLD = sa.Enum('uploaded', 'curated', name='batch_kind')
_NEW = sa.Enum('uploaded', 'curated', 'consensus', name='batch_kind')


def _sqlite_kind(old: sa.Enum, new: sa.Enum) -> None:
    with op.batch_alter_table('annotation_batches') as batch:
        batch.alter_column(
            'kind', existing_type=old, type_=new, existing_server_default='uploaded', existing_nullable=False
        )


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        _sqlite_kind(_OLD, _NEW)
        return
    # PostgreSQL >= 12 adds an enum value inside a transaction (it is usable once committed).
    op.execute("ALTER TYPE batch_kind ADD VALUE IF NOT EXISTS 'consensus'")


def downgrade() -> None:
    # Consensus batches are derived data (their masks are copies): they go, with their annotations.
    op.execute("DELETE FROM annotation_batches WHERE kind = 'consensus'")
    if op.get_bind().dialect.name != 'postgresql':
        _sqlite_kind(_NEW, _OLD)
        return
    # An enum value cannot be dropped: rebuild the type without it.
    op.execute("ALTER TABLE annotation_batches ALTER COLUMN kind DROP DEFAULT")
    op.execute("ALTER TYPE batch_kind RENAME TO batch_kind_old")
    op.execute("CREATE TYPE batch_kind AS ENUM ('uploaded', 'curated')")
    op.execute(
        "ALTER TABLE annotation_batches ALTER COLUMN kind TYPE batch_kind USING kind::text::batch_kind"
    )
    op.execute("ALTER TABLE annotation_batches ALTER COLUMN kind SET DEFAULT 'uploaded'")
    op.execute("DROP TYPE batch_kind_old")
