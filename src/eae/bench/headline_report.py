"""REPORT.md and pareto.png of ``eae bench headline`` (headline.json is the data)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _scope(n: int | None, size: int | None) -> str:
    if n is None or size is None:
        return "-"
    return f"{n:,} of {size:,} test images" + (" (SUBSET)" if n < size else " (full test set)")


def accuracy_table(results: dict[str, Any]) -> list[str]:
    runs = results["runs"]
    if not runs:
        return ["(no accuracy run finished)"]
    rows = [[r["method"], str(r["epochs"]), f"{r['train_seconds']:.1f}",
             f"{r['x_standard']:.2f}" if r.get("x_standard") else "-", _pct(r.get("clean")), _pct(r.get("cw20")),
             _pct(r.get("aa")), _pct(r.get("worst_case")), r.get("verdict", "-")] for r in runs]
    r0 = next((r for r in runs if "aa_n" in r), runs[0])
    r1 = next((r for r in runs if "cw_n" in r), runs[0])
    scope = [f"clean and CW-20 on {_scope(r1.get('cw_n'), r1.get('test_size'))}; AA: "
             f"{r0.get('aa_label', 'AutoAttack')}, and the masking verdict, on {_scope(r0.get('aa_n'), r0.get('test_size'))}; "
             "worst case: per example over CW-20 and AutoAttack on the AutoAttack images; training time: CUDA "
             "events on a GPU, validation excluded"]
    return _table(["method", "epochs", "train s", "x standard", "clean %", "CW-20 %", "AA %", "worst case %",
                   "masking verdict"], rows) + [""] + scope


def speed_table(results: dict[str, Any]) -> list[str]:
    rows = [[r["method"], f"{r['seconds_per_cifar10_epoch']:.2f}", f"{r['x_standard']:.2f}",
             f"{1000 * r['seconds_per_step']:.1f}", f"{r['passes_timed']} x {r['steps_per_pass']}"]
            for r in results["speed"]]
    if not rows:
        return ["(not measured)"]
    return _table(["method", "s / CIFAR-10 epoch", "x standard", "ms / step", "timed passes x steps"], rows) + [
        "", "synthetic CIFAR-sized data (steady state: the first pass, with warm-up, is not timed); an epoch = "
            "49,000 images at 512 per step; Free: per epoch-equivalent (every replay is a step)"]


def write_headline_report(out: Path, results: dict[str, Any]) -> None:
    m = results["meta"]
    device = m["device"] + (f", CUDA {m['cuda']}, cuDNN {m['cudnn']}" if m.get("cuda") else "")
    md = [f"# eae bench headline ({m['scale']})", "",
          f"- device: {device}; torch {m['torch']}; Python {m['python']}; eae {m['eae']} (commit {m['commit']})",
          f"- command: `{m['command']}`; {m['date']}",
          f"- budget: {m['budget_s'] or 'none'} s; the whole command took {m['wall_seconds']:.0f} s", ""]
    failed = [s for s in results["smoke"] if s["status"] != "ok"]
    if failed:
        md += ["**SMOKE FAILED**: " + "; ".join(f"{s['check']}: {s['detail']}" for s in failed), ""]
    md += ["## Accuracy and time", ""] + accuracy_table(results)
    alarms = [r for r in results["runs"] if r.get("verdict") not in (None, "ok")]
    for r in alarms:
        md += ["", f"{r['method']}: **{r['verdict']}**"] + [f"- {e}" for e in r["evidence"][:4]]
    if _plot(out, results):
        md += ["", "![robust accuracy against training time](pareto.png)"]
    md += ["", "## Speed", ""] + speed_table(results)
    md += ["", "## Smoke", ""] + _table(["check", "status", "detail", "s"], [
        [s["check"], s["status"], s["detail"].replace("|", "/"), f"{s['seconds']:.1f}"] for s in results["smoke"]])
    skipped = results["skipped"]
    md += ["", "## Parts", ""] + _table(["part", "status", "planned s", "took s", "note"], [
        [p["name"], p["status"], f"{p['estimate_s']:.0f}", f"{p['seconds']:.0f}", p["note"]] for p in results["parts"]])
    md += ["", "## Skipped or failed parts", ""]
    md += [f"- {s['name']}: {s['status']}: {s['note']}" for s in skipped] or ["none"]
    (out / "REPORT.md").write_text("\n".join(md) + "\n")


def _plot(out: Path, results: dict[str, Any]) -> bool:
    pts = [(r["train_seconds"], 100 * r["aa"], r["method"]) for r in results["runs"] if "aa" in r]
    if not pts:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for t, a, name in pts:
        ax.plot(t, a, "o")
        ax.annotate(name, (t, a), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front, best = [], -1.0
    for t, a, _ in sorted(pts):
        if a > best:
            front.append((t, a))
            best = a
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="gray", lw=1, label="Pareto front")
    r0 = next(r for r in results["runs"] if "aa" in r)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(f"{r0['aa_label'].split(' (')[0]} robust accuracy (%), first {r0['aa_n']:,} test images", fontsize=8)
    ax.set_title(f"{results['meta']['device']}: robustness against training time", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=110)
    plt.close(fig)
    return True
