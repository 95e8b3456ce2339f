"""NIfTI volumes: stored as uploaded, trained slice-wise; a sample may be a slice of a volume.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 04:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'volumes',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('dataset_id', sa.Uuid(), nullable=False),
        sa.Column('name', sa.String(length=500), nullable=False),
        sa.Column('file_name', sa.String(length=500), nullable=False),
        sa.Column('object_key', sa.String(length=500), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('shape', sa.JSON(), nullable=False),
        sa.Column('spacing', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['dataset_id'], ['datasets.id'], name=op.f('fk_volumes_dataset_id_datasets'), ondelete='CASCADE'
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_volumes')),
        sa.UniqueConstraint('dataset_id', 'name', name=op.f('uq_volumes_dataset_id_name')),
        sa.UniqueConstraint('dataset_id', 'sha256', name=op.f('uq_volumes_dataset_id_sha256')),
    )
    op.create_index(op.f('ix_volumes_dataset_id'), 'volumes', ['dataset_id'], unique=False)
    with op.batch_alter_table('samples') as batch:
        batch.add_column(sa.Column('volume_id', sa.Uuid(), nullable=True))
        batch.add_column(sa.Column('slice_index', sa.Integer(), nullable=True))
        batch.create_index(batch.f('ix_samples_volume_id'), ['volume_id'], unique=False)
        batch.create_foreign_key(
            batch.f('fk_samples_volume_id_volumes'), 'volumes', ['volume_id'], ['id'], ondelete='CASCADE'
        )


def downgrade() -> None:
    with op.batch_alter_table('samples') as batch:
        batch.drop_constraint(batch.f('fk_samples_volume_id_volumes'), type_='foreignkey')
        batch.drop_index(batch.f('ix_samples_volume_id'))
        batch.drop_column('slice_index')
        batch.drop_column('volume_id')
    op.drop_index(op.f('ix_volumes_dataset_id'), table_name='volumes')
    op.drop_table('volumes')
