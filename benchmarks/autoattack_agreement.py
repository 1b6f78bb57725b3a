"""Agreement with the official AutoAttack: the same model, the same first N test images,
the same ε and seed, run by the reference code (the ``pyautoattack`` package, which
repackages fra31/auto-attack) and by ``eae.evaluate``, one after the other in one process.

For each model and each pair of suites it reports the robust accuracy of both and their
difference, the points robust for one and not the other, the robust count after each stage
of the cascade, and the wall time of both. Pairs:

- ``aa``: AutoAttack ``version='standard'`` (APGD-CE, APGD-T, FAB-T, Square) vs ``--suite aa``;
- ``aa-fast``: AutoAttack ``version='custom'``, ``attacks=['apgd-ce', 'apgd-t']``, with the
  standard version's settings (one APGD-CE run: the custom version's constructor default is
  5 restarts) vs ``--suite aa-fast``.

    pip install --no-deps pyautoattack==0.2.0
    EAE_DATA_DIR=/path/to/cifar10 PYTHONPATH=src python benchmarks/autoattack_agreement.py \\
        runs/standard runs/fgsm_rs runs/eae_paper --n 1000 --threads 1 --out benchmarks/results/cpu-2core/equivalence

``--norm l2`` compares the L2 versions (AutoAttack ``norm='L2'``, eps 0.5 unless ``--eps``).

Writes OUT/agreement.json and OUT/agreement.md after every model and pair, so a long run can
be stopped and continued (``--resume`` skips what is already in agreement.json: each side of a
pair, the official AutoAttack's evaluation and ours, is saved as soon as it ends). Models or
sides run in parallel processes (``--out`` of their own each, ``--sides reference`` or
``--sides eae``) are joined by ``--join DIR DIR ... --out OUT``, which runs nothing.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import eae  # noqa: E402
from eae.evaluation import fmt_eps, predict  # noqa: E402
from eae.utils import git_commit  # noqa: E402

PAIRS = {"aa": ("standard", None), "aa-fast": ("custom", ["apgd-ce", "apgd-t"])}
REF_NORM = {"linf": "Linf", "l2": "L2"}
STAGE = re.compile(r"robust accuracy after ([A-Z-]+): ([\d.]+)%")


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def run_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pair: str, eps: float, seed: int,
                  batch_size: int, device: torch.device, norm: str = "linf") -> dict:
    """The official AutoAttack on (x, y): per-example robustness, robust count after each
    stage (from its log, exact to 0.01%), its warnings, and its wall time."""
    from pyautoattack import AutoAttack

    version, attacks = PAIRS[pair]
    log = logging.getLogger("auto-attack")
    lines = _Lines()
    log.addHandler(lines)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        model.eval()
        aa = AutoAttack(model, attacks=attacks, device=device, eps=eps, norm=REF_NORM[norm], seed=seed,
                        version=version)
        if version == "custom":
            aa.apgd.n_restarts = 1  # the standard version's setting
        start, cpu = time.perf_counter(), time.process_time()
        _, y_adv = aa.run_standard_evaluation(x.to(device), y.to(device), batch_size=batch_size)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        log.removeHandler(lines)
    n = len(y)
    stages = {m[1].lower(): round(float(m[2]) * n / 100) for m in map(STAGE.search, lines.lines) if m}
    robust = (y_adv.cpu() == y.cpu())
    return {"robust": robust, "stages": stages, "seconds": seconds, "cpu_seconds": cpu,
            "warnings": [ln for ln in lines.lines if "seems" in ln or "Square Attack has" in ln or "zero gradient" in ln]}


def run_ours(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pair: str, eps: float, seed: int, batch_size: int,
             device: torch.device, norm: str = "linf") -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    report = eae.evaluate(model, x, y, suite=pair, eps=eps, norm=norm, seed=seed, batch_size=batch_size,
                          device=device, diagnostics="cheap")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    n = len(y)
    stages = {k: round(v["accuracy"] * n) for k, v in report.per_attack.items()}
    return {"robust": report.correct["worst_case"].cpu(), "stages": stages, "seconds": seconds, "cpu_seconds": cpu,
            "attack_seconds": report.seconds, "verdict": report.verdict,
            "flags": [e for e in report.evidence if not e.startswith("[ok]")]}


SIDES = {"reference": run_reference, "eae": run_ours}


def run_side(side: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, pair: str, *, eps: float, seed: int,
             batch_size: int, device: torch.device, norm: str) -> dict:
    """One side's evaluation as JSON: the robust points as indices, so that a side can be
    saved as soon as it ends and the other run later, or in another process."""
    r = SIDES[side](model, x.float(), y.long(), pair, eps, seed, batch_size, device, norm)
    clean = int((predict(model, x.float().to(device)).cpu() == y.cpu()).sum())
    return {**r, "robust": r["robust"].nonzero().squeeze(1).tolist(), "n": len(y), "clean": clean,
            "threads": torch.get_num_threads()}


def _secs(r: dict, side: str) -> str:
    cpu = r.get("cpu_seconds", {}).get(side)
    return "-" if cpu is None else f"{cpu:.0f}"


def combine(ref: dict, ours: dict, pair: str) -> dict:
    """The comparison of two sides run on the same images."""
    n, clean = ref["n"], ref["clean"]
    a, b = set(ref["robust"]), set(ours["robust"])
    return {
        "pair": pair, "n": n, "clean": clean,
        "robust": {"reference": len(a), "eae": len(b)},
        "robust_accuracy": {"reference": len(a) / n, "eae": len(b) / n},
        "difference_points": (len(b) - len(a)) / n * 100,
        "robust_only_for_reference": sorted(a - b), "robust_only_for_eae": sorted(b - a),
        "stages": {"reference": ref["stages"], "eae": ours["stages"]},
        "seconds": {"reference": round(ref["seconds"], 1), "eae": round(ours["seconds"], 1),
                    "eae_attacks_only": round(ours["attack_seconds"], 1),
                    "ratio_eae_to_reference": round(ours["seconds"] / max(ref["seconds"], 1e-9), 3)},
        # CPU time of the process (one torch thread): the work done, little changed by other jobs
        # on the machine, unlike the wall time; absent for sides saved before it was recorded
        "cpu_seconds": {side: round(r["cpu_seconds"], 1) if "cpu_seconds" in r else None
                        for side, r in (("reference", ref), ("eae", ours))},
        "reference_warnings": ref["warnings"], "eae_verdict": ours["verdict"], "eae_flags": ours["flags"],
    }


def compare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pair: str, *, eps: float = 8 / 255, seed: int = 0,
            batch_size: int = 500, device: torch.device | str = "cpu", norm: str = "linf") -> dict:
    """Both evaluations of one model on (x in [0, 1], y), one after the other, and how they differ."""
    kw = dict(eps=eps, seed=seed, batch_size=batch_size, device=torch.device(device), norm=norm)
    ref, ours = (run_side(side, model, x, y, pair, **kw) for side in SIDES)
    return combine(ref, ours, pair)


# ----------------------------------------------------------------------------- the report
def versions() -> dict:
    from importlib.metadata import version

    return {"eae": eae.__version__, "pyautoattack": version("pyautoattack"), "torch": torch.__version__,
            "python": platform.python_version()}


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), "
            f"{platform.platform()}")


def to_markdown(doc: dict) -> str:
    h = doc["header"]
    lines = ["# Agreement with the official AutoAttack", "",
             f"- command: `{h['command']}`",
             f"- commit {h['commit']}; {', '.join(f'{k} {v}' for k, v in h['versions'].items())}",
             f"- machine: {h['machine']}",
             f"- first {h['n']:,} CIFAR-10 test images, eps {h['eps_text']} ({h.get('norm', 'linf')}), seed {h['seed']}, "
             f"batch {h['batch_size']}", "",
             "Robust accuracy (%), the difference (eae minus reference, points), the points robust for one only, "
             "and the wall time and process CPU time of each (eae: `evaluate` with the cheap diagnostics; "
             "reference: `run_standard_evaluation` with its checks).", "",
             "| model | pair | clean | reference | eae | diff | robust only for ref / eae | ref s | eae s | eae / ref "
             "| ref CPU s | eae CPU s |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for name, pairs in doc["models"].items():
        for pair, r in pairs.items():
            ra, s = r["robust_accuracy"], r["seconds"]
            lines.append(f"| {name} | {pair} | {100 * r['clean'] / r['n']:.1f} | {100 * ra['reference']:.1f} | "
                         f"{100 * ra['eae']:.1f} | {r['difference_points']:+.1f} | "
                         f"{len(r['robust_only_for_reference'])} / {len(r['robust_only_for_eae'])} | "
                         f"{s['reference']:.0f} | {s['eae']:.0f} | {s['ratio_eae_to_reference']:.2f} | "
                         f"{_secs(r, 'reference')} | {_secs(r, 'eae')} |")
    lines += ["", "Robust count after each stage of the cascade (reference / eae):", "",
              "| model | pair | " + " | ".join(("clean", "apgd-ce", "apgd-t", "fab-t", "square")) + " |",
              "|---|---|" + "---:|" * 5]
    for name, pairs in doc["models"].items():
        for pair, r in pairs.items():
            st = r["stages"]
            cells = [f"{r['clean']} / {r['clean']}"]
            for k in ("apgd-ce", "apgd-t", "fab-t", "square"):
                a, b = st["reference"].get(k), st["eae"].get(k)
                cells.append("" if a is None and b is None else f"{a} / {b}")
            lines.append(f"| {name} | {pair} | " + " | ".join(cells) + " |")
    lines += ["", "Points robust for one only (test-set indices), the reference's warnings and our verdict:", ""]
    for name, pairs in doc["models"].items():
        for pair, r in pairs.items():
            lines.append(f"- {name}, {pair}: reference only {r['robust_only_for_reference']}, eae only "
                         f"{r['robust_only_for_eae']}; reference warnings: {r['reference_warnings'] or 'none'}; "
                         f"eae verdict {r['eae_verdict']}{': ' + '; '.join(r['eae_flags']) if r['eae_flags'] else ''}; "
                         f"commit {r.get('commit', h['commit'])}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders of `eae train` (with --join: output folders to join)")
    ap.add_argument("--join", action="store_true", help="join the agreement.json of the folders given; run nothing")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=1000, help="first N test images (default: 1000)")
    ap.add_argument("--pairs", default="aa,aa-fast", help="comma-separated: aa, aa-fast (default: both)")
    ap.add_argument("--norm", choices=("linf", "l2"), default="linf")
    ap.add_argument("--eps", type=float, default=None, help="default: 8/255 under linf, 0.5 under l2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--sides", default="reference,eae",
                    help="which evaluations to run now: reference, eae or both (default); each is saved when it "
                         "ends, and a pair is compared once both are in OUT")
    ap.add_argument("--resume", action="store_true", help="skip the sides already in OUT")
    args = ap.parse_args()
    if args.eps is None:
        args.eps = 8 / 255 if args.norm == "linf" else 0.5
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "agreement.json"
    if args.join:
        _save(join([json.loads((Path(d) / "agreement.json").read_text()) for d in args.runs]), out)
        return
    doc = json.loads(path.read_text()) if args.resume and path.exists() else {"models": {}}
    doc["header"] = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "commit": git_commit(),
                     "versions": versions(), "machine": machine(device), "n": args.n, "eps": args.eps,
                     "norm": args.norm, "eps_text": fmt_eps(args.eps, args.norm), "seed": args.seed, "batch_size": args.batch_size}
    from eae.checkpoint import read_config
    from eae.data import load_test_set

    for run in args.runs:
        name = Path(run).name
        model = eae.load(run, device=device)
        x, y = load_test_set(read_config(run), args.n)
        x = x.float() / 255
        for pair in args.pairs.split(","):
            record = doc["models"].setdefault(name, {}).setdefault(pair, {})
            if "robust" in record:  # both sides done
                continue
            sides = record.setdefault("sides", {})
            for side in args.sides.split(","):
                if side in sides:
                    continue
                print(f"{name} {pair} {side}: {args.n} images", file=sys.stderr, flush=True)
                sides[side] = run_side(side, model, x, y, pair, eps=args.eps, seed=args.seed,
                                       batch_size=args.batch_size, device=device, norm=args.norm)
                sides[side]["commit"] = doc["header"]["commit"]
                print(f"  {100 * len(sides[side]['robust']) / args.n:.1f}% robust ({sides[side]['seconds']:.0f} s)",
                      file=sys.stderr, flush=True)
                _save(doc, out)
            _complete(doc["models"][name], pair)
            _save(doc, out)


def _complete(pairs: dict, pair: str) -> None:
    """Replace a record holding both sides by their comparison."""
    sides = pairs[pair].get("sides", {})
    if set(SIDES) <= set(sides):
        r = combine(sides["reference"], sides["eae"], pair)
        r["commit"] = {k: sides[k]["commit"] for k in SIDES}
        r["threads"] = {k: sides[k]["threads"] for k in SIDES}
        pairs[pair] = r


def join(parts: list[dict]) -> dict:
    """One document from several runs of the script: finished pairs as they are, sides of
    the same pair run in different processes put together and compared."""
    doc = {"header": {**parts[0]["header"], "command": "; ".join(p["header"]["command"] for p in parts)},
           "models": {}}
    for part in parts:
        for name, pairs in part["models"].items():
            for pair, record in pairs.items():
                into = doc["models"].setdefault(name, {})
                if "robust" in record or pair not in into:
                    into[pair] = json.loads(json.dumps(record))
                elif "sides" in into[pair]:
                    into[pair]["sides"].update(record.get("sides", {}))
                _complete(into, pair)
    return doc


def _save(doc: dict, out: Path) -> None:
    """agreement.json with every side finished so far; agreement.md with the finished pairs."""
    (out / "agreement.json").write_text(json.dumps(doc, indent=1))
    done = {name: {p: r for p, r in pairs.items() if "robust" in r} for name, pairs in doc["models"].items()}
    (out / "agreement.md").write_text(to_markdown({**doc, "models": {k: v for k, v in done.items() if v}}))

if __name__ == "__main__":
    main()
