"""The ownership service's ledger: owners, works, datasets, models, opt-outs, erase jobs, signed
certificates, attribution events and payouts, in one SQL database (SQLite by default).

    from datarights.ledger import Ledger
    ledger = Ledger("world.db", create=True)
    ledger.import_dataset("runs/world")                  # works and owners; the shipped model
    ledger.optout("Finwave Studios", concept="Blubbo")
    ledger.process()                                     # erase, audit, attacks, certificate

Names are imported on first use, so `datarights --help` does not load SQLAlchemy.
"""

_NAMES = {"Ledger": "core", "NotYours": "core", "split_cents": "money", "to_cents": "money",
          "verify_certificate": "certificate"}
__all__ = sorted(_NAMES)


def __getattr__(name):
    if name in _NAMES:
        import importlib
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
