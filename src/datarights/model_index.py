"""Names written in a model folder's model_index.json that light code (the ledger, the web app) reads
without importing torch: an edited model's class name and the reference to the shipped world model."""

EDIT_CLASS = "DatarightsEditedModel"
DEFAULT_REF = "default"
"""How an edit names the shipped world model as its base (the package may move)."""
