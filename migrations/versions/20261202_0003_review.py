"""Review and annotators: decisions per job and sample (history kept), curated annotation batches with
provenance, per-annotator statistics per job.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 01:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KIND = sa.Enum('uploaded', 'curated', name='batch_kind')
_CHOICE = sa.Enum('accept_correction', 'keep_original', 'needs_reannotation', name='review_choice')


def upgrade() -> None:
    _KIND.create(op.get_bind(), checkfirst=True)
    op.add_column(
        'annotation_batches', sa.Column('kind', _KIND, server_default='uploaded', nullable=False)
    )
    op.add_column('annotation_batches', sa.Column('provenance', sa.JSON(), nullable=True))
    op.create_table('review_decisions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('sample_id', sa.Uuid(), nullable=False),
    sa.Column('decision', _CHOICE, nullable=False),
    sa.Column('reviewer', sa.String(length=200), nullable=False),
    sa.Column('api_key_id', sa.Uuid(), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('superseded_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_review_decisions_api_key_id_api_keys'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['job_id'], ['training_jobs.id'], name=op.f('fk_review_decisions_job_id_training_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_review_decisions_sample_id_samples'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_decisions'))
    )
    op.create_index(op.f('ix_review_decisions_job_id'), 'review_decisions', ['job_id'], unique=False)
    op.create_table('annotator_stats',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('annotator', sa.String(length=200), nullable=False),
    sa.Column('n_masks', sa.Integer(), nullable=False),
    sa.Column('n_flagged', sa.Integer(), nullable=False),
    sa.Column('dice_vs_model', sa.Float(), nullable=True),
    sa.Column('area_ratio', sa.Float(), nullable=True),
    sa.Column('offset_px', sa.Float(), nullable=True),
    sa.Column('offset_spread_px', sa.Float(), nullable=True),
    sa.Column('relative_offset_px', sa.Float(), nullable=True),
    sa.Column('edge_alignment', sa.Float(), nullable=True),
    sa.Column('suspect', sa.Boolean(), nullable=False),
    sa.Column('verdict', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['training_jobs.id'], name=op.f('fk_annotator_stats_job_id_training_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotator_stats')),
    sa.UniqueConstraint('job_id', 'annotator', name=op.f('uq_annotator_stats_job_id_annotator'))
    )
    op.create_index(op.f('ix_annotator_stats_job_id'), 'annotator_stats', ['job_id'], unique=False)
    op.create_index(
        'uq_review_decisions_current', 'review_decisions', ['job_id', 'sample_id'], unique=True,
        postgresql_where=sa.text('superseded_at IS NULL'), sqlite_where=sa.text('superseded_at IS NULL'),
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_annotator_stats_job_id'), table_name='annotator_stats')
    op.drop_table('annotator_stats')
    op.drop_index('uq_review_decisions_current', table_name='review_decisions')
    op.drop_index(op.f('ix_review_decisions_job_id'), table_name='review_decisions')
    op.drop_table('review_decisions')
    sa.Enum(name='review_choice').drop(op.get_bind(), checkfirst=True)
    op.drop_column('annotation_batches', 'provenance')
    op.drop_column('annotation_batches', 'kind')
    _KIND.drop(op.get_bind(), checkfirst=True)
