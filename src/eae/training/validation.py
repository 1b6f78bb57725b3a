"""Validation during training: the held-out split (never the test set) attacked by
clean, PGD and CW-margin PGD (fp32, eval mode), optionally aa-fast on its first
``val_aa_n`` images; timed apart from training. Under torchrun every rank attacks its
share of the points and the accuracies cover all of them."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..attacks import CW, PGD
from ..config import TrainConfig
from ..evaluation import run_suite
from ..evaluation.core import shard_across_ranks


class Validator:
    """``due(epoch)``: whether to validate after this epoch (every ``val_every`` and
    after the last; never without a validation split, ``enabled`` False); calling it
    returns the row's ``val_*`` entries. ``suite`` runs the attacks
    (:func:`eae.evaluation.run_suite`)."""

    def __init__(self, cfg: TrainConfig, val_x: torch.Tensor, val_y: torch.Tensor, device: torch.device,
                 passes: int, suite: Callable[..., Any] = run_suite):
        self.cfg, self.device, self.passes, self.suite = cfg, device, passes, suite
        self.x, self.y = val_x.to(device), val_y.to(device)
        self.enabled = len(val_y) > 0
        self.attacks: dict[str, Any] = {"clean": None}
        if cfg.val_attack_steps:
            self.attacks.update(pgd=PGD(cfg.eps, steps=cfg.val_attack_steps, norm=cfg.norm),
                                cw=CW(cfg.eps, steps=cfg.val_attack_steps, norm=cfg.norm))

    def due(self, epoch: int) -> bool:
        return self.enabled and ((epoch + 1) % self.cfg.val_every == 0 or epoch + 1 == self.passes)

    def __call__(self, net: torch.nn.Module, epoch: int) -> dict[str, Any]:
        cfg = self.cfg
        with shard_across_ranks():
            res = self.suite(net, self.x, self.y, self.attacks, cfg.eps, norm=cfg.norm, batch_size=cfg.batch_size,
                             device=self.device, seed=cfg.seed + epoch)
        row = {f"val_{k}": v for k, v in res.accuracy.items()}
        # without validation attacks no robust accuracy was measured: none recorded (the best is then the clean's)
        row["val_robust"] = res.robust_accuracy if cfg.val_attack_steps else None
        row["val_seconds"] = res.seconds
        if cfg.val_aa_n:
            n = cfg.val_aa_n
            with shard_across_ranks():
                aa = self.suite(net, self.x[:n], self.y[:n], suite="aa-fast", eps=cfg.eps, norm=cfg.norm,
                                batch_size=cfg.batch_size,
                                device=self.device, seed=cfg.seed + epoch)
            row["val_aa_fast"] = aa.robust_accuracy
            row["val_seconds"] += aa.seconds
        return row
