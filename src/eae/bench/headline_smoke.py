"""The smoke part of ``eae bench headline``: every device path of the training loop on a
few steps of a small network, each check reported ok or failed with the reason.

On a GPU these are the paths that CPU tests cannot reach: bf16 autocast, channels_last,
CUDA-event timing, the non-finite guard's device-side checks, deterministic cuDNN for a
bit-exact resume, and ``torch.compile``.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file

from ..checkpoint import CHECKPOINT, WEIGHTS
from ..trainer import TrainingStopped, train


def _check(name: str, fn: Callable[[], str]) -> dict[str, Any]:
    t = time.perf_counter()
    try:
        status, detail = "ok", fn()
    except AssertionError as e:
        status, detail = "failed", str(e)
    except Exception as e:  # a crash of a device path is exactly what the smoke is for
        status, detail = "failed", f"{type(e).__name__}: {e}"
    return {"check": name, "status": status, "detail": detail, "seconds": round(time.perf_counter() - t, 2)}


def _finite_run(res) -> str:
    rows = res.metrics
    assert rows and all(math.isfinite(r["train_loss"]) and r["seconds"] > 0 for r in rows), \
        f"non-finite loss or no time in {rows}"
    return (f"{len(rows)} epochs, loss {rows[0]['train_loss']:.3f} -> {rows[-1]['train_loss']:.3f}, "
            f"{sum(r['seconds'] for r in rows):.2f} s")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / WEIGHTS))


@contextlib.contextmanager
def _restored_backend_flags():
    """A deterministic run switches global flags; the speed part must not inherit them."""
    flags = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(flags[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[1:]


def smoke_checks(h) -> list[dict[str, Any]]:
    """``h``: the Headline (output folder, device, sizes)."""
    from .headline import poisoned_batch

    base = {"dataset": "synthetic", "method": "fgsm_rs", **h.scale.smoke}
    root = h.out / "smoke"
    cfg = (lambda name, **kw: h.config(root / name, **{**base, **kw}))
    cuda = h.dev.type == "cuda"
    timing = "CUDA events" if cuda else "wall clock (no CUDA device)"

    def nonfinite_stop() -> str:
        with poisoned_batch():
            try:
                train(cfg("nan_stop"), quiet=True)
            except TrainingStopped as e:
                assert not (root / "nan_stop" / CHECKPOINT).exists(), "a checkpoint was written after the NaN"
                return f"stopped: {str(e).split(':')[0]}"
        raise AssertionError("a NaN batch did not stop the run")

    def nonfinite_skip() -> str:
        with poisoned_batch():
            res = train(cfg("nan_skip", nonfinite="skip"), quiet=True)
        skipped = [r.get("skipped_steps") for r in res.metrics]
        assert skipped == [1] * len(res.metrics), f"skipped steps per epoch {skipped}, expected 1 each"
        bad = [k for k, v in _weights(root / "nan_skip").items() if not torch.isfinite(v).all()]
        assert not bad, f"non-finite weights after skipping: {bad[:3]}"
        return f"skipped {skipped} steps, weights finite"

    def resume() -> str:
        with _restored_backend_flags():
            full = cfg("resume_full", deterministic=True)
            train(full, quiet=True)
            part = cfg("resume_part", deterministic=True)
            train(part, quiet=True, stop_after=1)
            train(part, quiet=True, resume=True)
        a, b = _weights(root / "resume_full"), _weights(root / "resume_part")
        diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        assert diff == 0.0, f"resumed weights differ from the uninterrupted run's by up to {diff:.3g}"
        return "final weights bit-identical to an uninterrupted run (deterministic algorithms)"

    return [
        _check("bf16 + channels_last (fgsm_rs)", lambda: _finite_run(train(cfg("bf16_cl", precision="bf16"),
                                                                            quiet=True)) + f"; timing: {timing}"),
        _check("bf16 + channels_last (eae)", lambda: _finite_run(train(cfg("bf16_eae", precision="bf16",
                                                                           method="eae"), quiet=True))),
        _check("fp32, contiguous", lambda: _finite_run(train(cfg("fp32", precision="fp32", channels_last=False),
                                                             quiet=True))),
        _check("non-finite guard: stop", nonfinite_stop),
        _check("non-finite guard: skip", nonfinite_skip),
        _check("checkpoint + resume", resume),
    ]


def compile_check(h) -> list[dict[str, Any]]:
    base = {"dataset": "synthetic", "method": "fgsm_rs", **h.scale.smoke}

    def compiled() -> str:
        res = train(h.config(h.out / "smoke" / "compile", compile=True, **base), quiet=True)
        first, rest = res.metrics[0]["seconds"], [r["seconds"] for r in res.metrics[1:]]
        return _finite_run(res) + f"; first epoch (with compilation) {first:.1f} s, then {rest}"

    return [_check("torch.compile (fgsm_rs)", compiled)]
