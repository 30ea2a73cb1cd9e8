"""Ground-truth evaluation of attribution: counterfactual leave-K-out retraining and customized models."""

from .counterfactual import CounterfactualConfig, counterfactual
from .custom import CustomConfig, custom_eval

__all__ = ["CounterfactualConfig", "CustomConfig", "counterfactual", "custom_eval"]
