"""The ledger's tables (SQLAlchemy 2 declarative models).

One row type per thing the ownership loop talks about: owners, their works, the datasets a model was
trained on, the models, opt-out requests and their status history, erase jobs, certificates,
attribution events and the payouts they split into. The schema itself is created and upgraded by
the Alembic migrations in `migrations/` (never by `create_all`), so a ledger file always says which
revision it is at.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String,
                        Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

POLICIES = ("allow", "opt-out", "licence-required")
ROLES = ("owner", "admin")
OPTOUT_STATES = ("review", "pending", "processing", "done", "failed", "rejected")
"""review: waits for the concept's owner or the model owner to confirm; rejected: they did not."""
OWNED_KINDS = ("style", "character", "memorized")
"""Labels whose value is a concept one owner can hold (an artist's style, a studio's character, a
memorized image); objects and compositions are shown by many owners' works."""
JOB_STATES = ("queued", "running", "done", "failed")
JOB_KINDS = ("erase", "attribute")


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # stored as naive UTC


class Base(DeclarativeBase):
    pass


class Owner(Base):
    __tablename__ = "owners"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(10), default="owner")
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    """sha256 of the owner's API token (the token itself is shown once and never stored)."""
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Work(Base):
    __tablename__ = "works"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 of the image file's bytes: one work per content."""
    phash: Mapped[int] = mapped_column(BigInteger, index=True)
    """64-bit perceptual hash (DCT), stored signed."""
    caption: Mapped[str] = mapped_column(Text)
    policy: Mapped[str] = mapped_column(String(20), default="allow")
    labels: Mapped[dict] = mapped_column(JSON, default=dict)
    """What the dataset's metadata says the image shows (world labels), for opt-outs by works."""
    colors: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    """A 4x4 RGB thumbnail (48 bytes): a near copy must match its colours as well as its hash."""
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    owner: Mapped[Owner] = relationship()


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    content_sha256: Mapped[str] = mapped_column(String(64))
    """Hash of the ordered list of its works' hashes: the same folder imported twice is one version."""
    images: Mapped[int] = mapped_column(Integer)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class DatasetWork(Base):
    __tablename__ = "dataset_works"
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    """Row of the image in the dataset's metadata.jsonl (0-based)."""
    work_id: Mapped[int] = mapped_column(ForeignKey("works.id"), index=True)
    file_name: Mapped[str] = mapped_column(Text)
    duplicate_of: Mapped[int | None] = mapped_column(Integer, default=None)
    """Position of an earlier row with the same content, if any."""


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(10))
    weights_sha256: Mapped[str] = mapped_column(String(64), index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"), default=None)
    base_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), default=None)
    """For an edited model: the model it was edited from."""
    is_default: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    """Marks the default deployment line (on its base model): opt-outs and paid generations that name
    no model go to this line's current model. The first model registered; changed only by
    `ledger default-model`."""
    line_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    """The deployment line: the id of the base model this one descends from (a base model's own id)."""
    is_current: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    """The model its line serves now (one per line): each processed opt-out is erased on top of it and
    its edit becomes the line's current model, so erasures accumulate."""
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class OptOut(Base):
    __tablename__ = "optouts"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    filed_by_id: Mapped[int | None] = mapped_column(Integer, default=None)
    """Who filed it (owner_id is whose concept it is: they differ when the model owner files a request
    on a registered owner's concept)."""
    review_by: Mapped[str | None] = mapped_column(String(10), default=None)
    """For status 'review': who confirms it, 'owner' (owner_id) or 'admin' (the model owner)."""
    concept: Mapped[str] = mapped_column(String(200))
    """The concept to erase (named, or the one the listed works show)."""
    anchor: Mapped[str] = mapped_column(String(200))
    works: Mapped[list] = mapped_column(JSON, default=list)
    """Work ids when the request names works."""
    status: Mapped[str] = mapped_column(String(20), default="pending")
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    owner: Mapped[Owner] = relationship()


class OptOutEvent(Base):
    __tablename__ = "optout_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    optout_id: Mapped[int] = mapped_column(ForeignKey("optouts.id"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), default="erase", server_default="erase")
    """'erase' (processing opt-outs) or 'attribute' (a paid generation queued by the web server)."""
    payload: Mapped[dict | None] = mapped_column(JSON, default=None)
    """What a queued job is to do (an attribution: the saved image, prompt, revenue, method, model)."""
    result: Mapped[dict | None] = mapped_column(JSON, default=None)
    """What it produced (an attribution: the event)."""
    idempotency_key: Mapped[str | None] = mapped_column(String(64), default=None, index=True, unique=True)
    """A queued paid generation's key: the same request twice is one job."""
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    optouts: Mapped[list] = mapped_column(JSON)
    method: Mapped[str] = mapped_column(String(40))
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="running")
    stage: Mapped[str] = mapped_column(String(40), default="")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    pid: Mapped[int | None] = mapped_column(Integer, default=None)
    edited_path: Mapped[str | None] = mapped_column(Text, default=None)
    edited_model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), default=None)
    audit: Mapped[dict | None] = mapped_column(JSON, default=None)
    attacks: Mapped[dict | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class Certificate(Base):
    __tablename__ = "certificates"
    __table_args__ = (Index("uq_certificates_job_optout", "job_id", "optout_id", unique=True),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    optout_id: Mapped[int] = mapped_column(ForeignKey("optouts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10), default="erase", server_default="erase")
    """'erase' (the job that erased the opt-out's concept) or 're-audit' (a later job's edit, audited
    again for an earlier opt-out's concept)."""
    model_id: Mapped[int | None] = mapped_column(Integer, default=None)
    """The model it speaks of (the edited model whose weights it names)."""
    verdict: Mapped[str | None] = mapped_column(String(200), default=None)
    """Its verdict accounting for attacks (certificate.standing)."""
    document: Mapped[str] = mapped_column(Text)
    """The signed document, as the canonical JSON that was signed."""
    signature: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class Concept(Base):
    __tablename__ = "concepts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    """The label it comes from: style, character or memorized."""
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("owners.id"), default=None)
    """Its registered owner: the one owner whose works show it (None when several owners' do)."""
    works: Mapped[int] = mapped_column(Integer, default=0)
    """How many registered works show it."""


class AttributionEvent(Base):
    __tablename__ = "attribution_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    prompt: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(40))
    shares: Mapped[list] = mapped_column(JSON)
    """[{"owner", "share"}] as the attribution gave them."""
    revenue_cents: Mapped[int] = mapped_column(Integer)
    """The revenue in minor units (cents) of `currency`."""
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")
    """ISO 4217 code of the revenue."""
    idempotency_key: Mapped[str | None] = mapped_column(String(64), default=None, index=True, unique=True)
    """sha256 of the image's hash and the client's key: a retried generation returns the first event."""
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now, index=True)


class Payout(Base):
    __tablename__ = "payouts"
    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("attribution_events.id"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id"), index=True)
    cents: Mapped[int] = mapped_column(Integer)
    share: Mapped[float] = mapped_column(Float)
