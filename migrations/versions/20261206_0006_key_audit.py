"""Who issued and revoked each API key (and why); browser sessions signed out before they expire.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 20:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:
        batch.add_column(sa.Column('created_by', sa.String(length=200), nullable=False, server_default=''))
        batch.add_column(sa.Column('revoked_by', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('revoke_note', sa.String(length=2000), nullable=True))
    op.create_table(
        'ended_sessions',
        sa.Column('nonce', sa.String(length=64), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('nonce', name=op.f('pk_ended_sessions')),
    )
    op.create_index(op.f('ix_ended_sessions_expires_at'), 'ended_sessions', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_ended_sessions_expires_at'), table_name='ended_sessions')
    op.drop_table('ended_sessions')
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('revoke_note')
        batch.drop_column('revoked_by')
        batch.drop_column('created_by')
