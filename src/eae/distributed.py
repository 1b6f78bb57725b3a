"""Multi-process training with PyTorch's own engine: ``torch.distributed`` and DDP,
launched by ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous).

There is no process management here: ``torchrun --nproc_per_node N -m eae train ...``
starts the processes; :func:`init` joins the process group they share (NCCL on GPUs,
gloo on the CPU). Without torchrun every helper degrades to the single-process case,
so the rest of the code calls them unconditionally.

Conventions: ``batch_size`` is the global batch; each rank takes its slice of every
global batch (see ``DeviceLoader``), makes the adversarial examples of its own slice
with the unwrapped model (attacks differentiate with respect to inputs only, so DDP's
gradient hooks fire only on the training backward), and DDP averages the gradients.
Only rank 0 writes files and prints.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def env_int(name: str, default: int) -> int:
    """A launcher's variable (WORLD_SIZE, RANK, LOCAL_RANK) as the number it must be."""
    from .errors import ConfigError

    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        fix = ("unset it to run one process" if name == "WORLD_SIZE" else
               "give a whole number, or unset WORLD_SIZE (and it) to run one process")
        raise ConfigError(f"${name} is {text!r}, not a whole number: torchrun sets it for each process it starts; "
                          f"{fix}", field=name) from None


LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "EAE_DIST_TIMEOUT_MIN")
MAX_WORLD = 2**31 - 1  # torch.distributed's store counts processes in a C int


def launch_numbers() -> tuple[int, int, int]:
    """WORLD_SIZE, RANK and LOCAL_RANK, checked against each other: a rank outside the world
    would wait for ever for processes that cannot come, and a world of 0 or fewer would train
    as one process while the user asked for something else."""
    from .errors import ConfigError

    if not os.environ.get("WORLD_SIZE", "").strip():
        return 1, 0, 0  # no launcher: a RANK left by another tool is not ours to read
    world, rank, local = env_int("WORLD_SIZE", 1), env_int("RANK", 0), env_int("LOCAL_RANK", 0)
    if world > 1 and not os.environ.get("RANK", "").strip():  # torch's rendezvous would fail in its own words
        raise ConfigError(f"$WORLD_SIZE is {world}, but $RANK is not set: torchrun sets both for each process; "
                          "give each process its RANK (0..WORLD_SIZE-1), or unset WORLD_SIZE to run one process",
                          field="RANK")
    if not 1 <= world <= MAX_WORLD:
        raise ConfigError(f"$WORLD_SIZE is {world}, but a run has 1 to {MAX_WORLD} processes: torchrun sets it; "
                          "unset it to run one process", field="WORLD_SIZE")
    for name, value in (("RANK", rank), ("LOCAL_RANK", local)):
        if not 0 <= value < world:
            raise ConfigError(f"${name} is {value}, outside 0..{world - 1} for $WORLD_SIZE {world}: torchrun "
                              f"sets both for each process; unset WORLD_SIZE (and {name}) to run one process",
                              field=name)
    return world, rank, local


def launched() -> bool:
    """True inside a process started by torchrun (or any launcher that sets WORLD_SIZE)."""
    return launch_numbers()[0] > 1


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: str = "auto") -> torch.device:
    """Join the process group torchrun prepared (once per process) and return this
    rank's device: ``cuda:LOCAL_RANK`` on GPUs, else the CPU. Single process: just
    resolves ``device``."""
    from .utils import resolve_device

    if not launched():
        return resolve_device(device)
    local = launch_numbers()[2]
    dev = resolve_device(device)
    if dev.type == "cuda":
        n = torch.cuda.device_count()
        if local >= n:
            raise RuntimeError(f"LOCAL_RANK {local} but only {n} CUDA device(s): start at most {n} "
                               "processes per node (--nproc_per_node)")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not initialized():
        _meet(dev)
    return dev


def _meet(dev: torch.device) -> None:
    """Join the other processes: said when no torchrun started them (WORLD_SIZE set by hand
    waits for processes that may never come), and stoppable by Ctrl-C and SIGTERM while it
    waits (the wait is in torch's C++ code, where Python's handlers cannot run)."""
    import signal
    import threading

    from .errors import ConfigError

    world, rank, _ = launch_numbers()
    minutes = _timeout_minutes()
    where = _meeting_point(world)
    if not os.environ.get("TORCHELASTIC_RUN_ID"):
        print(f"note: waiting for the {world} processes of $WORLD_SIZE to meet at {where} (this is rank {rank}); "
              "not started by torchrun: Ctrl-C stops it", file=sys.stderr, flush=True)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    main = threading.current_thread() is threading.main_thread()
    kept = {n: signal.signal(n, signal.SIG_DFL) for n in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:  # nothing is written yet: a signal during the wait simply ends the process
        with _native_stderr_held() as held:
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=minutes),
                                    device_id=dev if dev.type == "cuda" else None)
        sys.stderr.write("".join(held))  # what torch said on the way, once the processes met
    except dist.DistError as e:  # (not "another process ended": none had started its work)
        raise ConfigError(f"the {world} processes of $WORLD_SIZE did not all meet at {where} within {minutes:g} "
                          f"minutes ($EAE_DIST_TIMEOUT_MIN; {str(e).strip().splitlines()[0][:200]}): start every "
                          "process (torchrun does), with the same MASTER_ADDR and MASTER_PORT",
                          field="WORLD_SIZE") from None
    finally:
        for n, handler in kept.items():
            signal.signal(n, handler)


