"""The first ledger schema: owners, works, datasets, models, opt-outs, jobs, certificates, payouts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "owners",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "works",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("owners.id"), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("phash", sa.BigInteger, nullable=False),
        sa.Column("caption", sa.Text, nullable=False),
        sa.Column("policy", sa.String(20), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_works_owner_id", "works", ["owner_id"])
    op.create_index("ix_works_phash", "works", ["phash"])
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("images", sa.Integer, nullable=False),
        sa.Column("duplicates", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("name", "version"),
    )
    op.create_table(
        "dataset_works",
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("work_id", sa.Integer, sa.ForeignKey("works.id"), nullable=False),
        sa.Column("file_name", sa.Text, nullable=False),
        sa.Column("duplicate_of", sa.Integer, nullable=True),
    )
    op.create_index("ix_dataset_works_work_id", "dataset_works", ["work_id"])
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id"), nullable=True),
        sa.Column("base_id", sa.Integer, sa.ForeignKey("models.id"), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_models_weights_sha256", "models", ["weights_sha256"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("optouts", sa.JSON, nullable=False),
        sa.Column("method", sa.String(40), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("stage", sa.String(40), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("edited_path", sa.Text, nullable=True),
        sa.Column("edited_model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=True),
        sa.Column("audit", sa.JSON, nullable=True),
        sa.Column("attacks", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=True),
    )
    op.create_table(
        "optouts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("owners.id"), nullable=False),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("concept", sa.String(200), nullable=False),
        sa.Column("anchor", sa.String(200), nullable=False),
        sa.Column("works", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_optouts_owner_id", "optouts", ["owner_id"])
    op.create_table(
        "optout_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("optout_id", sa.Integer, sa.ForeignKey("optouts.id"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_optout_events_optout_id", "optout_events", ["optout_id"])
    op.create_table(
        "certificates",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("optout_id", sa.Integer, sa.ForeignKey("optouts.id"), nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_certificates_optout_id", "certificates", ["optout_id"])
    op.create_table(
        "attribution_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("method", sa.String(40), nullable=False),
        sa.Column("shares", sa.JSON, nullable=False),
        sa.Column("revenue_cents", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_attribution_events_image_sha256", "attribution_events", ["image_sha256"])
    op.create_index("ix_attribution_events_created_at", "attribution_events", ["created_at"])
    op.create_table(
        "payouts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("event_id", sa.Integer, sa.ForeignKey("attribution_events.id"), nullable=False),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("owners.id"), nullable=False),
        sa.Column("cents", sa.Integer, nullable=False),
        sa.Column("share", sa.Float, nullable=False),
    )
    op.create_index("ix_payouts_event_id", "payouts", ["event_id"])
    op.create_index("ix_payouts_owner_id", "payouts", ["owner_id"])


def downgrade() -> None:
    for table in ("payouts", "attribution_events", "certificates", "optout_events", "optouts", "jobs", "models",
                  "dataset_works", "datasets", "works", "owners"):
        op.drop_table(table)
