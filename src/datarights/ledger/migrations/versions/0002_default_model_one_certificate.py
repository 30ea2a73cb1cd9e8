"""The default model is a flag set only when asked; one certificate per opt-out and job.

- models.is_default: the model opt-outs and paid generations use when none is named. Set on the model
  that was the default before this revision (the newest base model), so nothing changes on upgrade.
- a unique index on certificates (job_id, optout_id): a job certifies each of its opt-outs once.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    # a constant default: SQLite adds the column in place (no table rebuild)
    op.add_column("models", sa.Column("is_default", sa.Boolean, nullable=False, server_default="0"))
    models = sa.table("models", sa.column("id", sa.Integer), sa.column("base_id", sa.Integer),
                      sa.column("is_default", sa.Boolean))
    conn = op.get_bind()
    newest = conn.execute(sa.select(sa.func.max(models.c.id)).where(models.c.base_id.is_(None))).scalar()
    if newest is not None:
        conn.execute(models.update().where(models.c.id == newest).values(is_default=True))
    op.create_index("uq_certificates_job_optout", "certificates", ["job_id", "optout_id"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_certificates_job_optout", "certificates")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("is_default")
