"""Deployment lines, review requests, the concepts' registered owners, certificate kinds.

- models.line_id (the line's base model; a base model is its own line) and models.is_current (the
  model a line serves now: opt-outs are erased on top of it). On upgrade every line is served by
  its base model, as before: the edits made so far were each made from the base.
- optouts.filed_by_id (who filed it; owner_id is whose concept it is) and optouts.review_by
  ('owner' or 'admin': who confirms a request in status 'review').
- concepts: every style, character and memorized image the registered works show, with its owner
  when exactly one owner's works show it.
- certificates.kind ('erase', or 're-audit' of an earlier opt-out against a later model),
  certificates.model_id (the model it speaks of) and certificates.verdict.

Revision ID: 0003
Revises: 0002
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("models", sa.Column("line_id", sa.Integer, nullable=True))
    op.add_column("models", sa.Column("is_current", sa.Boolean, nullable=False, server_default="0"))
    op.create_index("ix_models_line_id", "models", ["line_id"])
    op.add_column("optouts", sa.Column("filed_by_id", sa.Integer, nullable=True))
    op.add_column("optouts", sa.Column("review_by", sa.String(10), nullable=True))
    op.add_column("certificates", sa.Column("kind", sa.String(10), nullable=False, server_default="erase"))
    op.add_column("certificates", sa.Column("model_id", sa.Integer, nullable=True))
    op.add_column("certificates", sa.Column("verdict", sa.String(200), nullable=True))
    op.create_table(
        "concepts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("owners.id"), nullable=True),
        sa.Column("works", sa.Integer, nullable=False),
    )
    conn = op.get_bind()
    models = {i: b for i, b in conn.execute(sa.text("SELECT id, base_id FROM models"))}

    def root(i):
        while models.get(i) is not None:
            i = models[i]
        return i
    for i in models:
        conn.execute(sa.text("UPDATE models SET line_id = :r, is_current = :c WHERE id = :i"),
                     {"r": root(i), "c": models[i] is None, "i": i})
    conn.execute(sa.text("UPDATE optouts SET filed_by_id = owner_id"))
    for cid, job_id, doc in conn.execute(sa.text("SELECT id, job_id, document FROM certificates")).fetchall():
        d = json.loads(doc)
        conn.execute(sa.text("UPDATE certificates SET model_id = :m, verdict = :v WHERE id = :i"),
                     {"m": (d.get("edited_model") or {}).get("id"), "v": (d.get("audit") or {}).get("verdict"),
                      "i": cid})


def downgrade() -> None:
    op.drop_table("concepts")
    for table, col in (("certificates", "verdict"), ("certificates", "model_id"), ("certificates", "kind"),
                       ("optouts", "review_by"), ("optouts", "filed_by_id"), ("models", "is_current"),
                       ("models", "line_id")):
        with op.batch_alter_table(table) as batch:
            batch.drop_column(col)
