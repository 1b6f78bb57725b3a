"""bf16 against fp32 training, seed for seed: the ``precision-parity-cpu`` bench suite's
results (fgsm_rs and eae, each trained in fp32 and with bf16 autocast at CPU size) compared
per method and metric: mean over seeds of each precision, and whether their difference is
below two standard errors (SE of the difference = sqrt(se_bf16^2 + se_fp32^2), se = std /
sqrt(n), std with n - 1: the rule of ``training_equivalence.py``).

    EAE_DATA_DIR=/path/to/cifar10 eae bench precision-parity-cpu --seeds 3 --out runs/parity
    python benchmarks/precision_parity.py runs/parity --out benchmarks/results/cpu-2core/equivalence/precision_parity

Writes OUT/precision_parity.json and OUT/precision_parity.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from training_equivalence import _pm, compare

METRICS = (("clean", "clean"), ("cw20", "CW-20"), ("aa", "aa-fast"))
METHODS = ("fgsm_rs", "eae")


def parity(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method and metric: the comparison of bf16 (``ours``) against fp32 (``theirs``)."""
    out: dict[str, Any] = {}
    for method in METHODS:
        by = {p: sorted((r for r in rows if r["entry"] == f"{method}_{p}"), key=lambda r: r["seed"])
              for p in ("bf16", "fp32")}
        if not by["bf16"] or not by["fp32"]:
            continue
        out[method] = {key: compare([r[key] for r in by["bf16"]], [r[key] for r in by["fp32"]])
                       for key, _ in METRICS}
        out[method]["seeds"] = {p: [r["seed"] for r in v] for p, v in by.items()}
        out[method]["train_seconds"] = {p: [r["train_seconds"] for r in v] for p, v in by.items()}
    return out


def to_markdown(doc: dict[str, Any]) -> str:
    meta = doc["bench"]
    lines = ["# bf16 autocast against fp32 training (CPU-sized)", "",
             f"Suite `{meta['suite']}`: {meta['description']}. Machine: {doc['machine']}; torch {meta['torch']}, "
             f"commit {meta['commit']}, {meta['date']}. Command: `{meta['command']}`.", "",
             "Accuracy in %, mean ± std over seeds (SE); equivalent when |bf16 - fp32| < 2 SE of the difference.",
             "", "| method | metric | bf16 | fp32 | bf16 - fp32 | 2 SE | equivalent |", "|---|---|---|---|---:|---:|---|"]
    for method, comp in doc["parity"].items():
        for key, label in METRICS:
            c = comp[key]
            lines.append(f"| `{method}` | {label} | {_pm(c['ours'])} | {_pm(c['theirs'])} | {100 * c['diff']:+.1f} | "
                         f"{200 * c['se_diff']:.1f} | {'yes' if c['equivalent'] else 'no'} |")
    lines += ["", "Per seed (clean / CW-20 / aa-fast, %; training seconds, from one-thread processes that shared "
                  "the machine: not a speed comparison):", ""]
    for r in sorted(doc["rows"], key=lambda r: (r["entry"], r["seed"])):
        lines.append(f"- `{r['entry']}` seed {r['seed']}: {100 * r['clean']:.1f} / {100 * r['cw20']:.1f} / "
                     f"{100 * r['aa']:.1f}; {r['train_seconds']:.0f} s")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bench", help="the output folder of `eae bench precision-parity-cpu`")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    res = json.loads((Path(a.bench) / "results.json").read_text())
    if res["meta"]["suite"] != "precision-parity-cpu":
        sys.exit(f"{a.bench}: a {res['meta']['suite']} benchmark, not precision-parity-cpu")
    env = next(Path(a.bench).glob("runs/*/environment.json"), None)
    machine = json.loads(env.read_text()).get("cpu", res["meta"]["device"]) if env else res["meta"]["device"]
    doc = {"bench": res["meta"], "machine": machine, "rows": res["rows"], "parity": parity(res["rows"])}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision_parity.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "precision_parity.md").write_text(to_markdown(doc))
    print((out / "precision_parity.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
