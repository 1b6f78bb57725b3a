"""TRADES (Zhang et al., ICML 2019): CE(f(x), y) + β · KL(f(x) ‖ f(x')), with x' found by
k signed-gradient steps maximising the KL term from x + 0.001·N(0, I), in eval mode
(as in the authors' code). Costs about k + 2 standard steps."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attacks.base import grad_of
from ..distributed import unwrap
from ..threat import clip_to_image
from .base import Method, StepOutput
from .registry import register_method


def _kl(logits_adv: torch.Tensor, probs_nat: torch.Tensor, reduction: str) -> torch.Tensor:
    return F.kl_div(F.log_softmax(logits_adv.float(), dim=1), probs_nat, reduction=reduction)


@register_method("trades")
class TRADES(Method):
    """TRADES: clean CE plus beta times the KL between clean and adversarial predictions (Zhang et al. 2019)."""

    name = "trades"

    def step(self, model, x, y, epoch):
        cfg = self.cfg
        net = unwrap(model)  # the attack bypasses DDP; the training forwards below do not
        was_training = net.training
        net.eval()
        with torch.no_grad():
            probs_nat = F.softmax(net(x).float(), dim=1)
        delta = clip_to_image(x, 0.001 * torch.randn_like(x))
        for _ in range(cfg.trades_steps):
            delta = delta.detach().requires_grad_(True)
            g = grad_of(_kl(net(x + delta), probs_nat, "sum"), delta)
            step = self.threat.step(g, cfg.trades_alpha * self.eps_scale)
            delta = clip_to_image(x, self.threat.project(delta.detach() + step))
        net.train(was_training)
        logits = model(x)
        logits_adv = model(x + delta.detach())
        robust = _kl(logits_adv, F.softmax(logits.float(), dim=1), "batchmean")
        loss = F.cross_entropy(logits, y) + cfg.trades_beta * robust
        return StepOutput(loss, logits, {"trades_kl": robust.detach()})
