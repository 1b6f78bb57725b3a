"""``eae bench``: train and evaluate every entry of a suite, resumably, then report.

Layout of the output folder::

    DIR/bench.json              what was asked (suite, seeds, settings): a re-run must match it
    DIR/runs/NAME-sSEED/        one run directory per entry and seed (train + bench_eval.json)
    DIR/speed/NAME/             speed measurements (speed and budget suites)
    DIR/results.json            every row, with the device, versions, commit and command
    DIR/REPORT.md, report.html  the table and the plots

A run whose ``bench_eval.json`` exists is skipped; a run killed mid-training resumes
from its checkpoint; so a killed suite resumes where it stopped.
"""
from __future__ import annotations

import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..checkpoint import WEIGHTS, CheckpointError, load, read_config, weights_metadata
from ..config import TrainConfig, type_fix
from ..data import load_test_set
from ..evaluation import evaluate
from ..errors import ConfigError, OutputRefused
from ..evaluation.diagnostics import LEVELS
from ..outputs import OutputFolder, check_folder, documents_refused, sealed
from ..system import training_precision
from ..trainer import train
from ..utils import atomic_write_json, device_name, git_commit, loads_json, resolve_device
from .report import REPORTS, write_report
from .suites import BENCH_SUITES, BenchSuite, Entry, get_bench_suite


# per-epoch quantities kept for the plots (the masking diagnosis needs the EAE statistics)
CURVE_KEYS = ("epoch", "val_clean", "val_pgd", "val_cw", "val_robust", "val_aa_fast", "seconds", "cpu_seconds",
              "threads", "load", "logit_norm", "feature_norm", "seed_frac")


def _config(suite: BenchSuite, entry: Entry, seed: int, out: Path, device: str, data_dir: str | None,
            **extra: Any) -> TrainConfig:
    fields = {**suite.base, **entry.overrides, "seed": seed, "out": str(out), "device": device, **extra}
    if fields.get("dataset") != "synthetic":  # (synthetic data is generated: a folder for it is refused)
        fields["data_dir"] = data_dir
    return TrainConfig.from_dict(fields)


def _replays(cfg: TrainConfig) -> int:
    from ..methods import create_method

    return create_method(cfg).replays  # Free-AT and EAE on Free's perturbation replay each minibatch


def _accuracy_run(suite: BenchSuite, entry: Entry, seed: int, out: Path, device: str, data_dir: str | None,
                  quiet: bool, log, train_only: bool = False, **extra: Any) -> dict[str, Any] | None:
    run_dir = out / "runs" / f"{entry.name}-s{seed}"
    done = run_dir / "bench_eval.json"
    cfg = _config(suite, entry, seed, run_dir, device, data_dir, **extra)
    if done.is_file():
        _check_finished(run_dir, cfg)
        log(f"[{entry.name} seed {seed}] done, skipped")
        return _read_row(done, entry=entry.name, seed=seed, **_weights_of(run_dir))
    log(f"[{entry.name} seed {seed}] {'resuming' if (run_dir / 'checkpoint.pt').exists() else 'training'}")
    result = train(cfg, resume=True, quiet=quiet)
    if train_only:
        return None
    dev = resolve_device(device)
    parts = _evaluate_run(suite, cfg, seed, run_dir, dev, quiet, log)
    q, a, full = parts["quick"], parts["aa"], parts.get("aa_full")
    n_aa, n_full = a["n"], full["n"] if full else 0
    worst = [qc and ac for qc, ac in zip(q["correct"][:n_aa], a["correct"])]
    secs = [m["seconds"] for m in result.metrics]
    reports = [q, a] + ([full] if full else [])
    row = {
        "entry": entry.name, "method": cfg.method, "seed": seed, "epochs": cfg.epochs, "passes": len(secs),
        "clean": q["clean_accuracy"], "fgsm": q["accuracy"].get("fgsm"), "pgd20": q["accuracy"].get("pgd20"),
        "cw20": q["accuracy"]["cw20"], "aa": a["robust_accuracy"], "aa_suite": a["suite"], "aa_label": a["label"],
        "worst_case": _mean(worst), "n": q["n"], "aa_n": n_aa, "test_size": q["test_size"],
        "train_seconds": sum(secs), "seconds_per_pass": statistics.median(secs[1:] or secs),
        "timing": timing_of(result.metrics, dev),
        "verdict": max((r["verdict"] for r in reports), key=LEVELS.index),
        "evidence": q["evidence"] + a["evidence"][:1], "eval_seconds": sum(r["seconds"] for r in reports),
        "run_dir": str(run_dir), "precision": training_precision(cfg.precision, dev),
        "curve": [{k: m[k] for k in CURVE_KEYS if k in m} for m in result.metrics],
        "config": entry.overrides, **_weights_of(run_dir),
    }
    if full:
        row.update(aa_full=full["robust_accuracy"], aa_full_n=n_full, aa_full_label=full["label"],
                   aa_full_stages=_stages(full), aa_fast_on_full_n=_mean(a["correct"][:n_full]))
    atomic_write_json(done, sealed(row))
    return row


