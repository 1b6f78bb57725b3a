"""eae: fast adversarial training in latent spaces (Endogenous Adversarial Examples)
and the fast adversarial-training baselines, with evaluation that cannot be fooled.

Python API::

    import eae
    cfg = eae.TrainConfig(method="eae", arch="preact_resnet18", epochs=15, out="runs/eae")
    result = eae.train(cfg)                    # writes runs/eae/{config.json,metrics.jsonl,model.safetensors}
    model = eae.load("runs/eae")               # an nn.Module: [0,1] images -> logits
    report = eae.evaluate(model, x, y, attacks=["clean", "pgd20", "cw20"], eps=8/255)
"""
from __future__ import annotations

__version__ = "0.1.0"

from .attacks import ATTACKS, build_attack, list_attacks  # noqa: E402
from .checkpoint import MissingWeights, load  # noqa: E402
from .config import TrainConfig  # noqa: E402
from .errors import ConfigError, EaeError, OutputRefused, RunExists  # noqa: E402
from .evaluation import EvalResult, evaluate  # noqa: E402
from .methods import METHODS, list_methods  # noqa: E402
from .models import MODELS, create_model, list_models  # noqa: E402
from .train import RunResult, train  # noqa: E402

__all__ = [
    "__version__", "TrainConfig", "train", "RunResult", "load", "evaluate", "EvalResult",
    "create_model", "build_attack", "list_models", "list_methods", "list_attacks",
    "MODELS", "METHODS", "ATTACKS", "EaeError", "ConfigError", "OutputRefused", "RunExists",
    "MissingWeights",
]
