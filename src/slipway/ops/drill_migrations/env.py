"""Alembic environment of the expand-contract drill (docs/runbook/migrations.md).

A script directory of its own, with its own version table, so the drill never touches the
application's schema or its `alembic_version`: only tests and the runbook use it, through
`slipway.ops.drill_code.migrate_drill`, which hands over an open connection.
"""

from __future__ import annotations

from alembic import context

from slipway.ops.drill_code import DRILL_VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=None,
    version_table=DRILL_VERSION_TABLE,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