def _weights_of(run_dir: Path) -> dict[str, str]:
    """{"weights_sha256": the digest of the run's final tensors} ({} without one): what a
    result row and its evaluation parts record of the network they scored."""
    if not (run_dir / WEIGHTS).is_file():
        return {}
    digest = weights_metadata(run_dir / WEIGHTS).get("sha256")
    if not digest:  # every version of eae records it: a file without it was re-saved elsewhere, and could be any
        raise CheckpointError(f"{run_dir / WEIGHTS} carries no SHA-256 of its tensors, as eae train records it: "
                              "re-saved by another program, its numbers could be another network's; restore the "
                              "run's own file, or delete the run's folder to train it again")
    return {"weights_sha256": digest}


def _read_row(path: Path, **expect: Any) -> dict[str, Any]:
    """A result row written earlier; one changed since (its seal no longer matches) is refused:
    the report would print the edited numbers as measured. So is one without a seal: an earlier
    version's row cannot be told from one whose seal was removed by hand (delete it to measure again).
    ``expect``: what the row must say of itself (its entry, its seed): a row copied from another
    entry's folder would put that entry's numbers under this one's name."""
    d = loads_json(path.read_text(encoding="utf-8-sig"))
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: not a result row (a JSON object); delete it to measure that run again",
                          field="out")
    recorded = d.pop("report_sha256", None)
    if recorded is None:
        raise ConfigError(f"{path} carries no seal (removed by hand, or written by an earlier version of eae), so its "
                          "numbers cannot be told from edited ones and are not reported: delete it to evaluate that "
                          "run again (the trained run is kept)", field="out")
    if recorded != sealed(d)["report_sha256"]:
        raise ConfigError(f"{path} was changed since the benchmark wrote it; its numbers are not reported: delete "
                          "it to evaluate that run again (the trained run is kept)", field="out")
    other = {k: d[k] for k, v in expect.items() if k in d and d[k] != v}  # (older rows lack some: not compared)
    if other:
        said = ", ".join(f"{k} {v!r}" for k, v in other.items())
        here = ", ".join(f"{k} {expect[k]!r}" for k in other)
        raise ConfigError(f"{path} holds the result of another run ({said}; this folder is {here}), copied there; its "
                          "numbers are not reported: delete it to evaluate this run again", field="out")
    return d


def _check_finished(run_dir: Path, cfg: TrainConfig) -> None:
    """A finished run is reused only if it is the one this entry trains: a folder whose
    config.json says otherwise (edited, or left by another suite) would put its numbers
    under this suite's name."""
    try:
        trained = read_config(run_dir)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{run_dir} holds a result (bench_eval.json) but its config.json cannot be read ({e}); "
                          "remove that run folder to train it again, or choose another --out", field="out") from None
    diff = trained.differences(cfg)
    if diff:
        said = ", ".join(f"{k} {a!r} (the suite: {b!r})" for k, (a, b) in sorted(diff.items()))
        raise ConfigError(f"{run_dir} holds a result trained with other settings than this entry's ({said}); it is not "
                          "reused: remove that run folder to train it again, or choose another --out", field="out")


