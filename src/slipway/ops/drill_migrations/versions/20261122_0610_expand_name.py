"""drill, expand: add drill_items.name beside title, backfilled and kept in step

After this migration the old code (reads and writes `title` only) and the new code (reads
and writes `name` only) run side by side: a trigger copies whichever column a statement
set into the other, on insert and on update. `title` becomes nullable, because the new
code never writes it (the trigger does).

Order matters: column, then trigger, then backfill. Rows the old code inserts after the
backfill are covered by the trigger; on PostgreSQL all three happen in one transaction.

Revision ID: d002_expand_name
Revises: d001_drill_items
Create Date: 2026-11-22 06:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d002_expand_name"
down_revision: str | None = "d001_drill_items"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PG_FUNCTION = """
CREATE FUNCTION drill_items_sync_name() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.name := COALESCE(NEW.name, NEW.title);
        NEW.title := COALESCE(NEW.title, NEW.name);
    ELSIF NEW.title IS DISTINCT FROM OLD.title AND NEW.name IS NOT DISTINCT FROM OLD.name THEN
        NEW.name := NEW.title;
    ELSIF NEW.name IS DISTINCT FROM OLD.name AND NEW.title IS NOT DISTINCT FROM OLD.title THEN
        NEW.title := NEW.name;
    END IF;
    RETURN NEW;
END
$$
"""
PG_TRIGGER = """
CREATE TRIGGER drill_items_sync_name BEFORE INSERT OR UPDATE ON drill_items
FOR EACH ROW EXECUTE FUNCTION drill_items_sync_name()
"""
# SQLite triggers cannot change NEW: they fix the row up right after the statement.
SQLITE_TRIGGERS = (
    """
    CREATE TRIGGER drill_items_sync_insert AFTER INSERT ON drill_items
    BEGIN
        UPDATE drill_items
        SET name = COALESCE(NEW.name, NEW.title), title = COALESCE(NEW.title, NEW.name)
        WHERE id = NEW.id;
    END
    """,
    """
    CREATE TRIGGER drill_items_sync_title AFTER UPDATE OF title ON drill_items
    WHEN NEW.title IS NOT OLD.title AND NEW.name IS OLD.name
    BEGIN
        UPDATE drill_items SET name = NEW.title WHERE id = NEW.id;
    END
    """,
    """
    CREATE TRIGGER drill_items_sync_name AFTER UPDATE OF name ON drill_items
    WHEN NEW.name IS NOT OLD.name AND NEW.title IS OLD.title
    BEGIN
        UPDATE drill_items SET title = NEW.name WHERE id = NEW.id;
    END
    """,
)
SQLITE_TRIGGER_NAMES = (
    "drill_items_sync_insert",
    "drill_items_sync_title",
    "drill_items_sync_name",
)


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def create_sync_triggers() -> None:
    if _postgres():
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def drop_sync_triggers() -> None:
    if _postgres():
        op.execute("DROP TRIGGER IF EXISTS drill_items_sync_name ON drill_items")
        op.execute("DROP FUNCTION IF EXISTS drill_items_sync_name()")
    else:
        for name in SQLITE_TRIGGER_NAMES:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")


def upgrade() -> None:
    if _postgres():
        # Give up quickly instead of queueing every query behind a blocked ALTER.
        op.execute("SET LOCAL lock_timeout = '5s'")
    # Adding a nullable column without a default is a catalog-only change on PostgreSQL.
    with op.batch_alter_table("drill_items") as batch:
        batch.add_column(sa.Column("name", sa.String(length=200), nullable=True))
        batch.alter_column("title", existing_type=sa.String(length=200), nullable=True)
    create_sync_triggers()
    # A big table is backfilled in batches, each in its own transaction (runbook).
    op.execute("UPDATE drill_items SET name = title WHERE name IS NULL")


def downgrade() -> None:
    if _postgres():
        op.execute("SET LOCAL lock_timeout = '5s'")
    drop_sync_triggers()
    op.execute("UPDATE drill_items SET title = name WHERE title IS NULL")
    with op.batch_alter_table("drill_items") as batch:
        batch.alter_column("title", existing_type=sa.String(length=200), nullable=False)
        batch.drop_column("name")
