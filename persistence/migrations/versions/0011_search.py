"""search: the search index over live records (search_documents), with each database's full-text structure

SQLite: the FTS5 table `search_fts` over `search_documents` (external content, rowid = id), kept
in step by three triggers. PostgreSQL: the weighted `tsvector` column `search_vector` and its GIN
index. Neither is in the SQLModel metadata (persistence.search_index.in_models tells the model
comparison to skip them).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 01:45:00.000000
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

_SQLITE_UP = (
    "CREATE VIRTUAL TABLE search_fts USING fts5(title, body, content='search_documents', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER search_documents_ai AFTER INSERT ON search_documents BEGIN "
    "INSERT INTO search_fts(rowid, title, body) VALUES (new.id, new.title, new.body); END",
    "CREATE TRIGGER search_documents_ad AFTER DELETE ON search_documents BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, title, body) VALUES ('delete', old.id, old.title, old.body); END",
    "CREATE TRIGGER search_documents_au AFTER UPDATE ON search_documents BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, title, body) VALUES ('delete', old.id, old.title, old.body); "
    "INSERT INTO search_fts(rowid, title, body) VALUES (new.id, new.title, new.body); END",
)
_SQLITE_DOWN = (
    "DROP TRIGGER IF EXISTS search_documents_au",
    "DROP TRIGGER IF EXISTS search_documents_ad",
    "DROP TRIGGER IF EXISTS search_documents_ai",
    "DROP TABLE IF EXISTS search_fts",
)


def upgrade() -> None:
    op.create_table('search_documents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('record_id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('integration_id', sa.Uuid(), nullable=False),
    sa.Column('owner_key', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('entity', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('search_documents', schema=None) as batch_op:
        batch_op.create_index('ix_search_documents_scope', ['tenant_id', 'integration_id', 'owner_key', 'entity'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_search_documents_record_id'), ['record_id'], unique=True)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE search_documents ADD COLUMN search_vector tsvector NOT NULL DEFAULT ''::tsvector")
        op.execute("CREATE INDEX ix_search_documents_vector ON search_documents USING gin (search_vector)")
    else:
        for statement in _SQLITE_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        for statement in _SQLITE_DOWN:
            op.execute(statement)
    with op.batch_alter_table('search_documents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_search_documents_record_id'))
        batch_op.drop_index('ix_search_documents_scope')
    op.drop_table('search_documents')
