"""The benchmark report: the paper-style table (mean ± std over seeds) and plots, as
REPORT.md (plots as PNG files beside it) and a self-contained report.html."""
from __future__ import annotations

import base64
import html
import json
import statistics
from pathlib import Path
from typing import Any

from ..outputs import write_documents

REPORTS = ("REPORT.md", "report.html", "eae_research.json", "pareto.png", "curves.png", "diagnosis.png",
           "speed.png")  # the documents write_report makes
COLUMNS = (("clean", "clean"), ("fgsm", "FGSM"), ("pgd20", "PGD-20"), ("cw20", "CW-20"), ("aa", "AA"))


def _ms(values: list[float], pct: bool = True, digits: int = 1) -> str:
    """mean ± std (sample) of the non-missing values; percentages by default."""
    k = 100 if pct else 1
    vals = [k * v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _group(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["entry"], []).append(r)
    return groups


def table_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the main table."""
    rows = results["rows"]
    if not rows:  # speed suite
        header = ["method", "s / epoch", "x standard", "s / pass", "replays"]
        cells = [[r["entry"], f"{r['seconds_per_epoch']:.3f}", f"{r['x_standard']:.2f}" if r["x_standard"] else "-",
                  f"{r['seconds_per_pass']:.3f}", str(r["replays"])] for r in results["speed"] or []]
        return header, cells
    columns = [(k, c) for k, c in COLUMNS if any(r.get(k) is not None for r in rows)]
    if any(r.get("aa_full") is not None for r in rows):
        columns.append(("aa_full", f"AA full ({rows[0].get('aa_full_n', 0):,})"))
    header = ["method", "epochs"] + [c for _, c in columns] + ["worst case", "training time (s)", "x standard",
                                                              "masking verdict"]
    cells = []
    for name, g in _group(rows).items():
        verdicts = sorted({r["verdict"] for r in g})
        cells.append([name, str(g[0]["epochs"])] + [_ms([r.get(k) for r in g]) for k, _ in columns]
                     + [_ms([r["worst_case"] for r in g]), _ms([r["train_seconds"] for r in g], pct=False),
                        _ratio_cell(g), "/".join(verdicts)])
    return header, cells


def _unreliable(r: dict[str, Any]) -> bool:
    return (r.get("timing") or {}).get("reliable") is False


def _ratio_cell(g: list[dict[str, Any]]) -> str:
    """Training time over standard's; "unreliable" rather than a ratio from a process that
    did not get its cores."""
    if any(_unreliable(r) for r in g):
        return "unreliable timing"
    return _ms([r["x_standard"] for r in g], pct=False, digits=2)


def _scope(results: dict[str, Any]) -> list[str]:
    rows = results["rows"]
    if not rows:
        return []
    lines = []
    r0 = [r for r in rows if r["seed"] == 0]
    rest = [r for r in rows if r["seed"] > 0]
    size = rows[0]["test_size"]

    def sub(n):
        return f"{n:,} of {size:,} test images" + (" (SUBSET)" if n < size else " (full test set)")

    if r0:
        quick = "/".join(c for k, c in COLUMNS[:4] if r0[0].get(k) is not None)
        lines.append(f"seed 0: {quick} on {sub(r0[0]['n'])}; {r0[0]['aa_label']} on {sub(r0[0]['aa_n'])}"
                     + (f"; full AutoAttack (aa) on {sub(r0[0]['aa_full_n'])}" if r0[0].get("aa_full_n") else ""))
    if rest:
        lines.append(f"seeds 1..{max(r['seed'] for r in rest)}: {rest[0]['aa_label']} on {sub(rest[0]['aa_n'])}")
    lines.append("values: accuracy in %, mean ± std over seeds; worst case = per example over every attack, "
                 "on the AA images; training time excludes per-epoch validation")
    slow = [r for r in rows if _unreliable(r)]
    if slow:
        lines.append("unreliable timing (the process got under 80% of its cores: a shared machine): "
                     + ", ".join(f"{r['entry']} seed {r['seed']} ({100 * r['timing']['cpu_share']:.0f}%)"
                                 for r in slow))
    return lines


def _plots(results: dict[str, Any]) -> dict[str, bytes]:
    """The report's figures as PNG files (name -> bytes), where matplotlib is installed: the
    Pareto plot, validation curves, the masking diagnosis per epoch, and seconds per epoch."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    made = {}
    rows = results["rows"]
    if rows:
        groups = _group(rows)
        # one look per entry, the same in every plot: 20 colours, then other line styles
        # (the ablation has more entries than a default colour cycle)
        cmap = plt.get_cmap("tab20")
        look = {name: {"color": cmap(i % 20), "linestyle": ("-", "--", ":")[i // 20 % 3],
                       "marker": ".ovs^"[i // 20 % 5]} for i, name in enumerate(groups)}
        made["pareto.png"] = _png(_pareto_plot(plt, groups, look, rows, results))
        made["curves.png"] = _png(_curves_plot(plt, groups, look))
        fig = _diagnosis_plot(plt, groups, look)
        if fig is not None:
            made["diagnosis.png"] = _png(fig)
    fig = _speed_plot(plt, results)
    if fig is not None:
        made["speed.png"] = _png(fig)
    return made


def _pareto_plot(plt, groups, look, rows, results):
    """Robust accuracy against training time (mean over seeds, std as error bars), with the
    Pareto front; labels placed so that none overlaps another."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    pts = []
    for name, g in groups.items():
        a = [100 * r["aa"] for r in g]
        tx, ay = statistics.mean(r["train_seconds"] for r in g), statistics.mean(a)
        ax.errorbar(tx, ay, yerr=statistics.stdev(a) if len(a) > 1 else 0, fmt="o", capsize=3,
                    color=look[name]["color"])
        pts.append((tx, ay, name))
    front, best = [], -1.0
    for tx, ay, _ in sorted(pts):
        if ay > best:
            front.append((tx, ay))
            best = ay
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="gray", lw=1, label="Pareto front")
    _label_points(ax, pts)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(f"{rows[0]['aa_label'].split(' (')[0]} robust accuracy (%)")
    ax.set_title(f"{results['meta']['suite']}: robustness against training time")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # outside: hides no point
    ax.grid(alpha=0.3)
    return fig


def label_positions(pts: list[tuple[float, float, str]], width: float = 0.24, height: float = 0.06
                    ) -> list[tuple[float, float, str]]:
    """Where each point's label goes, in axes fractions (the axes set by :func:`_label_points`):
    beside its point (right of it, left for points in the right third), moved up or down in
    steps of ``height`` until its box (``width`` x ``height``) meets no label placed before
    it (points taken from the top). Returns (x, y, horizontal alignment) per point."""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xspan, yspan = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    placed: list[tuple[float, float, float]] = []  # (left, right, y) of each placed label
    out: dict[int, tuple[float, float, str]] = {}
    for i in sorted(range(len(pts)), key=lambda i: -pts[i][1]):
        fx = 0.05 + 0.8 * (pts[i][0] - min(xs)) / xspan
        fy = 0.05 + 0.85 * (pts[i][1] - min(ys)) / yspan
        ha = "right" if fx > 0.6 else "left"
        left, right = (fx - 0.015 - width, fx - 0.015) if ha == "right" else (fx + 0.015, fx + 0.015 + width)
        cand = fy
        for k in range(60):
            cand = fy + (k + 1) // 2 * height * (-1 if k % 2 else 1)
            if all(abs(cand - py) >= height or right <= pl or left >= pr for pl, pr, py in placed):
                break
        placed.append((left, right, cand))
        out[i] = (left if ha == "left" else right, cand, ha)
    return [out[i] for i in range(len(pts))]


def _label_points(ax, pts: list[tuple[float, float, str]]) -> None:
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xspan, yspan = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    # points span 5%..85% of the width and 5%..90% of the height, as label_positions assumes
    ax.set_xlim(min(xs) - 0.0625 * xspan, max(xs) + 0.1875 * xspan)
    ax.set_ylim(min(ys) - 0.0588 * yspan, max(ys) + 0.1176 * yspan)
    for (tx, ay, name), (fx, fy, ha) in zip(pts, label_positions(pts)):
        moved = abs(fy - (0.05 + 0.85 * (ay - min(ys)) / yspan)) > 1e-9
        ax.annotate(name, (tx, ay), xytext=(fx, fy), textcoords="axes fraction", fontsize=8, va="center", ha=ha,
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6} if moved else None)


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (pass over the data)")


def _curves_plot(plt, groups, look):
    """Per-epoch validation accuracy, clean and worst case (seed 0)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, g in groups.items():
        curve = [c for c in g[0]["curve"] if c.get("val_clean") is not None]
        if curve:
            ep = [c["epoch"] for c in curve]
            a1.plot(ep, [100 * c["val_clean"] for c in curve], label=name, **look[name])
            a2.plot(ep, [100 * (c["val_robust"] or 0) for c in curve], label=name, **look[name])
    a1.set_title("validation clean accuracy")
    a2.set_title("validation worst case of PGD and CW")
    for a in (a1, a2):
        _integer_epochs(a)
        a.set_ylabel("accuracy (%)")
        a.grid(alpha=0.3)
    a2.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return fig


_DIAGNOSIS_KEYS = [("logit_norm", "mean logit norm"), ("feature_norm", "mean feature norm"),
                   ("seed_frac", "seed fraction"), ("val_pgd", "val CE-PGD accuracy (%)"),
                   ("val_cw", "val CW accuracy (%)"), ("val_aa_fast", "val aa-fast accuracy (%)")]


def _diagnosis_plot(plt, groups, look):
    """The masking diagnosis: how scale, seeds and robustness evolve per epoch, one panel per
    quantity the runs recorded (None when they recorded none of it)."""
    present = [(k, t) for k, t in _DIAGNOSIS_KEYS
               if any(c.get(k) is not None for g in groups.values() for c in g[0]["curve"])]
    if not any(k in ("logit_norm", "val_aa_fast") for k, _ in present):
        return None
    cols = min(3, len(present))
    rows = -(-len(present) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.5 * rows), squeeze=False)
    for ax in axes.flat[len(present):]:
        ax.remove()  # no empty panel
    for ax, (k, title) in zip(axes.flat, present):
        for name, g in groups.items():
            pts = [(c["epoch"], c[k]) for c in g[0]["curve"] if c.get(k) is not None]
            if pts:
                scale = 100 if k.startswith("val_") else 1
                ax.plot([p[0] for p in pts], [scale * p[1] for p in pts], label=name, **look[name])
        ax.set_ylabel(title, fontsize=9)
        _integer_epochs(ax)
        ax.grid(alpha=0.3)
        if k == "logit_norm":
            ax.set_yscale("log")
    handles = [plt.Line2D([], [], label=name, **look[name]) for name in groups]
    fig.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def _speed_plot(plt, results):
    """Seconds per epoch: from the speed table where there is one, else from the runs."""
    speed, rows = results.get("speed"), results["rows"]
    if speed:
        names, secs = [r["entry"] for r in speed], [r["seconds_per_epoch"] for r in speed]
        label = "seconds per epoch (Free: per epoch-equivalent)"
    elif rows:
        g = _group(rows)
        names = list(g)
        secs = [statistics.mean(r["train_seconds"] / max(r["epochs"], 1) for r in v) for v in g.values()]
        label = "training seconds per epoch (Free: per epoch-equivalent)"
    else:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.bar(names, secs, color="tab:blue")
    ax.set_ylabel("seconds")
    ax.set_title(label)
    ax.tick_params(axis="x", rotation=30)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _png(fig) -> bytes:
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # keeps a legend placed outside the axes
    plt.close(fig)
    return buf.getvalue()


def research_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The machine-readable rows of the EAE ablation (benchmarks/eae_research.json). ``val`` holds the
    last epoch's validation numbers (held-out training images): what a variant is chosen on;
    the test-set numbers are only reported."""
    rows = results["rows"]
    std = {r["seed"]: r["train_seconds"] for r in rows if r["entry"] == "standard"}
    val_keys = ("val_clean", "val_pgd", "val_cw", "val_robust", "val_aa_fast")
    return [{"method": r["entry"], "config": r.get("config", {}), "seed": r["seed"], "clean": r["clean"],
             "aa": r["aa"], "aa_suite": r["aa_suite"], "aa_n": r["aa_n"], "cw20": r["cw20"], "pgd20": r["pgd20"],
             "train_seconds": r["train_seconds"], "standard_seconds": std.get(r["seed"]), "verdict": r["verdict"],
             "val": {k: v for k, v in (r.get("curve") or [{}])[-1].items() if k in val_keys},
             "gpu": results["meta"]["device"], "commit": results["meta"]["commit"]} for r in rows]


def write_report(out: Path, results: dict[str, Any]) -> list[str]:
    """REPORT.md, report.html and eae_research.json; returns those kept because someone
    changed them since eae wrote them (see :func:`eae.outputs.write_documents`)."""
    meta = results["meta"]
    header, cells = table_rows(results)
    plots = _plots(results)
    info = [f"- suite: **{meta['suite']}**: {meta['description']}",
            f"- device: {meta['device']}; torch {meta['torch']}; eae {meta['eae']} (commit {meta['commit']}); "
            f"{meta['date']}",
            f"- command (the last call; a suite spread over calls with --only or --resume has had others): `{meta['command']}`",
            f"- seeds: {meta['seeds']}" + (f"; budget: {meta['budget_k']} x 15 standard epochs"
                                           if meta.get("budget_k") else "")]
    info += [f"- {s}" for s in _scope(results)]
    md = [f"# Benchmark: {meta['suite']}", "", *info, "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c) + " |" for c in cells]
    masked = [r for r in results["rows"] if r["verdict"] != "ok"]
    if masked:
        md += ["", "Gradient-masking alarms (see each run's bench_eval.json for the evidence):"]
        md += [f"- {r['entry']} seed {r['seed']}: **{r['verdict']}**: {r['evidence'][0]}" for r in masked]
    if plots:
        md += [""] + [f"![{name.removesuffix('.png')}]({name})" for name in plots]
    else:
        md += ["", "(plots need matplotlib: pip install matplotlib)"]
    documents = {"REPORT.md": "\n".join(md) + "\n"}
    if results["rows"]:
        documents["eae_research.json"] = json.dumps(research_rows(results), indent=2) + "\n"

    imgs = "".join(f'<p><img alt="{name.removesuffix(".png")}" src="data:image/png;base64,'
                   f'{base64.b64encode(png).decode()}"></p>' for name, png in plots.items())
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    items = "".join(f"<li>{html.escape(i[2:])}</li>" for i in info)
    alarms = "".join(f"<li>{html.escape(r['entry'])} seed {r['seed']}: <b>{r['verdict']}</b>: "
                     f"{html.escape(r['evidence'][0])}</li>" for r in masked)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>eae bench {html.escape(meta['suite'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
img{{max-width:100%}}</style></head>
<body><h1>Benchmark: {html.escape(meta['suite'])}</h1><ul>{items}</ul>
<table><tr>{th}</tr>{trs}</table>{f"<h3>Gradient-masking alarms</h3><ul>{alarms}</ul>" if alarms else ""}
{imgs}</body></html>
"""
    documents["report.html"] = page
    return write_documents(out, {**documents, **plots})
