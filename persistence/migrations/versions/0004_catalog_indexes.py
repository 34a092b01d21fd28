"""catalog indexes: providers in each catalog order

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 08:00:00.000000
"""
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# The tenant catalog filters on (status, audience) and sorts by one of these, id breaking ties:
# with an index per sort key, its first page, offset pages and keyset (cursor) pages are index
# range scans instead of a sort of the whole catalog. ~4% of the table each (75 MB at 1M rows).
SORT_COLUMNS = ('name', 'display_name', 'provider', 'created_at', 'updated_at')


def upgrade() -> None:
    with op.batch_alter_table('providers', schema=None) as batch_op:
        for column in SORT_COLUMNS:
            batch_op.create_index(f'ix_providers_catalog_{column}', ['status', 'audience', column, 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('providers', schema=None) as batch_op:
        for column in reversed(SORT_COLUMNS):
            batch_op.drop_index(f'ix_providers_catalog_{column}')
