"""Evaluation benchmark: run a suite (default AutoAttack standard, `aa`) with the
gradient-masking diagnostics on trained runs, on the full test set, and tabulate robust
accuracy, per-attack accuracy, verdict and wall-clock.

On the GPU machine, after benchmarks/core_cifar10.py has trained the runs:
    EAE_DATA_DIR=/tmp/c PYTHONPATH=src python benchmarks/eval_suite.py $OUT/core/standard \
        $OUT/core/fgsm_rs $OUT/core/eae --suite aa --out $OUT/aa

Writes OUT/results.json and OUT/results.md (device, command, commit), and each run's
report as OUT/<run name>.json / .md.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from eae import evaluate, load  # noqa: E402
from eae.checkpoint import read_config  # noqa: E402
from eae.data import load_test_set  # noqa: E402
from eae.utils import device_name, git_commit, resolve_device  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--suite", default="aa")
    ap.add_argument("--eps", type=float, default=8 / 255)
    ap.add_argument("--n", type=int, default=None, help="default: the full test set")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "bf16"))
    ap.add_argument("--diagnostics", default="full", choices=("full", "cheap", "off"))
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    rows = []
    for run in args.runs:
        cfg = read_config(run)
        model = load(run, device=device)
        x, y = load_test_set(cfg)
        test_size = len(y)
        if args.n:
            x, y = x[:args.n], y[:args.n]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        rep = evaluate(model, x, y, suite=args.suite, eps=args.eps, batch_size=args.batch_size, device=device,
                       precision=args.precision, diagnostics=args.diagnostics, test_size=test_size)
        wall = time.perf_counter() - t0
        name = Path(run).name
        (out / f"{name}.json").write_text(json.dumps(rep.to_dict(), indent=2) + "\n")
        (out / f"{name}.md").write_text(rep.to_markdown(title=name) + "\n")
        suite_seconds = sum(v["seconds"] for v in rep.per_attack.values())
        rows.append({"run": name, "method": cfg.method, "n": rep.n, "subset": rep.subset,
                     "clean": rep.clean_accuracy, "per_attack": {k: v["accuracy"] for k, v in rep.per_attack.items()},
                     "robust_accuracy": rep.robust_accuracy, "verdict": rep.verdict, "evidence": rep.evidence,
                     "suite_seconds": suite_seconds, "wall_seconds_with_diagnostics": wall})
        print(json.dumps(rows[-1]), flush=True)

    meta = {"device": device_name(device), "torch": torch.__version__, "commit": git_commit(),
            "command": " ".join(shlex.quote(a) for a in sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "suite": args.suite, "precision": args.precision}
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    attacks = list(rows[0]["per_attack"]) if rows else []
    lines = [f"# Evaluation benchmark: suite {args.suite}, eps {args.eps * 255:.0f}/255", "",
             f"- device: {meta['device']}", f"- torch {meta['torch']}, commit {meta['commit']}, {meta['date']}",
             f"- command: `{meta['command']}`", f"- attack precision: {args.precision} (scores in strict fp32)", "",
             "| run | n | clean | " + " | ".join(attacks) + " | robust (worst case) | verdict | suite s | "
             "with diagnostics s |", "|---|---:|---:|" + "---:|" * len(attacks) + "---:|---|---:|---:|"]
    for r in rows:
        n = f"{r['n']:,}" + (" (SUBSET)" if r["subset"] else "")
        cells = " | ".join(f"{100 * r['per_attack'][a]:.2f}%" for a in attacks)
        lines.append(f"| {r['run']} | {n} | {100 * r['clean']:.2f}% | {cells} | {100 * r['robust_accuracy']:.2f}% | "
                     f"{r['verdict']} | {r['suite_seconds']:.1f} | {r['wall_seconds_with_diagnostics']:.1f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
