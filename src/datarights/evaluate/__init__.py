"""Ground-truth evaluation of attribution: counterfactual leave-K-out retraining, customized models, LDS."""

from .counterfactual import CounterfactualConfig, counterfactual
from .custom import CustomConfig, custom_eval
from .lds import LDSConfig, lds

__all__ = ["CounterfactualConfig", "CustomConfig", "LDSConfig", "counterfactual", "custom_eval", "lds"]