def _evaluate_run(suite: BenchSuite, cfg: TrainConfig, seed: int, run_dir: Path, dev, quiet: bool, log
                  ) -> dict[str, dict[str, Any]]:
    """The suite's evaluations of a trained run, each saved in the run folder as it ends
    (``bench_eval_PART.json``), so that a killed evaluation resumes after the parts done."""
    model = load(run_dir, device=dev)
    x, y = load_test_set(cfg)
    test_size = len(y)
    n_quick = min(suite.eval_n or test_size, test_size)
    n_aa = min(suite.aa_n or n_quick, n_quick) if seed == 0 else min(suite.aa_n_other_seeds or n_quick, n_quick)
    n_full = min(suite.aa_full_n, n_aa) if seed == 0 else 0
    quick = {"attacks": list(suite.quick_attacks)} if suite.quick_attacks else {"suite": "quick"}
    plan = [("quick", n_quick, dict(quick, diagnostics=suite.diagnostics)),
            ("aa", n_aa, dict(suite=suite.aa_suite, diagnostics="cheap"))]
    if n_full:
        plan.append(("aa_full", n_full, dict(suite="aa", diagnostics="cheap")))
    parts = {}
    for part, n, how in plan:
        path = run_dir / f"bench_eval_{part}.json"
        if path.is_file():
            parts[part] = _read_row(path, **_weights_of(run_dir))
            continue
        log(f"[{run_dir.name}] evaluating {part}: {how.get('suite') or ','.join(how['attacks'])} on {n:,} "
            "test images")
        rep = evaluate(model, x[:n], y[:n], eps=cfg.eps, device=dev, seed=seed, diag_n=suite.diag_n,
                       test_size=test_size, progress=not quiet, **how)
        parts[part] = {**rep.to_dict(), "correct": rep.correct["worst_case"].tolist(), **_weights_of(run_dir)}
        atomic_write_json(path, sealed(parts[part]))
    return parts


def _mean(flags: list[bool]) -> float:
    """The fraction of True, computed as every accuracy of a report is (a float32 mean), so
    that a worst case compares exactly with the accuracies it is the minimum of."""
    return torch.tensor(flags, dtype=torch.float32).mean().item() if flags else float("nan")


def _stages(report: dict[str, Any]) -> dict[str, float]:
    """Robust accuracy after each attack of a cascade (what each adds)."""
    return {spec: r["accuracy"] for spec, r in report["per_attack"].items()}


# A timing is trusted when the process got the cores it asked for: CPU seconds (all threads)
# at least this share of wall seconds x threads. On a GPU the host thread mostly waits, so
# only CPU runs are judged.
RELIABLE_SHARE = 0.8


def timing_of(metrics: list[dict[str, Any]], device) -> dict[str, Any]:
    """Whether a run's training time can be compared: the share of its cores it got."""
    rows = [m for m in metrics if "cpu_seconds" in m and m.get("threads")]
    if device.type != "cpu" or not rows:
        return {"reliable": True if device.type != "cpu" else None, "cpu_share": None}
    share = sum(m["cpu_seconds"] for m in rows) / sum(m["seconds"] * m["threads"] for m in rows)
    loads = [m["load"] for m in rows if m.get("load") is not None]
    return {"reliable": share >= RELIABLE_SHARE, "cpu_share": round(share, 3),
            "max_load": max(loads) if loads else None, "threads": rows[-1]["threads"]}


