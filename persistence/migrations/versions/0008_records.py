"""records: the records store (synced provider objects) and its per-integration sequence

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 01:30:00.000000
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('records',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('integration_id', sa.Uuid(), nullable=False),
    sa.Column('owner_key', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=True),
    sa.Column('entity', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('external_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('content_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('provider_updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_modified_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_action', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('last_seen_run_id', sa.Uuid(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('integration_id', 'owner_key', 'entity', 'external_id', name='uq_records_identity')
    )
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.create_index('ix_records_owner_seq', ['integration_id', 'owner_key', 'seq'], unique=False)
        batch_op.create_index('ix_records_integration_seq', ['integration_id', 'seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_records_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('record_sequences',
    sa.Column('integration_id', sa.Uuid(), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('integration_id')
    )


def downgrade() -> None:
    op.drop_table('record_sequences')
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_records_tenant_id'))
        batch_op.drop_index('ix_records_integration_seq')
        batch_op.drop_index('ix_records_owner_seq')
    op.drop_table('records')
