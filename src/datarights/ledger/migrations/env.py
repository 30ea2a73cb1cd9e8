"""Alembic environment: the ledger passes its own connection (config.attributes["connection"])."""

from alembic import context

from datarights.ledger.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