def _speed_rows(suite: BenchSuite, entries, out: Path, device: str, data_dir: str | None, quiet: bool, log,
                compile: bool = False) -> list[dict[str, Any]]:
    rows = []
    for entry in suite.entries:
        done = out / "speed" / entry.name / "speed.json"
        if done.is_file():
            rows.append(_read_row(done, entry=entry.name))
            continue
        if entry not in entries:
            continue
        probe = _config(suite, entry, 0, out / "speed" / entry.name, device, data_dir)
        m = _replays(probe)
        passes = suite.speed_epochs
        cfg = probe.replace(epochs=passes * m, val_every=passes, val_attack_steps=0, compile=compile)
        log(f"[speed] {entry.name}: {passes} passes")
        res = train(cfg, resume=True, quiet=quiet)  # starts afresh when there is nothing to resume
        secs = [r["seconds"] for r in res.metrics]
        per_pass = statistics.median(secs[1:] or secs)  # the first pass carries the warm-up
        row = {"entry": entry.name, "method": cfg.method, "replays": m, "seconds_per_pass": per_pass,
               "seconds_per_epoch": per_pass / m, "passes_timed": len(secs[1:] or secs), "all_pass_seconds": secs,
               "compile": cfg.compile}
        atomic_write_json(done, sealed(row))
        rows.append(row)
    base = next((r["seconds_per_epoch"] for r in rows if r["entry"] == "standard"), None)
    for r in rows:
        r["x_standard"] = r["seconds_per_epoch"] / base if base else None
    return rows


def budget_epochs(speed: list[dict[str, Any]], k: float, standard_epochs: int) -> dict[str, int]:
    """Epochs each method gets for a budget of k x the time of ``standard_epochs``
    standard epochs: whole passes over the data that fit (at least one), times the
    replays (Free counts epochs in standard-equivalents)."""
    std = next(r for r in speed if r["entry"] == "standard")
    budget = k * standard_epochs * std["seconds_per_epoch"]
    return {r["entry"]: max(1, math.floor(budget / r["seconds_per_pass"] + 1e-9)) * r["replays"] for r in speed}


def run_bench(suite_name: str, out: str | Path, *, seeds: int = 1, resume: bool = False, device: str = "auto",
              data_dir: str | None = None, budget_k: float | None = None, quiet: bool = False,
              only: list[str] | None = None, compile: bool = False, train_only: bool = False,
              dataset: str | None = None, unverified_data: bool = False) -> dict[str, Any]:
    """Run (or continue) a suite and write its report. ``only``: run just these entries
    now; the report still shows every entry already finished in ``out``, so a suite can
    be spread over several calls (e.g. on a time-limited GPU). ``compile``: torch.compile
    every network for training (a placement choice: runs resume either way).
    ``train_only``: train the entries now, evaluate them in a later call (training and
    evaluation then run where and when each fits). ``dataset``: the suite's recipe on
    cifar100, svhn or tiny-imagenet instead of CIFAR-10 (``unverified_data``: on a copy that
    is not the published files)."""
    suite = on_dataset(get_bench_suite(suite_name), dataset, unverified_data)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 1000:
        raise ConfigError(f"seeds must be an integer in [1, 1000], got {seeds!r}{type_fix(seeds, int)}",
                          cli=f"--seeds must be in 1..1000, got {seeds!r}", field="seeds")
    if budget_k is not None and suite.kind != "budget":  # given at all, whatever its value
        raise ConfigError(f"budget_k applies to budget suites (cifar10-budget) only; {suite.name} has no budget",
                          cli=f"--budget-k applies to budget suites (cifar10-budget) only; {suite.name} has no budget",
                          field="budget_k")
    budget_k = 2.0 if budget_k is None else budget_k  # (recorded as such by every suite, as it always was)
    if isinstance(budget_k, bool) or not isinstance(budget_k, (int, float)) or not (math.isfinite(budget_k)
                                                                                    and 0 < budget_k <= 1000):
        raise ConfigError(f"budget_k must be a number in (0, 1000], got {budget_k!r}",
                          cli=f"--budget-k must be a number in (0, 1000], got {budget_k!r}", field="budget_k")
    if suite.kind == "speed" and (seeds != 1 or train_only):  # recorded, they would never act
        name, flag = ("seeds", f"--seeds {seeds}") if seeds != 1 else ("train_only", "--train-only")
        why = "times one run of each method (no seeds)" if seeds != 1 else "has nothing to evaluate after training"
        raise ConfigError(f"{name}: suite speed {why}; leave it out", cli=f"{flag}: suite speed {why}; leave it out",
                          field=name)
    selected = _selected_entries(suite, only)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    out = Path(out)
    if resume and not (out / "bench.json").exists():  # said: a typo in --out would otherwise start a new one quietly
        check_folder(out, "bench")  # (a run or another tool's folder: refused, not first announced as a start)
        print(f"note: {out} holds no benchmark yet: starting one (nothing to resume)", file=sys.stderr, flush=True)
    folder = _claim(out, {"suite": suite.name, "seeds": seeds, "base": suite.base, "budget_k": budget_k,
                          "entries": {e.name: e.overrides for e in suite.entries}}, resume)
    try:
        lock = _lock(out)
        try:
            return _run(suite, selected, out, seeds=seeds, device=device, data_dir=data_dir, budget_k=budget_k,
                        quiet=quiet, compile=compile, train_only=train_only, log=log)
        finally:
            lock.release()
    except BaseException:
        folder.abandon()  # removes the folder again if nothing but the claim was written
        raise


