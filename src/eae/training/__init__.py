"""The parts of the training loop (:mod:`eae.trainer`), each a small piece that owns its
state and its files:

- :class:`Run` (``run.py``): what training changes: the network, optimiser, LR
  schedule, data order, method state and random streams; built from a config, moved
  to and from a checkpoint.
- :func:`train_epoch` (``epoch.py``): one pass over the training split; the epoch's
  row of metrics.
- :class:`NonFiniteGuard`, :class:`OverfitGuard` (``guards.py``): a NaN or inf loss,
  gradient or weight; catastrophic overfitting, with its rollback.
- :class:`Validator` (``validation.py``): validation on the held-out split.
- :class:`RunFolder` (``folder.py``): the run directory: its lock, config, metrics,
  events, checkpoints, best and final weights, TensorBoard files.
"""
from .epoch import train_epoch
from .folder import RunFolder
from .guards import NonFiniteGuard, OverfitGuard, TrainingStopped
from .run import Run, lr_factor
from .validation import Validator

__all__ = ["Run", "lr_factor", "train_epoch", "NonFiniteGuard", "OverfitGuard", "TrainingStopped", "Validator",
           "RunFolder"]