@contextlib.contextmanager
def _native_stderr_held():
    """Hold what torch's C++ code writes to stderr (file descriptor 2) while the processes meet:
    a process that waits for its rank 0 logs every retry with a C++ stack; said in one line
    instead when the meeting fails. Yields a list that holds the text afterwards."""
    import tempfile

    sys.stderr.flush()
    text: list[str] = []
    with tempfile.TemporaryFile() as held:
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text.append(held.read().decode("utf-8", "replace"))


def _meeting_point(world: int) -> str:
    """MASTER_ADDR:MASTER_PORT, where the processes meet, checked before anyone waits there."""
    from .errors import ConfigError

    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v, "").strip()]
    if missing:
        raise ConfigError(f"$WORLD_SIZE is {world}, but {' and '.join('$' + v for v in missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not set: start the processes with torchrun "
                          "(which sets them all), or unset WORLD_SIZE to run one process", field="WORLD_SIZE")
    port = env_int("MASTER_PORT", 0)
    if not 1 <= port <= 65535:
        raise ConfigError(f"$MASTER_PORT is {port}, not a TCP port (1 to 65535): torchrun sets it; give a free "
                          "port, or unset WORLD_SIZE to run one process", field="MASTER_PORT")
    return f"{os.environ['MASTER_ADDR'].strip()}:{port}"


def _timeout_minutes() -> float:
    """$EAE_DIST_TIMEOUT_MIN: how long the processes wait for each other (30 minutes)."""
    import math

    from .errors import ConfigError

    text = os.environ.get("EAE_DIST_TIMEOUT_MIN", "").strip() or "30"
    try:
        minutes = float(text)
    except ValueError:
        minutes = math.nan
    if not (math.isfinite(minutes) and 0 < minutes <= 7 * 24 * 60):
        raise ConfigError(f"$EAE_DIST_TIMEOUT_MIN is {text!r}: give the minutes the processes wait for each "
                          "other, a number above 0 (at most a week), or unset it for 30", field="EAE_DIST_TIMEOUT_MIN")
    return minutes


def shutdown(sync: bool = True) -> None:
    """Leave the process group. ``sync``: first wait until every rank is here, so that no rank
    tears down its connections while another still uses them (gloo then aborts the process
    with "terminate called without an active exception"). On an error path pass False: the
    other ranks may never arrive, and torchrun stops them anyway."""
    if not initialized():
        return
    if sync and world_size() > 1:
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(minutes=5))
            else:
                dist.barrier()
        except RuntimeError:
            pass  # a rank that did not arrive: leave anyway, torchrun reports the failed one
    dist.destroy_process_group()


def barrier() -> None:
    if initialized():
        dist.barrier()


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum | max) of a tensor; a no-op in a single process."""
    if initialized() and world_size() > 1:
        red = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
        if dist.get_backend() == "nccl" and t.device.type != "cuda":  # NCCL reduces GPU tensors only
            tmp = t.cuda()
            dist.all_reduce(tmp, op=red)
            t.copy_(tmp)
        else:
            dist.all_reduce(t, op=red)
    return t


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (tensors and plain containers), as a list on rank 0 and
    None elsewhere. Used for per-rank RNG and method states in checkpoints."""
    if not (initialized() and world_size() > 1):
        return [obj]
    out: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(_to_cpu(obj), out, dst=0)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. a checkpoint's per-rank states)."""
    if not (initialized() and world_size() > 1):
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(what: str, value: Any) -> None:
    """Every rank holds the same ``value`` (its settings, its data, its weights), else a
    ConfigError on every rank: ranks given other commands or files would hang in a collective
    or mix two runs into one number (a collective)."""
    if not (initialized() and world_size() > 1):
        return
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    odd = [r for r, v in enumerate(values) if v != values[0]]
    if odd:
        from .errors import ConfigError

        raise ConfigError(f"the processes of this torchrun disagree on {what}: rank{'s' * (len(odd) > 1)} "
                          f"{', '.join(map(str, odd))} differ{'s' * (len(odd) == 1)} from rank 0; every process must "
                          "be given the same command, environment and files", field=what.split()[-1])


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def wrap(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """DDP around ``model`` when running under torchrun; the model itself otherwise.
    ``sync_bn``: BatchNorm statistics over the global batch (CUDA only: PyTorch's
    SyncBatchNorm has no CPU kernel)."""
    if not (initialized() and world_size() > 1):
        return model
    if sync_bn:
        if device.type != "cuda":
            from .errors import ConfigError  # a setting: said once, by rank 0, naming the flag

            raise ConfigError("sync_bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU implementation)",
                              cli="--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU implementation): "
                                  "leave it out on the CPU", field="sync_bn")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (attacks and evaluation call it directly)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

