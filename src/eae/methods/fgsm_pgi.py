"""Prior-guided FGSM (Jia et al., "Prior-Guided Adversarial Initialization for Fast
Adversarial Training", ECCV 2022): FGSM started from a per-example prior carried across
epochs, plus a regulariser on the distance between the outputs at the prior and at the
adversarial point.

Per training image i, a perturbation δᵢ (and, for MEP, a gradient momentum mᵢ) is kept
from one epoch to the next. Each step, on the batch's images x (as augmented this epoch):

    logits₀ = f(x + δ)                       g = ∇_δ CE_s(logits₀, y)
    δ_adv   = Π(δ + α·sign(g))               loss = CE_s(f(x + δ_adv), y) + λ·MSE(f(x + δ_adv), logits₀)

with CE_s cross-entropy against labels smoothed to ``pgi_smoothing`` on the true class,
Π the projection to the ε-ball and to images, and the gradient of the loss flowing through
both forwards. The prior for the next epoch is, for ``pgi_init = "ep"``, δ_adv itself; for
``"mep"``, Π(δ + α·sign(m)) with m ← g / ‖g‖₁ + μ·m (‖g‖₁ over the whole global batch). The
priors start at ±α clipped to ε (the sign of a uniform draw) and restart every
``pgi_reset_every`` epochs. This is the authors' ``FGSM_MEP.py`` (``jiaxiaojunQAQ/FGSM-PGI``);
its defaults: α = ε = 8/255, λ = 10 (``--lamda``), μ = 0.3 (``--momentum_decay``), smoothing 0.6
(``--factor``), restart every 40 epochs (``--epochs_reset``). The EP form is the same code
with the adversarial perturbation kept as the prior. L∞ only, as in the paper.

Costs about two forward and two backward passes (FGSM-RS's cost plus the second backward
through the first forward). The priors are two tensors the size of the training set
(2 × 49,000 × 3 × 32 × 32 floats, 1.2 GB, for CIFAR-10): kept on the training device,
identical on every rank (each step's rows are shared by one all-reduce), saved in
checkpoints so that a resumed run is exact.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import distributed as dist
from ..threat import clip_to_image
from ..utils import torch_seed
from .base import AdversaryThenLoss
from .registry import register_method

MAX_STATE_BYTES = 16 << 30  # beyond this the priors do not fit a training device (ImageNet: ~1.5 TB)


@register_method("fgsm_pgi")
class FGSMPGI(AdversaryThenLoss):
    """FGSM from a per-example prior carried across epochs (EP, or MEP: momentum), with an output-consistency term (Jia et al. 2022)."""

    name = "fgsm_pgi"
    scalable_step = True
    per_example = True  # the loop sets ``examples`` (see base.Method) before every step

    def __init__(self, cfg):
        super().__init__(cfg)
        self.alpha = cfg.eps if cfg.pgi_alpha is None else cfg.pgi_alpha
        self.delta: torch.Tensor | None = None  # (N, C, H, W) priors
        self.momentum: torch.Tensor | None = None  # (N, C, H, W), MEP only
        self.started = -1  # the epoch the priors were last (re)started at

    # ------------------------------------------------------------------ state
    def setup_examples(self, n: int, shape: tuple[int, ...], device: torch.device) -> None:
        """Allocate the priors of ``n`` training images of ``shape``; refused when too large."""
        tensors = 2 if self.cfg.pgi_init == "mep" else 1
        need = tensors * n * int(torch.Size(shape).numel()) * 4
        if need > MAX_STATE_BYTES:
            raise ValueError(f"fgsm_pgi keeps a perturbation{' and a momentum' if tensors == 2 else ''} per training "
                             f"image: {n:,} images of {'x'.join(map(str, shape))} need {need / 2**30:.0f} GiB, more than "
                             f"{MAX_STATE_BYTES >> 30} GiB; use it on smaller datasets (CIFAR, SVHN, Tiny-ImageNet) or "
                             "another method")
        self.delta = torch.zeros((n, *shape), device=device)
        self.momentum = torch.zeros((n, *shape), device=device) if tensors == 2 else None

    def _restart(self, epoch: int) -> None:
        """The authors' start: α·sign(U(-ε, ε)) clipped to ε (not to images), momentum 0;
        drawn from (seed, epoch), the same on every rank and after a resume."""
        g = torch.Generator(device="cpu").manual_seed(torch_seed(self.cfg.seed * 1_000_003 + epoch))
        u = torch.empty(self.delta.shape).uniform_(-self.cfg.eps, self.cfg.eps, generator=g)
        self.delta.copy_((self.alpha * u.sign()).clamp(-self.cfg.eps, self.cfg.eps))
        if self.momentum is not None:
            self.momentum.zero_()
        self.started = epoch

    def state_dict(self) -> dict:  # per rank: small; the priors are saved once (example_state)
        return {"started": self.started}

    def load_state_dict(self, state: dict) -> None:
        self.started = int(state.get("started", -1))

    def example_state(self) -> dict:
        return {"delta": self.delta, "momentum": self.momentum}

    def load_example_state(self, state: dict) -> None:
        saved = tuple(state["delta"].shape)
        if saved != tuple(self.delta.shape):  # the training images changed since the checkpoint
            from ..errors import ConfigError

            raise ConfigError(f"fgsm_pgi's checkpoint holds priors for {saved[0]:,} training images of "
                              f"{'x'.join(map(str, saved[1:]))}, and the training set now has {self.delta.shape[0]:,} "
                              f"of {'x'.join(map(str, self.delta.shape[1:]))}: the data changed since the run started; "
                              "resume it on the same images, or start a new run", field="data_dir")
        self.delta.copy_(state["delta"])
        if self.momentum is not None:
            self.momentum.copy_(state["momentum"])

    # ------------------------------------------------------------------ step
    def adversarial(self, model, x, y, epoch):
        cfg = self.cfg
        if epoch % cfg.pgi_reset_every == 0 and self.started != epoch:
            self._restart(epoch)
        rows, lo, hi = self.examples  # the global batch's image indices, and this rank's slice of it
        prior = self.delta[rows[lo:hi]].requires_grad_(True)
        logits0 = model(x + prior)  # trained through: the consistency term reaches it
        g = torch.autograd.grad(self._ce(logits0, y), prior, retain_graph=True)[0].detach()
        prior = prior.detach()
        adv = clip_to_image(x, self.threat.project(prior + self.threat.step(g, self.alpha * self.alpha_scale)))
        self._remember(rows, lo, hi, x, prior, g, adv)
        return x + adv, logits0

    def loss(self, model, logits, y, logits0):
        consistency = F.mse_loss(logits.float(), logits0.float())
        return self._ce(logits, y) + self.cfg.pgi_lambda * consistency, {"pgi_consistency": consistency.detach()}

    def _ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against labels smoothed to ``pgi_smoothing`` on the true class (the
        authors' LabelSmoothLoss, in PyTorch's parametrisation)."""
        k = logits.shape[1]
        return F.cross_entropy(logits.float(), y, label_smoothing=(1 - self.cfg.pgi_smoothing) * k / (k - 1))

    @torch.no_grad()
    def _remember(self, rows, lo, hi, x, prior, g, adv) -> None:
        """Store the next epoch's priors of this batch's images, on every rank."""
        if self.cfg.pgi_init == "ep":
            new_delta, new_m = adv, None
        else:
            g = g * ((hi - lo) / len(rows))  # the gradient of the global batch's mean loss, as in one process
            l1 = dist.all_reduce(g.abs().sum().float().reshape(1))  # and that batch's ‖g‖₁
            new_m = g / l1 + self.cfg.pgi_momentum * self.momentum[rows[lo:hi]]
            new_delta = clip_to_image(x, self.threat.project(prior + self.threat.step(new_m, self.alpha * self.alpha_scale)))
        for store, new in ((self.delta, new_delta), (self.momentum, new_m)):
            if new is None:
                continue
            if dist.world_size() > 1:  # each rank computed its slice: share the global batch's rows
                full = torch.zeros((len(rows), *new.shape[1:]), device=new.device, dtype=store.dtype)
                full[lo:hi] = new
                new = dist.all_reduce(full)
            where = rows if dist.world_size() > 1 else rows[lo:hi]
            # a non-finite step (skipped under --nonfinite skip) must not leave NaN in the priors
            store[where] = torch.where(torch.isfinite(new), new.to(store.dtype), store[where])
