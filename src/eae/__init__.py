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

import importlib

__version__ = "0.1.0"

# Names load on first use (PEP 562), so that `import eae` and the `eae` command start without
# importing torch: a Ctrl-C in the first second then ends like any other (see eae.launch).
_EXPORTS = {
    "ATTACKS": "attacks", "build_attack": "attacks", "list_attacks": "attacks",
    "MissingWeights": "checkpoint", "CheckpointError": "checkpoint", "RunLocked": "checkpoint", "load": "checkpoint",
    "TrainConfig": "config",
    "ConfigError": "errors", "EaeError": "errors", "OutputRefused": "errors", "RunExists": "errors",
    "NotARun": "errors", "DatasetError": "errors",
    "MissingFile": "errors", "UnknownName": "errors", "ModelError": "errors", "MissingDependency": "models.library",
    "EvalResult": "evaluation", "evaluate": "evaluation",
    "METHODS": "methods", "list_methods": "methods",
    "MODELS": "models", "create_model": "models", "list_models": "models",
    "RunResult": "trainer", "train": "trainer",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:  # a submodule (eae.attacks, ...), as after an eager import
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'eae' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
