"""Ground-truth evaluation of attribution: counterfactual leave-K-out retraining, customized models, LDS."""

from .counterfactual import CounterfactualConfig, counterfactual
from .custom import CustomConfig, custom_eval
from .lds import LDSConfig, lds
from .local import LocalEvalConfig, local_eval

__all__ = ["CounterfactualConfig", "CustomConfig", "LDSConfig", "LocalEvalConfig", "counterfactual", "custom_eval",
           "lds", "local_eval"]
