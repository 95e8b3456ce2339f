"""Noise flags record, per foreground class, the Dice of the given mask to the network's prediction: which
structure of a multi-class mask looks wrong.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 22:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('noise_flags') as batch:
        batch.add_column(sa.Column('class_dice', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('noise_flags') as batch:
        batch.drop_column('class_dice')
