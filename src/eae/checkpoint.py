"""Weights and checkpoints on disk.

- ``model.safetensors``: final weights (``model_best.safetensors``: best on the
  validation split). safetensors holds tensors only, so loading runs no code.
- ``checkpoint.pt``: everything needed to resume (model, optimiser, scheduler,
  data order, method state, RNG states), written atomically and read back with
  ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .utils import atomic_write_bytes

CONFIG = "config.json"
METRICS = "metrics.jsonl"
WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "model_best.safetensors"
CHECKPOINT = "checkpoint.pt"


def state_dict_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    # channels_last weights are not contiguous; safetensors stores plain layouts
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    atomic_write_bytes(path, save(state_dict_for_saving(model), metadata=metadata))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def read_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a run directory of `eae train`?")
    return TrainConfig.from_dict(json.loads(path.read_text()), strict=False)


def load(run_dir: str | Path, *, weights: str = "final", device: str | torch.device = "cpu") -> nn.Module:
    """The trained network of a run directory, in eval mode, ready for any PyTorch code.

    The architecture is rebuilt from ``config.json``; weights (normalisation
    constants included) come from ``model.safetensors`` (``weights="best"``: the
    epoch with the best validation robust accuracy).
    """
    from safetensors.torch import load_file

    from .models import create_model

    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    name = {"final": WEIGHTS, "best": BEST_WEIGHTS}.get(weights)
    if name is None:
        raise ValueError(f"weights must be 'final' or 'best', got {weights!r}")
    path = run_dir / name
    if not path.is_file():
        hint = " (training not finished? the last checkpoint is in checkpoint.pt)" if weights == "final" else ""
        raise FileNotFoundError(f"{path} not found{hint}")
    state = load_file(str(path), device="cpu")
    num_classes = state["head.weight"].shape[0]
    model = create_model(cfg.arch, num_classes=num_classes, head=cfg.head, head_scale=cfg.head_scale)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
