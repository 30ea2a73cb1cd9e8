"""Queued jobs of every kind, payments recorded once, colour signatures of works.

- jobs.kind ('erase' or 'attribute'), jobs.payload (what a queued job is to do), jobs.result, and
  jobs.idempotency_key (unique): long work is queued by the web server and run by a worker process.
- attribution_events.idempotency_key (unique: a retried paid generation returns the first event)
  and attribution_events.currency (ISO 4217; the amounts are integer minor units, cents).
- works.colors: a 4x4 colour thumbnail (48 bytes), so that a lookup's "near copy" needs the colours
  to match too (the perceptual hash sees grey levels only).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("kind", sa.String(20), nullable=False, server_default="erase"))
    op.add_column("jobs", sa.Column("payload", sa.JSON, nullable=True))
    op.add_column("jobs", sa.Column("result", sa.JSON, nullable=True))
    op.add_column("jobs", sa.Column("idempotency_key", sa.String(64), nullable=True))
    op.create_index("ix_jobs_idempotency_key", "jobs", ["idempotency_key"], unique=True)
    op.add_column("attribution_events", sa.Column("idempotency_key", sa.String(64), nullable=True))
    op.add_column("attribution_events", sa.Column("currency", sa.String(3), nullable=False, server_default="USD"))
    op.create_index("ix_attribution_events_idempotency_key", "attribution_events", ["idempotency_key"], unique=True)
    op.add_column("works", sa.Column("colors", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    op.drop_index("ix_attribution_events_idempotency_key", "attribution_events")
    op.drop_index("ix_jobs_idempotency_key", "jobs")
    for table, col in (("works", "colors"), ("attribution_events", "currency"), ("attribution_events", "idempotency_key"),
                       ("jobs", "idempotency_key"), ("jobs", "result"), ("jobs", "payload"), ("jobs", "kind")):
        with op.batch_alter_table(table) as batch:
            batch.drop_column(col)
