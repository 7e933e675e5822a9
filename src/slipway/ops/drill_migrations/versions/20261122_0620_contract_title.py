"""drill, contract: drop drill_items.title once no running code reads or writes it

Deployed only after every process runs the new code. `name` becomes NOT NULL; on
PostgreSQL through a CHECK constraint added NOT VALID and validated separately, which
SET NOT NULL then trusts instead of scanning the table under an exclusive lock.

The downgrade restores the intermediate (expand) schema: `title` back, backfilled from
`name`, and the sync triggers, so the old code can run again.

Revision ID: d003_contract_title
Revises: d002_expand_name
Create Date: 2026-11-22 06:20:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "d003_contract_title"
down_revision: str | None = "d002_expand_name"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECK = "ck_drill_items_name_not_null"


def _expand() -> ModuleType:
    # The trigger definitions live in the expand migration; load them from there rather
    # than keeping two copies in step (script files are not an importable package).
    path = Path(__file__).with_name("20261122_0610_expand_name.py")
    spec = importlib.util.spec_from_file_location("drill_expand", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("SET LOCAL lock_timeout = '5s'")
    _expand().drop_sync_triggers()
    if postgres:
        op.execute(
            f"ALTER TABLE drill_items ADD CONSTRAINT {CHECK} CHECK (name IS NOT NULL) NOT VALID"
        )
        op.execute(f"ALTER TABLE drill_items VALIDATE CONSTRAINT {CHECK}")
    with op.batch_alter_table("drill_items") as batch:
        batch.alter_column("name", existing_type=sa.String(length=200), nullable=False)
        batch.drop_column("title")
    if postgres:
        op.execute(f"ALTER TABLE drill_items DROP CONSTRAINT {CHECK}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SET LOCAL lock_timeout = '5s'")
    with op.batch_alter_table("drill_items") as batch:
        batch.add_column(sa.Column("title", sa.String(length=200), nullable=True))
        batch.alter_column("name", existing_type=sa.String(length=200), nullable=True)
    _expand().create_sync_triggers()
    op.execute("UPDATE drill_items SET title = name WHERE title IS NULL")
