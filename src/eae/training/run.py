"""What training changes, in one object: the network, optimiser, LR schedule, data
loader, method and random streams, built from a config and moved to and from a
checkpoint (every rank's RNG and method state included, so a resume is exact)."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

import torch

from .. import distributed as dist
from ..config import TrainConfig
from ..errors import ConfigError
from ..data import training_data
from ..methods import create_method
from ..models import count_parameters, create_model
from ..system import training_precision
from ..utils import device_name, torch_seed


def lr_factor(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """LR multiplier (of ``lr_max``) for the optimiser step with index ``step``."""

    def factor(step: int) -> float:
        t = (step + 1) / total_steps  # progress at the end of this step, as in Wong et al.
        if cfg.lr_schedule == "onecycle":
            p = cfg.lr_peak_frac
            return t / p if t <= p else max(0.0, (1 - t) / (1 - p))
        if cfg.lr_schedule == "piecewise":
            return cfg.lr_gamma ** sum(t > m for m in cfg.lr_milestones)
        return 1.0

    return factor


def _set_deterministic(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


class Run:
    """The training state of one process. ``net`` is the network, ``model`` what the
    method steps through (DDP's wrapper under torchrun, else ``net`` itself)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, log: Callable[..., None]):
        self.cfg, self.device, self.log = cfg, device, log
        self.rank, self.world, self.main = dist.rank(), dist.world_size(), dist.is_main()
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        _set_deterministic(cfg.deterministic)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.data = training_data(cfg, device, self.rank, self.world)
        if len(self.data.loader) == 0:  # every rank needs an image of each step (a global batch >= the processes)
            raise ConfigError(f"train_subset: {self.data.n_train} training image(s) for {self.world} processes: each "
                              "process needs at least one image per step; use more training images or fewer processes",
                              field="train_subset",
                              cli=f"--train-subset: {self.data.n_train} training image(s) for {self.world} processes "
                                  "(--nproc_per_node): each needs at least one image per step; use more training "
                                  "images or fewer processes")
        if cfg.batch_size > self.data.n_train and self.main:  # said: each step is smaller than the batch asked for
            held = f" (after the {cfg.val_size:,} held out for validation)" if cfg.val_size else ""
            print(f"note: batch_size {cfg.batch_size:,} is more than the {self.data.n_train:,} training images{held}: "
                  f"each step uses those {self.data.n_train:,}", file=sys.stderr, flush=True)
        if cfg.train_subset > self.data.n_train and self.main:  # said: the run would look bigger than it is
            print(f"note: train_subset {cfg.train_subset:,} is more than the {self.data.n_train:,} training images "
                  f"(after the {cfg.val_size:,} held out for validation): all {self.data.n_train:,} are used",
                  file=sys.stderr, flush=True)
        self.net = self._network()
        self.model = dist.wrap(self.net, device, cfg.sync_bn)
        if self.rank:
            torch.manual_seed(torch_seed(cfg.seed + 1_000_003 * self.rank))  # each rank its own attack noise
        self.method = create_method(cfg)
        if self.method.per_example:
            self.method.setup_examples(self.data.n_train, (3, self.data.image_size, self.data.image_size), device)
        self.params = list(self.net.parameters())
        self.optimizer = torch.optim.SGD(self.params, lr=cfg.lr_max, momentum=cfg.momentum,
                                         nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
        self.loader = self.data.loader
        self.passes = self.method.passes(cfg.epochs)  # Free-AT: fewer passes, each minibatch replayed
        steps = self.passes * len(self.loader) * self.method.replays
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(cfg, steps))

    def _network(self) -> torch.nn.Module:
        cfg, data = self.cfg, self.data
        net = create_model(cfg.arch, data.num_classes, data.mean, data.std, head=cfg.head,
                           head_scale=cfg.head_scale).to(self.device)
        _check_network(net, data.image_size, data.num_classes, self.device)
        if cfg.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if cfg.compile:
            net.compile_for_training()  # the first epoch's time includes compilation
        return net

    def describe(self) -> str:
        cfg, data = self.cfg, self.data
        procs = f" x {self.world} processes ({torch.distributed.get_backend()})" if self.world > 1 else ""
        return (f"{cfg.method} | {cfg.arch} ({count_parameters(self.net) / 1e6:.2f}M params) | {cfg.dataset}: "
                f"{data.n_train:,} train / {len(data.val_y):,} val | {device_name(self.device)}{procs}, "
                f"{training_precision(cfg.precision, self.device)} | "
                f"{self.passes} epoch{'s' if self.passes != 1 else ''} x {len(self.loader)} "
                f"step{'s' if len(self.loader) != 1 else ''} of {min(cfg.batch_size, data.n_train)}"
                + (f" x {self.method.replays} replays" if self.method.replays > 1 else ""))

    def dataset(self) -> dict[str, Any]:
        """What this run trains on (``dataset.json``): checked by ``eae eval``."""
        from ..data import DataSource, copy_record

        data = self.data
        return {"dataset": self.cfg.dataset, "num_classes": data.num_classes, "classes": list(data.classes),
                "image_size": data.image_size, **copy_record(DataSource.of(self.cfg)),
                **({"files_sha256": data.files_sha256} if data.files_sha256 else {})}

    def snapshot(self, epoch: int, **extra: Any) -> dict[str, Any] | None:
        """The full training state after ``epoch``, with ``extra`` entries (a collective:
        every rank sends its RNG and method state; the dict on rank 0, None elsewhere)."""
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        ranks = dist.gather_to_main({"rng": rng, "method": self.method.state_dict()})
        if not self.main:
            return None
        state = {"epoch": epoch, "config": self.cfg.to_dict(), "model": self.net.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "loader": self.loader.state_dict(), "ranks": ranks,
                 "examples": self.method.example_state()}  # the same on every rank: saved once
        return {**state, **extra, "step_scale": self.method.step_scale}

    def restore(self, state: dict[str, Any]) -> int:
        """Load a snapshot; returns its epoch."""
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loader.load_state_dict(state["loader"])
        mine = self._rank_state(state)
        self.method.load_state_dict(mine["method"])
        if self.method.per_example:
            self.method.load_example_state(state["examples"])
        self.method.step_scale = float(state.get("step_scale", 1.0))
        if mine["rng"] is not None:
            torch.set_rng_state(mine["rng"]["torch"])
            if self.device.type == "cuda" and mine["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(mine["rng"]["cuda"], self.device)
        return state["epoch"]

    def _rank_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """This rank's RNG and method state in a snapshot (rng None: reseeded)."""
        ranks = state.get("ranks") or [{"rng": state.get("rng"), "method": state.get("method", {})}]
        if len(ranks) == self.world:
            return ranks[self.rank]
        self.log(f"warning: the checkpoint was written by {len(ranks)} process(es), this run has {self.world}: "
                 "random streams restart, so the run is not bit-identical to an uninterrupted one")
        return {"rng": None, "method": ranks[self.rank % len(ranks)]["method"]}


def _check_network(net: torch.nn.Module, image_size: int, num_classes: int, device: torch.device) -> None:
    """Before the run folder is written to: the network takes these images and gives one
    logit per class (a registered architecture is a user's code). Grey images, so that no
    random number is drawn and training stays the same."""
    from ..evaluation.checks import output_form
    from ..errors import ModelError

    was = net.training
    k = output_form(net, torch.full((2, 3, image_size, image_size), 0.5, device=device))
    net.train(was)
    if k != num_classes:
        raise ModelError(f"the network gives {k} logits per image, but the dataset has {num_classes} classes")

