"""The ownership rules, decided once (the CLI and the web call these through `Ledger`).

Who may opt out of what:
- a concept with a registered owner (an artist's style, a studio's character, a memorized image:
  the one owner whose works show it) is that owner's alone: they opt out of it directly; another
  owner asking is refused (`NotAllowed`, the web's 403), and the model owner asking (say, for a
  third party) files a *review* request that the concept's owner confirms or contests;
- a concept without a registered owner (an object or a composition many owners' works show, or
  free text on a Stable Diffusion model) is no single owner's to erase: an owner's request goes to
  the model owner as a review request; the model owner's own request is pending at once;
- opting out by works erases the one concept they show, which may be far more than the works
  ticked: unless every work that shows it is listed, the request needs `confirm`, and the refusal
  says what would be erased;
- a concept already erased in the line's current model answers "already erased — certificate N",
  and one with an open request "already requested — opt-out N": no new job.

What a line has erased: every deployment line (a base model and the edits made on top of it) has
one current model; a concept is erased in it when its latest certificate about that model says so.
"""

from __future__ import annotations

from sqlalchemy import func, select, update

from ..errors import DatarightsError
from .schema import OWNED_KINDS, Certificate, Concept, Model, OptOut, Owner, Work

OPEN = ("review", "pending", "processing")


class NotAllowed(DatarightsError):
    """The caller may not do this (the web answers 403)."""


class Conflict(DatarightsError):
    """The request clashes with what the ledger already holds (the web answers 409)."""

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.details = details


class NeedsConfirmation(Conflict):
    """The request would erase more than it names; repeat it with `confirm` to go ahead."""


# ----------------------------------------------------------------------------- concepts and their owners
def refresh_concepts(s) -> None:
    """Recompute the concepts table from every registered work's labels: each value of an owned kind,
    its number of works, and its owner when exactly one owner's works show it."""
    seen: dict[str, dict] = {}
    for owner_id, labels in s.execute(select(Work.owner_id, Work.labels)):
        for kind in OWNED_KINDS:
            v = (labels or {}).get(kind)
            if isinstance(v, str) and v and v not in ("none", "plain"):
                c = seen.setdefault(v, {"kind": kind, "owners": set(), "works": 0})
                c["owners"].add(owner_id)
                c["works"] += 1
    rows = {c.name: c for c in s.scalars(select(Concept))}
    for name, c in seen.items():
        row = rows.get(name) or Concept(name=name)
        row.kind, row.works = c["kind"], c["works"]
        row.owner_id = next(iter(c["owners"])) if len(c["owners"]) == 1 else None
        s.add(row)


def concept_owner(s, concept: str) -> Owner | None:
    c = s.scalar(select(Concept).where(func.lower(Concept.name) == concept.lower()))
    return s.get(Owner, c.owner_id) if c is not None and c.owner_id is not None else None


def works_showing(s, concept: str) -> int:
    """How many registered works show `concept` (an owned kind's label, or an object/composition)."""
    c = s.scalar(select(Concept).where(func.lower(Concept.name) == concept.lower()))
    if c is not None:
        return c.works
    n = 0
    for (labels,) in s.execute(select(Work.labels)):
        if any(isinstance(v, str) and v.lower() == concept.lower() for k, v in (labels or {}).items()
               if k in ("object", "composition")):
            n += 1
    return n


def filing(s, filer: Owner, concept: str) -> tuple[Owner, str, str | None, str]:
    """(whose request it is, its first status, who reviews it, the note) for `filer` asking to erase
    `concept`; NotAllowed for another owner's concept."""
    holder = concept_owner(s, concept)
    if filer.role == "admin":
        if holder is not None:
            return holder, "review", "owner", (f"filed by the model owner ({filer.name}) for {holder.name}'s "
                                              f"{concept!r}: waits for {holder.name} to confirm or contest it")
        return filer, "pending", None, f"filed by the model owner ({filer.name})"
    if holder is None:
        return filer, "review", "admin", (f"filed by {filer.name}: {concept!r} has no single registered owner, so the "
                                          "model owner reviews the request")
    if holder.id != filer.id:
        raise NotAllowed(f"{concept!r} belongs to {holder.name}: only {holder.name} can opt out of it")
    return filer, "pending", None, f"filed by {filer.name}"


# ----------------------------------------------------------------------------- deployment lines
def line_of(s, m: Model) -> int:
    return m.line_id if m.line_id is not None else m.id


def current(s, line_id: int) -> Model:
    """The model a line serves now."""
    m = s.scalar(select(Model).where(Model.line_id == line_id, Model.is_current))
    if m is None:   # a line whose current flag was lost: its newest model
        m = s.scalar(select(Model).where(Model.line_id == line_id).order_by(Model.id.desc()))
    if m is None:
        raise DatarightsError(f"model line {line_id} has no model")
    return m


def make_current(s, m: Model) -> None:
    s.execute(update(Model).where(Model.line_id == m.line_id, Model.id != m.id).values(is_current=False)
              .execution_options(synchronize_session=False))
    m.is_current = True


def erased_in(s, concept: str, model_id: int) -> Certificate | None:
    """The latest certificate about `model_id` for `concept` whose verdict says erased (also
    'erased but recoverable'), or None."""
    rows = s.execute(select(Certificate, OptOut).join(OptOut, OptOut.id == Certificate.optout_id)
                     .where(Certificate.model_id == model_id, func.lower(OptOut.concept) == concept.lower())
                     .order_by(Certificate.id.desc())).first()
    if rows is None:
        return None
    cert = rows[0]
    return cert if says_erased(cert.verdict) else None


def says_erased(verdict: str | None) -> bool:
    """Whether a certificate's verdict is one of the erased ones ('erased', 'erased but recoverable …')."""
    return (verdict or "").startswith("erased")


def open_request(s, concept: str, line_id: int, statuses: tuple = OPEN, exclude: int | None = None) -> OptOut | None:
    """An opt-out of `concept` on this line in one of `statuses` (default: still under way: review,
    pending or processing), other than opt-out `exclude`."""
    for r in s.scalars(select(OptOut).where(func.lower(OptOut.concept) == concept.lower(), OptOut.status.in_(statuses),
                                            OptOut.id != (exclude or 0))):
        m = s.get(Model, r.model_id)
        if m is not None and line_of(s, m) == line_id:
            return r
    return None


def check_new(s, concept: str, line_id: int, approving: OptOut | None = None) -> None:
    """Refuse a request for a concept the line's current model has erased, or one already under way.
    `approving`: a request in review about to become pending; it is left out, and only pending or
    processing requests count against it."""
    cur = current(s, line_id)
    cert = erased_in(s, concept, cur.id)
    if cert is not None:
        raise Conflict(f"{concept!r} is already erased from the current model (model {cur.id}): certificate {cert.id}",
                       certificate_id=cert.id)
    r = open_request(s, concept, line_id, statuses=("pending", "processing") if approving else OPEN,
                     exclude=approving.id if approving else None)
    if r is not None:
        raise Conflict(f"{concept!r} is already requested: opt-out {r.id} ({r.status})", optout_id=r.id)
