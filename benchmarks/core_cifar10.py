"""Core benchmark: PreActResNet-18, full CIFAR-10, ε = 8/255, 15 epochs, batch 512,
for `standard`, `fgsm_rs`, `eae_paper` and `eae` (presets in configs/). Records seconds per epoch, total
training time, and clean / CE-PGD-20 / CW-20 / worst-case accuracy on the full test set.

On the GPU machine (CIFAR-10 copied to /tmp/c, see the project notes):
    EAE_DATA_DIR=/tmp/c PYTHONPATH=src python benchmarks/core_cifar10.py --out $OUT/core
Speed only, no dataset needed (synthetic images of CIFAR-10's size; accuracies meaningless):
    PYTHONPATH=src python benchmarks/core_cifar10.py --synthetic --out $OUT/speed

Writes OUT/results.json and OUT/results.md, with the device, the command and the commit.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from eae import TrainConfig, evaluate, load, train  # noqa: E402
from eae.data import load_test_set  # noqa: E402
from eae.utils import device_name, git_commit, resolve_device  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--methods", default="standard,fgsm_rs,eae_paper,eae")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--n-test", type=int, default=None, help="default: the full test set")
    ap.add_argument("--attacks", default="clean,pgd20,cw20")
    ap.add_argument("--synthetic", action="store_true", help="speed only, synthetic data of CIFAR-10's size")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--arch", default=None, help="override the presets' preact_resnet18 (smoke tests)")
    ap.add_argument("--train-subset", type=int, default=0, help="smoke tests only")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    rows = []
    for method in args.methods.split(","):
        overrides = dict(out=str(out / method), epochs=args.epochs, batch_size=args.batch_size,
                         device=args.device, compile=args.compile, train_subset=args.train_subset)
        if args.arch:
            overrides["arch"] = args.arch
        if args.synthetic:
            overrides.update(dataset="synthetic", synthetic_train_size=50000, synthetic_test_size=10000,
                             val_size=1000)
        cfg = TrainConfig.from_toml(REPO / "configs" / f"cifar10_preact18_{method}.toml", **overrides)
        t0 = time.perf_counter()
        result = train(cfg, resume=True)
        wall = time.perf_counter() - t0
        secs = [m["seconds"] for m in result.metrics]
        row = {
            "method": method, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "seconds_per_epoch_median": statistics.median(secs), "seconds_first_epoch": secs[0],
            "train_seconds": sum(secs), "wall_seconds_with_validation": wall,
            "val_clean": result.final.get("val_clean"), "val_pgd10": result.final.get("val_pgd"),
            "val_cw10": result.final.get("val_cw"),
        }
        for key in ("logit_norm", "seed_frac"):
            if key in result.final:
                row[key] = result.final[key]
        if not args.synthetic:
            model = load(cfg.out, device=device)
            x, y = load_test_set(cfg, args.n_test)
            ev = evaluate(model, x, y, args.attacks.split(","), cfg.eps, batch_size=1000, device=device,
                          test_size=10000)
            row.update({f"test_{k}": v for k, v in ev.accuracy.items()})
            row.update(test_worst_case=ev.robust_accuracy, test_n=ev.n, test_subset=ev.subset,
                       eval_seconds=ev.seconds, verdict=ev.verdict, evidence=ev.evidence)
        rows.append(row)
        print(json.dumps(row), flush=True)

    base = next((r["train_seconds"] for r in rows if r["method"] == "standard"), None)
    for r in rows:
        r["x_standard"] = r["train_seconds"] / base if base else None
    meta = {
        "device": device_name(device), "torch": torch.__version__, "commit": git_commit(),
        "command": " ".join(shlex.quote(a) for a in sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "dataset": "synthetic (speed only)" if args.synthetic else "CIFAR-10",
    }
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    arch = args.arch or "preact_resnet18"
    lines = [f"# Core benchmark: {arch}, {meta['dataset']}, eps 8/255",
             "", f"- device: {meta['device']}", f"- torch {meta['torch']}, commit {meta['commit']}, {meta['date']}",
             f"- command: `{meta['command']}`", "",
             "| method | s/epoch (median) | train s | x standard | clean | PGD-20 (CE) | CW-20 | worst case | n | "
             "masking verdict |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        acc = (lambda k: f"{100 * r[k]:.2f}%" if k in r else "-")
        lines.append(f"| {r['method']} | {r['seconds_per_epoch_median']:.2f} | {r['train_seconds']:.1f} | "
                     f"{r['x_standard']:.2f} | {acc('test_clean')} | {acc('test_pgd20')} | {acc('test_cw20')} | "
                     f"{acc('test_worst_case')} | {r.get('test_n', '-')}{' (SUBSET)' if r.get('test_subset') else ''} | "
                     f"{r.get('verdict', '-')} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