def _lock(out: Path):
    """One ``eae bench`` per folder at a time: two would train the same rows twice and each
    rewrite results.json without the other's rows."""
    from ..checkpoint import RunLock, RunLocked

    try:
        return RunLock(out).acquire()
    except RunLocked as e:
        holder = str(e).partition("(pid ")[2].partition(")")[0] or "?"
        raise RunLocked(f"{out} is being written by another eae bench (pid {holder}); wait for it to finish, or "
                        "choose another --out") from None


def on_dataset(suite, dataset: str | None, unverified_data: bool = False):
    """``suite`` with its CIFAR-10 recipe on another array dataset (recorded in bench.json
    through the base, so a resumed benchmark cannot mix datasets)."""
    if unverified_data and dataset not in ("cifar100", "svhn", "tiny-imagenet"):
        raise ConfigError("unverified_data applies to cifar100, svhn and tiny-imagenet (CIFAR-10 is verified to the "
                          "pixel)", cli="--unverified-data goes with --dataset cifar100, svhn or tiny-imagenet",
                          field="unverified_data")
    if dataset is None or dataset == suite.base.get("dataset"):
        return suite
    if suite.kind not in ("accuracy", "budget") or suite.base.get("dataset") != "cifar10":
        raise ConfigError(f"suite {suite.name} is not a CIFAR-10 training suite: it runs on its own data only",
                          cli=f"--dataset: suite {suite.name} is not a CIFAR-10 training suite", field="dataset")
    if dataset not in ("cifar100", "svhn", "tiny-imagenet"):
        raise ConfigError(f"dataset for a bench suite is cifar10, cifar100, svhn or tiny-imagenet, got {dataset!r}",
                          field="dataset")
    base = {**suite.base, "dataset": dataset, **({"unverified_data": True} if unverified_data else {})}
    copy = ", a copy that is not the published files (each run's dataset.json says what differs)" if unverified_data else ""
    return replace(suite, base=base, description=f"{suite.description} [here on {dataset} instead of CIFAR-10{copy}; "
                                                 "image counts are at most those named: a smaller copy has fewer]")


def _same_copy(suite, out: Path, device: str, data_dir: str | None) -> None:
    """One benchmark, one copy of its data: a resumed benchmark of an official dataset refuses
    a copy other than the one its runs so far were trained on (their dataset.json)."""
    from ..checkpoint import DATASET, check_dataset
    from ..data import OFFICIAL, DataSource, dataset_identity

    earlier = sorted((out / "runs").glob(f"*/{DATASET}")) if (out / "runs").is_dir() else []
    if not earlier or suite.base.get("dataset") not in OFFICIAL:
        return
    cfg = _config(suite, suite.entries[0], 0, out / "runs" / "_", device, data_dir)
    check_dataset(earlier[0].parent, dataset_identity(DataSource.of(cfg)), resume=True)


