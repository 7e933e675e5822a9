"""catalog: products with full-text search

PostgreSQL gets a stored tsvector column with a GIN index (queried with
websearch_to_tsquery); SQLite gets an external-content FTS5 table kept in step by triggers.

Revision ID: 0300_catalog
Revises: 0100_identity
Create Date: 2026-11-22 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0300_catalog"
down_revision: str | None = "0100_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("price_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("stock >= 0", name=op.f("ck_products_stock_non_negative")),
        sa.CheckConstraint("price_minor >= 0", name=op.f("ck_products_price_non_negative")),
        sa.CheckConstraint(
            "status IN ('active', 'archived')", name=op.f("ck_products_status_valid")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
        sa.UniqueConstraint("sku", name=op.f("uq_products_sku")),
    )
    op.create_index("ix_products_status_created_at_id", "products", ["status", "created_at", "id"])
    op.create_index(
        "ix_products_status_price_minor_id", "products", ["status", "price_minor", "id"]
    )
    op.create_index("ix_products_status_name_id", "products", ["status", "name", "id"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE products ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
            "setweight(to_tsvector('english', coalesce(name, '')), 'A') || "
            "setweight(to_tsvector('english', coalesce(sku, '')), 'A') || "
            "setweight(to_tsvector('english', coalesce(description, '')), 'B')) STORED"
        )
        # fastupdate off: new entries go straight into the index instead of a pending list
        # that every search must scan until (auto)vacuum merges it. Catalogue writes are
        # rare and searches are hot, and with a long pending list the planner stops
        # choosing the index at all (seen after bulk loads: a sequential scan for `q`).
        op.execute(
            "CREATE INDEX ix_products_search_vector ON products USING gin (search_vector) "
            "WITH (fastupdate = off)"
        )
    else:
        op.execute(
            "CREATE VIRTUAL TABLE products_fts USING fts5("
            "name, sku, description, content='products', content_rowid='id', "
            "tokenize='porter unicode61')"
        )
        op.execute(
            "CREATE TRIGGER products_fts_ai AFTER INSERT ON products BEGIN "
            "INSERT INTO products_fts(rowid, name, sku, description) "
            "VALUES (new.id, new.name, new.sku, new.description); END"
        )
        op.execute(
            "CREATE TRIGGER products_fts_ad AFTER DELETE ON products BEGIN "
            "INSERT INTO products_fts(products_fts, rowid, name, sku, description) "
            "VALUES ('delete', old.id, old.name, old.sku, old.description); END"
        )
        op.execute(
            "CREATE TRIGGER products_fts_au AFTER UPDATE OF name, sku, description ON products "
            "BEGIN "
            "INSERT INTO products_fts(products_fts, rowid, name, sku, description) "
            "VALUES ('delete', old.id, old.name, old.sku, old.description); "
            "INSERT INTO products_fts(rowid, name, sku, description) "
            "VALUES (new.id, new.name, new.sku, new.description); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_products_search_vector")
    else:
        for trigger in ("products_fts_ai", "products_fts_ad", "products_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS products_fts")
    op.drop_index("ix_products_status_name_id", table_name="products")
    op.drop_index("ix_products_status_price_minor_id", table_name="products")
    op.drop_index("ix_products_status_created_at_id", table_name="products")
    op.drop_table("products")
