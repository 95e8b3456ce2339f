"""Self-assessment: training_jobs.quality, gmm_rounds, held-back samples, changed pixels.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 20:50:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('training_jobs', sa.Column('quality', sa.JSON(), nullable=True))
    op.add_column(
        'noise_flags', sa.Column('held_out', sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column('corrected_masks', sa.Column('changed_pixels', sa.Integer(), nullable=True))
    op.create_table('gmm_rounds',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('separation', sa.Float(), nullable=False),
    sa.Column('mean_clean', sa.Float(), nullable=False),
    sa.Column('mean_noisy', sa.Float(), nullable=False),
    sa.Column('var_clean', sa.Float(), nullable=False),
    sa.Column('var_noisy', sa.Float(), nullable=False),
    sa.Column('weight_clean', sa.Float(), nullable=False),
    sa.Column('weight_noisy', sa.Float(), nullable=False),
    sa.Column('threshold', sa.Float(), nullable=False),
    sa.Column('n_flagged', sa.Integer(), nullable=False),
    sa.Column('n_changed', sa.Integer(), nullable=False),
    sa.Column('applied', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['training_jobs.id'], name=op.f('fk_gmm_rounds_job_id_training_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gmm_rounds')),
    sa.UniqueConstraint('job_id', 'round', name=op.f('uq_gmm_rounds_job_id_round'))
    )
    op.create_index(op.f('ix_gmm_rounds_job_id'), 'gmm_rounds', ['job_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_gmm_rounds_job_id'), table_name='gmm_rounds')
    op.drop_table('gmm_rounds')
    op.drop_column('corrected_masks', 'changed_pixels')
    op.drop_column('noise_flags', 'held_out')
    op.drop_column('training_jobs', 'quality')