def _run(suite, selected, out: Path, *, seeds, device, data_dir, budget_k, quiet, compile, train_only, log
         ) -> dict[str, Any]:
    dev = resolve_device(device)
    t0 = time.perf_counter()
    speed = None
    rows: list[dict[str, Any]] = []
    if suite.kind == "speed":
        speed = _speed_rows(suite, selected, out, device, data_dir, quiet, log, compile)
    elif suite.kind == "budget":  # the budget needs every method's speed
        speed = _speed_rows(suite, suite.entries, out, device, data_dir, quiet, log, compile)
    epochs = budget_epochs(speed, budget_k, suite.base["epochs"]) if suite.kind == "budget" else {}
    if suite.kind in ("accuracy", "budget"):
        _same_copy(suite, out, device, data_dir)
        for seed in range(seeds):
            for entry in suite.entries:
                done = out / "runs" / f"{entry.name}-s{seed}" / "bench_eval.json"
                if entry in selected:
                    extra = {"epochs": epochs[entry.name]} if epochs else {}
                    row = _accuracy_run(suite, entry, seed, out, device, data_dir, quiet, log, train_only,
                                        compile=compile, **extra)
                    if row is not None:
                        rows.append(row)
                elif done.is_file():  # finished by an earlier call
                    rows.append(_read_row(done, entry=entry.name, seed=seed, **_weights_of(done.parent)))
    if train_only:
        log("trained; evaluate with the same command without --train-only (and with --resume)")
        return {"rows": rows, "speed": speed}
    _relative_to_standard(rows)
    meta = {"suite": suite.name, "description": suite.description, "kind": suite.kind, "seeds": seeds,
            "budget_k": budget_k if suite.kind == "budget" else None, "device": device_name(dev),
            **provenance(), "wall_seconds": time.perf_counter() - t0}
    results = {"meta": meta, "rows": rows, "speed": speed}
    kept = ["results.json"] if _results_edited(out) else []
    if not kept:
        atomic_write_json(out / "results.json", sealed(results))
    kept += write_report(out, results)
    for name in kept:  # changed while this call ran: said, not replaced
        print(f"note: {out / name} is not as eae bench wrote it (changed since?): kept as it is, not updated (results.json "
              f"holds every number; move it away and run the same command with --resume to write it again)",
              file=sys.stderr, flush=True)
    log(f"report: {out / 'REPORT.md'}, {out / 'report.html'}")
    return results


def _results_edited(out: Path) -> bool:
    """Whether ``out/results.json`` is there and not as eae bench wrote it: edited since (its seal
    no longer matches, or was removed), a link, or not a benchmark's results. One of an earlier
    version (no seal) cannot be told from an edited one: it is kept too (move it away to rewrite it)."""
    path = out / "results.json"
    if not os.path.lexists(path):
        return False
    if path.is_symlink() or not path.is_file():
        return True
    try:
        d = loads_json(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, UnicodeDecodeError):
        return True
    if not isinstance(d, dict) or not {"meta", "rows"} <= set(d):
        return True
    recorded = d.pop("report_sha256", None)
    return recorded != sealed(d)["report_sha256"]


def _selected_entries(suite, only: list[str] | None) -> list:
    names = [e.name for e in suite.entries]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"--only: unknown entries {', '.join(unknown)}; {suite.name} has {', '.join(names)}")
    return [e for e in suite.entries if not only or e.name in only]


