"""Noise flags record which evidence decided: the evidence column that raised the mask's doubt most
(gtcorrect.verdict), "held back" for held-back masks, "loss" for the paper's split.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 18:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('noise_flags') as batch:
        batch.add_column(sa.Column('decided_by', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('noise_flags') as batch:
        batch.drop_column('decided_by')
