"""The CPU-sized demo: standard, FGSM-RS, EAE and the paper's EAE trained the same way on a subset of
CIFAR-10, then evaluated side by side on the first test images (clean, CE-PGD-20,
CW-20 and the per-example worst case), with their training time.

It is a demonstration of the pipeline on a small network, not a result: the
numbers that matter come from ``benchmarks/`` on a GPU.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from .checkpoint import WEIGHTS, load
from .config import TrainConfig
from .data import load_test_set
from .evaluation import evaluate
from .trainer import train
from .bench.runner import timing_of
from .system import machine_name, training_precision
from .outputs import OutputFolder, documents_refused, write_documents
from .utils import atomic_write_json, resolve_device

METHODS = ("standard", "fgsm_rs", "eae", "eae_paper")


def demo_config(method: str, out: str, data_dir: str | None, device: str, train_subset: int,
                epochs: int) -> TrainConfig:
    return TrainConfig(
        out=f"{out}/{method}", method=method, dataset="cifar10", data_dir=data_dir, device=device,
        arch="resnet_small", train_subset=train_subset, val_size=500, epochs=epochs, batch_size=128,
        lr_max=0.2, val_attack_steps=5, val_every=epochs,
    )


def run_demo(out: str = "runs/demo", data_dir: str | None = None, device: str = "cpu", quiet: bool = False,
             train_subset: int = 10000, epochs: int = 5, n_test: int = 1000) -> list[dict[str, Any]]:
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    dev = resolve_device(device)
    folder = OutputFolder(out, "demo").claim()
    try:
        rows = _train_and_evaluate(out, data_dir, device, dev, quiet, train_subset, epochs, n_test, log)
    except BaseException:
        folder.abandon()
        raise
    _report(rows, out, dev, train_subset, epochs, n_test, quiet)
    return rows


def _check_earlier(out, data_dir, device, train_subset, epochs) -> None:
    """A demo folder holding runs of other settings (sizes, device): said before anything
    trains, with the way out; resuming them as this demo's would mix two demos."""
    from .checkpoint import CONFIG, read_config
    from .errors import OutputRefused

    for method in METHODS:
        cfg = demo_config(method, out, data_dir, device, train_subset, epochs)
        if (Path(cfg.out) / CONFIG).is_file():
            diff = read_config(cfg.out).differences(cfg)
            if diff:
                what = ", ".join(f"{k} {a!r}" for k, (a, _) in diff.items())
                raise OutputRefused(f"{out} holds a demo of other settings ({method}: {what}); nothing was changed: "
                                    f"give another --out, or move {out} away to start over")


def _train_and_evaluate(out, data_dir, device, dev, quiet, train_subset, epochs, n_test, log):
    _check_earlier(out, data_dir, device, train_subset, epochs)
    refused = documents_refused(Path(out), ["demo.md"], "eae demo")
    if refused:  # before any work: the report written at the end would replace it
        from .errors import OutputRefused

        raise OutputRefused(refused)
    rows = []
    for method in METHODS:
        cfg = demo_config(method, out, data_dir, device, train_subset, epochs)
        finished = (Path(cfg.out) / WEIGHTS).is_file()
        log(f"\n== {method}: {'already trained, reusing' if finished else 'training'} ({cfg.out})")
        result = train(cfg, resume=True, quiet=quiet)
        model = load(cfg.out, device=dev)
        x, y = load_test_set(cfg, n_test)
        log(f"evaluating {method}: clean, CE-PGD-20, CW-20 on the first {n_test:,} test images")
        t0 = time.perf_counter()
        res = evaluate(model, x, y, ["clean", "pgd20", "cw20"], cfg.eps, batch_size=250, device=dev,
                       diagnostics="cheap", test_size=10000, progress=not quiet)
        res.seconds = time.perf_counter() - t0  # attacks and the masking check: what the user waited for
        rows.append({"method": method, "clean": res.accuracy["clean"], "pgd20": res.accuracy["pgd20"],
                     "cw20": res.accuracy["cw20"], "worst_case": res.robust_accuracy,
                     "train_seconds": result.train_seconds, "eval_seconds": res.seconds,
                     "timing": timing_of(result.metrics, dev),
                     "verdict": res.verdict, "evidence": res.evidence})
    return rows


def _report(rows, out, dev, train_subset: int, epochs: int, n_test: int, quiet: bool) -> None:
    trusted = all(r["timing"]["reliable"] is not False for r in rows)
    for r in rows:  # no ratio from a process that did not get its cores (a shared machine)
        r["x_standard"] = r["train_seconds"] / rows[0]["train_seconds"] if trusted else None
    header = (f"CIFAR-10 demo: resnet_small, {train_subset:,} training images, {epochs} epochs; "
              f"evaluated on the first {n_test:,} test images (a SUBSET), eps = 8/255 L-inf, on "
              f"{machine_name(dev)}, training in {training_precision('auto', dev)}")
    table = format_table(rows)
    note = ("CE-PGD-20 far above CW-20 means the cross-entropy gradient is masked: trust the CW and "
            "worst-case columns. 'masking check' is the cheap gradient-masking check (CE vs margin gap, "
            "logit scale, zero gradients); `eae eval RUN --suite aa` runs the full one.")
    for name in write_documents(Path(out), {"demo.md": f"{header}\n\n{table}\n\n{note}\n"}):
        print(f"note: {Path(out) / name} was changed since eae demo wrote it: kept as it is, not updated "
              f"({Path(out) / 'demo.json'} holds the numbers)", file=sys.stderr, flush=True)
    atomic_write_json(Path(out) / "demo.json", {"header": header, "rows": rows})
    if not quiet:
        print(f"\n{header}\n\n{table}\n\n{note}\nwritten: {out}/demo.md, {out}/demo.json")


def _ratio(r: dict[str, Any]) -> str:
    if r.get("x_standard") is not None:
        return f"{r['x_standard']:.2f}"
    share = (r.get("timing") or {}).get("cpu_share")
    return "unreliable timing" + (f" ({100 * share:.0f}% of its cores)" if share is not None else "")


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | clean | PGD-20 (CE) | CW-20 | worst case | train time | x standard | masking check |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {100 * r['clean']:.1f}% | {100 * r['pgd20']:.1f}% | "
                     f"{100 * r['cw20']:.1f}% | {100 * r['worst_case']:.1f}% | {r['train_seconds']:.0f} s | "
                     f"{_ratio(r)} | {r.get('verdict', '-')} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run_demo(), indent=2))