def _claim(out: Path, ask: dict[str, Any], resume: bool) -> OutputFolder:
    """Make ``out`` this benchmark's folder (see :mod:`eae.outputs`): a new one, or (with
    ``resume``) one started with the very same settings; never another benchmark's, a
    run's or another tool's."""
    ask = json.loads(json.dumps(ask))  # as it reads back from JSON, to compare like with like
    check_folder(out, "bench")
    manifest = out / "bench.json"
    if manifest.is_file():
        if not resume:
            raise OutputRefused(f"{out} already holds a benchmark; pass resume=True to continue it or another out",
                                cli=f"{out} already holds a benchmark; pass --resume to continue it or choose "
                                    "another --out")
        try:
            before = loads_json(manifest.read_text())
        except ValueError as e:
            raise ValueError(f"{manifest}: not valid JSON ({e}); it is not a benchmark this version wrote: "
                             "choose another --out") from None
        if before != ask:
            changed = sorted(k for k in set(before) | set(ask) if before.get(k) != ask.get(k)) if isinstance(
                before, dict) else ["everything"]
            said = ", ".join(_changed_text(k, before.get(k), ask.get(k)) for k in changed)
            if isinstance(before, dict) and before.get("suite") != ask.get("suite") and isinstance(
                    before.get("suite"), str) and before.get("suite") in BENCH_SUITES:
                fix = f"resume it with `eae bench {before.get('suite')}`, or choose another --out for {ask.get('suite')}"
            else:
                fix = "give the same " + " and ".join(f"--{k.replace('_', '-')}" for k in ("seeds", "budget_k")
                                                      if k in changed) + " as the first call, or choose another --out"
                fix = fix if any(k in changed for k in ("seeds", "budget_k")) else "choose another --out"
            if changed == ["base"]:
                b, a = before.get("base"), ask.get("base")
                fields = {k for k in set(b) | set(a) if b.get(k) != a.get(k)} if isinstance(b, dict) and \
                    isinstance(a, dict) else {"base"}
                fix = ("give the same --dataset and --unverified-data as the first call, or choose another --out"
                       if fields <= {"dataset", "unverified_data"} else
                       "no flag of eae bench sets them: bench.json was edited, or written by another version of eae; "
                       "choose another --out (or put bench.json back as it was)")
            raise ValueError(f"cannot resume {out}: it was started with other settings ({said}; see {manifest}): {fix}")
    refused = documents_refused(out, REPORTS, "eae bench")
    if refused:  # before any work: the report written at the end would replace them
        raise OutputRefused(refused)
    if _results_edited(out):
        raise OutputRefused(f"{out / 'results.json'} is not as eae bench wrote it (changed since, a link, or another "
                            "program's), and rewritten when it ends: copy what you added elsewhere, move it away, then "
                            "run the same command again")
    folder = OutputFolder(out, "bench").claim()
    if not manifest.is_file():
        folder.written.append(manifest.name)
    atomic_write_json(manifest, ask)
    return folder


def _relative_to_standard(rows: list[dict[str, Any]]) -> None:
    """Each row's training time over standard training's, same seed (None without one, or
    when either timing is unreliable: a process that did not get its cores)."""
    for r in rows:
        std = next((s for s in rows if s["entry"] == "standard" and s["seed"] == r["seed"]), None)
        trusted = std is not None and all((x.get("timing") or {}).get("reliable") is not False for x in (r, std))
        r["x_standard"] = r["train_seconds"] / std["train_seconds"] if trusted else None


def provenance() -> dict[str, Any]:
    """What made a result: versions, commit, date and command line."""
    return {"torch": torch.__version__, "eae": __version__, "python": platform.python_version(),
            "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": _command_line()}


def _command_line() -> str:
    """The command as a user can paste it: `python -m eae` puts eae/__main__.py's path in argv[0]."""
    argv = list(sys.argv) or ["eae"]
    first = Path(argv[0])
    if first.name == "eae" or (first.name == "__main__.py" and first.parent.name == "eae"):
        argv[0] = "eae"
    return " ".join(shlex.quote(a) for a in argv)


def _changed_text(key: str, before: Any, now: Any) -> str:
    """A setting that differs from a benchmark's first call, as the resume refusal names it:
    the base configuration by its fields (dataset 'svhn' (now 'cifar100'))."""
    if key in ("seeds", "budget_k", "suite"):
        return f"{key} {before!r} (now {now!r})"
    if isinstance(before, dict) and isinstance(now, dict):
        fields = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        return ", ".join(f"{k} {_given(before, k)} (now {_given(now, k)})" for k in fields[:4]) + (
            ", ..." if len(fields) > 4 else "")
    return key


def _given(settings: dict[str, Any], key: str) -> str:
    return repr(settings[key]) if key in settings else "not given"
