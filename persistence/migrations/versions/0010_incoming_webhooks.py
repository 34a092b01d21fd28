"""incoming webhooks: providers' verification declarations, integrations' secrets, received notifications

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 01:30:00.000000
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook_verification', sa.JSON(), nullable=True))
    # Vault-sealed (AES-256-GCM bound to tenant and integration), never the secret itself.
    with op.batch_alter_table('integrations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook_secret', sqlmodel.sql.sqltypes.AutoString(), nullable=True))

    op.create_table('incoming_webhooks',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('integration_id', sa.Uuid(), nullable=False),
    sa.Column('provider_event_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('entity', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('external_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('record', sa.JSON(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('integration_id', 'provider_event_id', name='uq_incoming_webhooks_event')
    )
    with op.batch_alter_table('incoming_webhooks', schema=None) as batch_op:
        batch_op.create_index('ix_incoming_webhooks_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_incoming_webhooks_received_at'), ['received_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('incoming_webhooks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_incoming_webhooks_received_at'))
        batch_op.drop_index('ix_incoming_webhooks_due')
    op.drop_table('incoming_webhooks')
    with op.batch_alter_table('integrations', schema=None) as batch_op:
        batch_op.drop_column('webhook_secret')
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.drop_column('webhook_verification')
