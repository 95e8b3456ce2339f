"""Noise flags say why a flagged mask's correction was not proposed: the gate's first failed check, or that
the job withheld every correction.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 14:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('noise_flags') as batch:
        batch.add_column(sa.Column('withheld_because', sa.String(length=160), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('noise_flags') as batch:
        batch.drop_column('withheld_because')
