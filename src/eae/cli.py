"""The ``eae`` command line: train, eval, data, list, demo.

``eae train`` has one flag per field of :class:`~eae.config.TrainConfig`
(``eae_eta`` -> ``--eae-eta``), generated from the dataclass so the two never
drift apart. Precedence: defaults < ``--config FILE.toml`` < flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import sys
import time
import typing
from pathlib import Path
from typing import Any, Sequence

from .config import (MAX_INT, MAX_SEED, METHOD_DEFAULTS, TrainConfig, coerce, home_path, load_toml,
                     name_preset_fields, parse_float)
from .errors import ConfigError
from .evaluation.report import fmt_eps
from .evaluation.suites import SUITES as _SUITES

SUITE_NAMES = tuple(_SUITES)


# --------------------------------------------------------------------------- train
def add_config_flags(parser: argparse.ArgumentParser) -> None:
    from .methods import list_methods

    hints = typing.get_type_hints(TrainConfig)
    dynamic_choices = {"method": list_methods()}  # arch: also timm:NAME / torchvision:NAME, checked by the config
    group = parser.add_argument_group("config fields (override --config)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        tp = hints[f.name]
        default = f.default
        help_ = f.metadata.get("help", "")
        show = default if not isinstance(default, float) else fmt_eps(default) if f.name == "eps" else default
        if f.metadata.get("by_method"):
            show = "; ".join(f"{m}: {v[f.name]}" for m, v in METHOD_DEFAULTS.items())
        help_ = f"{help_} (default: {show})"
        choices = f.metadata.get("choices") or dynamic_choices.get(f.name)
        if tp is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_)
        else:
            group.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, choices=choices, help=help_,
                               type=(lambda text, tp=tp, name=f.name: _parse(tp, text, name)),
                               metavar=f.name.upper() if not choices else None)


def _parse(tp: Any, text: str, name: str) -> Any:
    try:
        return coerce(tp, text, name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = {}
    if args.config is not None:  # an empty --config (an unset variable) is an error, not "no preset"
        values.update(load_toml(args.config))
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    if "out" in values and "out" not in vars(args) and ".." in Path(str(values["out"])).parts:
        raise UsageError(f"out = {values['out']!r} in {args.config} goes up with '..': give the path itself")
    preset = set(values)
    values.update({k: v for k, v in vars(args).items() if k in names})
    try:
        cfg = resume_config(values) if getattr(args, "resume", False) else TrainConfig.from_dict(values)
    except ConfigError as e:  # a field the preset set, not a flag: the user must know where to look
        name_preset_fields(e, preset - set(vars(args)), args.config)
        raise
    args.resolved_out = cfg.out  # what a resume hint must name (a preset may set it)
    return cfg


def resume_config(given: dict[str, Any]) -> TrainConfig:
    """``--resume``: the run's own config.json, with the given values that may change on a
    resume (where and how it runs: PLACEMENT_FIELDS); any other change is refused. With no
    checkpoint: a folder without a run starts one (and says so); a run killed before its
    first checkpoint restarts as configured; finished results without a checkpoint are
    never replaced."""
    from .checkpoint import CHECKPOINT, CONFIG, WEIGHTS, read_config
    from .config import PLACEMENT_FIELDS
    from .training.folder import check_run_folder

    out = Path(home_path(str(given.get("out", TrainConfig.out))))  # as TrainConfig reads it
    check_run_folder(out)  # a folder that is not a run is refused before its config.json is read
    if not (out / CONFIG).is_file():
        held = [n for n in (CHECKPOINT, WEIGHTS, "metrics.jsonl") if (out / n).exists()]
        if held:  # run files without the config that says what they are: nothing is replaced
            raise ValueError(f"cannot resume {out}: its {CONFIG} is missing (it holds {', '.join(held)}): restore "
                             f"{CONFIG}, or choose another --out for a new run")
        print(f"note: nothing to resume in {out}: starting a new run there", file=sys.stderr)
        return TrainConfig.from_dict(given)
    if not (out / CHECKPOINT).is_file() and ((out / WEIGHTS).exists() or any(out.glob("eval*.json"))):
        raise ValueError(f"cannot resume {out}: it holds results ({WEIGHTS} or an eval report) but no {CHECKPOINT} to "
                         "continue from; choose another --out for a new run")
    saved = read_config(out)
    if "device" not in given:  # the run's own device: one edited into config.json is named there
        from .errors import EaeError
        from .utils import parse_device

        try:
            parse_device(saved.device)
        except EaeError as e:
            raise ValueError(f"{out / CONFIG}: {e}: give --device, or restore its device") from None
    # strict=False: what the run recorded stays loadable (a change is refused below)
    cfg = TrainConfig.from_dict({**saved.to_dict(), **given}, strict=False)
    diff = saved.differences(cfg)
    if diff:
        raise ConfigError(f"--resume continues {out} as it was configured; these would change it: "
                          + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())
                          + f". Only {', '.join(PLACEMENT_FIELDS)} may differ; start a new run (another --out) "
                            "for other settings", field=next(iter(diff)))
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed as dist
    from .trainer import train
    from .utils import plural

    cfg = config_from_args(args)
    try:
        result = train(cfg, resume=args.resume, quiet=args.quiet, stop_after=args.stop_after)
    except BaseException:
        dist.shutdown(sync=False)
        raise
    _work_saved()  # the run's files are complete (or checkpointed, with --stop-after)
    dist.shutdown()
    if not _rank0():  # (the group is gone: torchrun's variable says which process this was)
        return 0
    if not result.finished:
        from .utils import shell_quote as quote

        done = len(result.metrics)
        print(f"stopped after {args.stop_after} {plural(args.stop_after, 'epoch')} of this call as asked "
              f"(--stop-after; {done} {plural(done, 'epoch')} done in all); the run is unfinished: continue it "
              f"with `eae train --out={quote(cfg.out)} --resume`")
    elif not args.quiet:
        last = result.final
        print(json.dumps({"run_dir": str(result.run_dir), "train_seconds": round(result.train_seconds, 2),
                          **{k: last[k] for k in ("val_clean", "val_pgd", "val_cw", "val_robust") if k in last}}))
    return 0


# --------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from . import distributed as dist

    try:
        code = _eval(args, dist.init(args.device))
    except BaseException:
        dist.shutdown(sync=False)
        raise
    _work_saved()  # the report is written
    dist.shutdown()
    return code


def _eval(args: argparse.Namespace, device) -> int:
    """Load what is scored; check every argument and the report's place before any attack; attack
    (each torchrun rank its share); print the report, then save it."""
    from . import distributed as dist
    from .evaluation import check_arguments, evaluate
    from .evaluation.core import shard_across_ranks

    t0 = time.perf_counter()
    _check_eval_flags(args)
    src = _run_source(args, device) if args.model is None else _external_source(args, device)
    n = _eval_size(args, src["test_size"])
    x, y = src["load"](n)
    attacks, suite = _attack_choice(args)
    norm = args.norm or src["norm"]
    eps = args.eps if args.eps is not None else src["eps"] if norm == src["norm"] else DEFAULT_EPS[norm]
    if attacks:  # (before the checks below: two spellings of one are named as typed)
        attacks = _one_spelling(attacks, eps, norm)
    check_arguments(eps=eps, batch_size=args.batch_size, diag_n=args.diag_n, precision=args.precision,
                    diagnostics=args.diagnostics, norm=norm, eot=args.eot, seed=args.seed, attacks=attacks)
    name = eval_report_name(suite, attacks, n, src["test_size"], norm, eps, src, args)  # (ε checked: finite)
    # the images scored, by content: a test folder whose files changed gives other numbers
    images = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()
    evaluation = {"settings": name.removeprefix("eval-").removesuffix(".json"),
                  "of": f"{_subject(src)}, test images sha256:{images[:16]}"}
    # resolved: `eae eval ../r3` names a folder that exists; the '..' rule is for an --output typed by hand
    target = Path(args.output) if args.output else src["run_dir"].resolve() / name if src["run_dir"] else None
    data = Path(src["meta"]["test_data"]) if src["meta"].get("dataset") == "imagefolder" else None
    if args.output and data is not None and data.parent.resolve() in target.resolve().parents:
        raise UsageError(f"--output {args.output} is inside the image folder {data.parent} (train/ and val/), whose "
                         "every file eae reads as an image: give a path outside it")
    if target is not None and not args.output and src["run_dir"]:
        from .outputs import dataset_copy_above

        copy = dataset_copy_above(target)
        if copy is not None:  # (a run made there before the copy was complete): its report would land among the data
            raise UsageError(f"the run {src['run_dir']} is inside the dataset copy {copy}, where eae writes nothing: "
                             "move the run out of it, or give --output a path outside it")
    if target is not None:  # a name never writable, a file not ours, another evaluation: said before the attacks
        from .outputs import check_report

        check_report(target, "eae eval", evaluation=_same_evaluation(evaluation, src))
    if dist.world_size() > 1:  # each rank attacks its share: of the same weights, images and settings
        dist.agree("the evaluation (weights, test images, settings)",
                   json.dumps({**evaluation, "n": n, "images": images, "eps": eps, "output": str(target)}))
    with shard_across_ranks():
        report = evaluate(src["model"], x, y, attacks, eps, suite=suite, norm=norm, batch_size=args.batch_size,
                          device=device, seed=args.seed, precision=args.precision, diagnostics=args.diagnostics,
                          eot=args.eot, diag_n=args.diag_n, test_size=src["test_size"], progress=not args.quiet)
    if not dist.is_main():
        return 0 if not args.strict or report.verdict == "ok" else 3
    return _publish(args, src, report, evaluation, target, device, t0)


def _one_spelling(attacks: list[str], eps: float, norm: str) -> list[str]:
    """pgd5, PGD5 and pgd5r1 are one attack, and clean is a row of every report wherever it is
    listed: one spelling, clean first, so that one evaluation has one report name. Two specs of
    one attack are refused in the words they were typed."""
    from .attacks import canonical_spec

    seen: dict[str, str] = {}
    for typed in attacks:
        spec = canonical_spec(typed, eps, norm)
        if spec in seen:
            what = "the clean row" if spec == "clean" else f"one attack ({spec})"
            raise UsageError(f"--attacks {seen[spec]} and {typed} are {what}: give it once")
        seen[spec] = typed
    return ["clean", *(s for s in seen if s != "clean")]


def _check_eval_flags(args: argparse.Namespace) -> None:
    if args.strict and (args.diagnostics == "off" or args.diag_n == 0):  # the verdict would be 'not run'
        why = "--diagnostics off does not reach" if args.diagnostics == "off" else "--diag-n 0 leaves without points"
        raise UsageError(f"--strict exits by the gradient-masking verdict, which {why}: use --diagnostics cheap or "
                         "full, on --diag-n 100 or more points, with --strict")
    if args.diagnostics not in (None, "off") and args.diag_n == 0:
        raise UsageError(f"--diagnostics {args.diagnostics} runs on the first --diag-n points, but --diag-n is 0: give "
                         "--diag-n > 0, or --diagnostics off")
    # --diag-n 0 runs no diagnostics: the same evaluation, and report, as --diagnostics off
    args.diagnostics = "off" if args.diag_n == 0 else args.diagnostics or "full"
    for flag, value in (("RUN_DIR", args.run_dir), ("--output", args.output)):
        if value is not None and not value.strip():  # '' would be the current folder, or the default report
            raise UsageError(f"{flag} is empty: give a path")
    if args.attacks is not None and args.suite:
        raise UsageError("give --suite or --attacks, not both")


def _eval_size(args: argparse.Namespace, test_size: int) -> int:
    """The number of test images to score (--n, or all), and whether --strict can pass on them."""
    from .evaluation.diagnostics import FEW_POINTS

    n = test_size if args.n is None else args.n
    if test_size == 0:
        raise UsageError("the test set is empty: nothing to evaluate")
    if not 0 < n <= test_size:
        raise UsageError(f"--n must be in 1..{test_size:,} (the test set has {test_size:,} images), got {n}")
    if args.strict and test_size < FEW_POINTS:
        raise UsageError(f"--strict passes only on a gradient-masking verdict of {FEW_POINTS}+ points, and this test "
                         f"set has {test_size}: leave --strict out here")
    if args.strict and min(args.diag_n, n) < FEW_POINTS:  # its own evidence would call the verdict meaningless
        raise UsageError(f"--strict passes only on a gradient-masking verdict of {FEW_POINTS}+ points; this one would "
                         f"rest on {min(args.diag_n, n)} (--diag-n {args.diag_n}, --n {n}): give both {FEW_POINTS} "
                         "or more")
    return n


def _attack_choice(args: argparse.Namespace) -> tuple[list[str] | None, str | None]:
    """--attacks as a list, or the suite (quick when neither is given)."""
    attacks = [s.strip() for s in args.attacks.split(",") if s.strip()] if args.attacks is not None else None
    if attacks == []:
        raise UsageError(f"--attacks {args.attacks!r} names no attack: give e.g. clean,pgd20,cw20 (or a --suite)")
    return attacks, None if attacks else (args.suite or "quick")


def _publish(args: argparse.Namespace, src: dict[str, Any], report, evaluation: dict[str, str],
             target: Path | None, device, t0: float) -> int:
    """Print the report (the numbers first: a folder that cannot be written must not cost them),
    then save it; --strict exits 3 on any verdict but ok."""
    import torch

    from . import distributed as dist
    from .utils import device_name

    procs = f" x {dist.world_size()} processes" if dist.world_size() > 1 else ""
    out = {"written_by": "eae eval", **src["meta"], **report.to_dict(), "batch_size": args.batch_size,
           "device": device_name(device) + procs, "torch": torch.__version__,
           "robustbench": robustbench_entry(report, src["meta"])}
    if src["meta"].get("weights_epoch"):
        print(f"scoring the best weights: epoch {src['meta']['weights_epoch']} of the run")
    elif src["meta"].get("weights") == "best":  # a run without validation keeps its last epoch as its best
        print("scoring the best weights: the run's last epoch (it validated nothing, so its best is its last)")
    scored = _scored(src["meta"])
    md = report.to_markdown(title=src["title"] + (f" on {scored}" if scored != src["meta"].get("dataset") else ""))
    if src["meta"].get("caveat"):  # in the saved report too, not only on the terminal
        md += f"\n\nnote: {src['meta']['caveat']}"
    rest = "loading" if args.diagnostics == "off" else "loading and the gradient-masking diagnostics"
    tail = f"{time.perf_counter() - t0:.1f} s in all on {out['device']} (attacks {report.seconds:.1f} s; the rest: {rest})"
    try:
        print(md)
        print(f"\n{tail}", flush=True)
    except BrokenPipeError:  # `| head`: the report is saved all the same
        sys.stdout = open(os.devnull, "w")
    out["evaluation"] = evaluation
    status = _save_report(target, out, f"{md}\n\n{tail}\n", same=_same_evaluation(evaluation, src))
    if status:
        return status
    if args.strict and report.verdict != "ok":
        print(f"error: --strict and the gradient-masking verdict is {report.verdict!r}", file=sys.stderr)
        return 3
    return 0


def _subject(src: dict[str, Any]) -> str:
    """What an evaluation scored, in the words that make two evaluations the same one: the
    weights by their content (so that a run moved or copied, or a weights file named by another
    path, is the same; a run with the same settings trained on other data is not), a model
    trained elsewhere with its spec, and the test images scored."""
    digest = f"weights sha256:{src['weights_sha256'][:16]}"
    if src["run_dir"] is not None:
        subject = f"the run's {digest}"
    else:
        m = src["meta"]
        subject = f"{m['model']}{' ' + json.dumps(m['model_kwargs'], sort_keys=True) if m.get('model_kwargs') else ''}" \
                  f"{' normalize ' + m['normalize'] if m.get('normalize') else ''} {digest}"
    if src["meta"].get("test_data") not in (None, src["meta"].get("dataset")):
        subject += f" on {src['meta']['test_data']}"
    if src["meta"].get("image_size"):  # an image folder scored at another size gives other numbers
        subject += f" at {src['meta']['image_size']}x{src['meta']['image_size']}"
    return subject


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:  # read already to load the model: it is there and readable
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _same_evaluation(evaluation: dict[str, str], src: dict[str, Any]) -> list[dict[str, str]]:
    """The forms an earlier report of this evaluation may hold: this version's, and that of
    versions that named a run by its folder's absolute path (a model by its --weights as given)."""
    m = src["meta"]
    legacy = str(src["run_dir"].resolve()) if src["run_dir"] is not None else f"{m['model']} {m['weights']}"
    if m.get("test_data") not in (None, m.get("dataset")):
        legacy += f" on {m['test_data']}"
    return [evaluation, {**evaluation, "of": legacy}]


DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5}
DEFAULT_EVAL_BATCH = 500


def _run_source(args: argparse.Namespace, device) -> dict[str, Any]:
    """A run folder of ours: its network, its dataset, its threat model."""
    from .checkpoint import BEST_WEIGHTS, WEIGHTS, check_dataset, load_run, read_config
    from .data import DataSource, dataset_identity, load_test_set, num_test_images

    if args.run_dir is None:
        raise UsageError("give a run folder (eae eval RUN_DIR), or --model SPEC --weights FILE for a model "
                         "trained elsewhere")
    for flag in ("normalize", "model_kwargs", "dataset", "image_size", "unverified_data", "cifar100_labels"):
        if getattr(args, flag) is not None:
            raise UsageError(f"--{flag.replace('_', '-')} is for --model; a run folder knows its own")
    weights = args.weights if args.weights is not None else "final"
    if weights not in ("final", "best"):
        raise UsageError(f"--weights for a run folder is final or best, got {weights!r} (a weights file needs --model)")
    run_dir = Path(args.run_dir)
    cfg = read_config(run_dir)
    if args.data_dir and cfg.dataset == "synthetic":  # it would be ignored: the images are generated
        raise UsageError(f"--data-dir: {args.run_dir} was trained on synthetic data, which is generated, not read")
    if args.data_dir:
        cfg = cfg.replace(data_dir=args.data_dir)
    elif cfg.dataset == "imagefolder" and cfg.data_dir and not Path(cfg.data_dir).is_dir():
        rel = "" if Path(cfg.data_dir).is_absolute() else " (a relative path: from the folder training ran in)"
        raise UsageError(f"the run's images, data_dir {cfg.data_dir!r}{rel}, are not found from here: "
                         "give --data-dir with the folder that holds train/ and val/")
    elif cfg.dataset != "synthetic" and cfg.data_dir and not Path(cfg.data_dir).is_dir():
        # the folder the run read its data from is gone: never made again and downloaded into unasked
        path = Path(cfg.data_dir)
        now = ("is a file now" if path.exists() else "is a link to nowhere now" if path.is_symlink()
               else "is not found")
        raise UsageError(f"the run's data folder, data_dir {cfg.data_dir!r} (recorded when it trained), {now}: give "
                         f"--data-dir with the folder that holds {cfg.dataset} now (`eae data {cfg.dataset} "
                         "--data-dir DIR` fetches it)")
    if cfg.svhn_extra:  # the test set is test_32x32.mat alone: the training-only extra file is not needed
        cfg = cfg.replace(svhn_extra=False)
    model, wmeta = load_run(run_dir, weights=weights, device=device)
    caveat = check_dataset(run_dir, dataset_identity(DataSource.of(cfg)))  # the run's classes and image size
    # the test set scored: CIFAR-10 is the same wherever it lies (checksums); an image folder is its folder
    test_data = _test_data(cfg)
    meta = {"run_dir": str(run_dir), "weights": weights, "dataset": cfg.dataset, "test_data": test_data,
            "architecture": cfg.arch, **({"caveat": caveat} if caveat else {}),
            **({"weights_epoch": wmeta.get("epoch")} if weights == "best" else {})}
    return {"model": model, "test_size": num_test_images(cfg), "load": lambda n: load_test_set(cfg, n),
            "norm": cfg.norm, "eps": cfg.eps, "meta": meta, "title": f"{run_dir} ({weights} weights)",
            "run_dir": run_dir,  # the tensors' digest, of the bytes loaded (a file's bytes vary with its metadata order)
            "weights_sha256": wmeta.get("sha256") or _file_sha256(run_dir / (BEST_WEIGHTS if weights == "best" else WEIGHTS))}


def eval_report_name(suite, attacks, n: int, test_size: int, norm: str, eps: float, src: dict[str, Any],
                     args: argparse.Namespace) -> str:
    """The report of one evaluation of a run, named by everything that changes its numbers,
    so that evaluations of the same run keep their own reports: eval-quick.json,
    eval-aa-n1000-best.json, eval-clean+pgd20-l2-eps0.5-seed3.json. A long attack list is
    cut and given a digest of the whole, so two lists never share a name."""
    what = suite or "+".join(attacks)
    name = re.sub(r"[^A-Za-z0-9+.-]", "_", what)
    if len(name) > 60 or name != what:  # cut or changed: a digest of the whole keeps names apart
        name = name[:50] + "-" + hashlib.sha256(what.encode()).hexdigest()[:8]
    parts = [name]
    if n < test_size:
        parts.append(f"n{n}")
    if norm != src["norm"] or eps != src["eps"]:
        k = eps * 255
        whole = k == 0 or (round(k) >= 1 and abs(k - round(k)) < 1e-9)  # 1e-12 is not 0/255: its own report
        parts.append(f"{norm}-eps" + (f"{round(k)}-255" if whole else repr(float(eps))))
    if src["meta"].get("weights") == "best":
        parts.append("best")
    from .evaluation import get_suite

    eot = get_suite(suite).eot if suite else 1  # --eot 1 on quick is quick's own: the same report
    for flag, label, default in (("seed", "seed", 0), ("precision", "precision", "fp32"), ("eot", "eot", eot),
                                 ("diagnostics", "diag", "full"), ("diag_n", "diagn", 1000)):
        if getattr(args, flag) not in (default, None) and not (flag == "diag_n" and args.diagnostics == "off"):
            parts.append(f"{label}{getattr(args, flag)}")
    # the random starts are drawn batch by batch, on each process: other batches, other draws, other numbers
    if min(args.batch_size, n) != min(DEFAULT_EVAL_BATCH, n):
        parts.append(f"bs{args.batch_size}")
    from . import distributed as dist

    if dist.world_size() > 1:
        parts.append(f"ranks{dist.world_size()}")
    return "eval-" + "-".join(parts) + ".json"


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are given once each ({"width": 1, "width": 2} is a typo, not a choice)."""
    keys = [k for k, _ in pairs]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice is not None:
        raise ValueError(f"{twice!r} is given twice")
    return dict(pairs)


def _external_source(args: argparse.Namespace, device) -> dict[str, Any]:
    """A network trained elsewhere: built from --model, weights from --weights FILE."""
    from .data import load_test_set, num_test_images
    from .models.external import load_external

    if args.run_dir is not None:
        raise UsageError("give a run folder or --model with --weights, not both")
    if not args.weights or args.weights in ("final", "best"):
        raise UsageError("--model needs --weights FILE (.safetensors, or a PyTorch state_dict file)")
    from .utils import loads_json

    given = args.model_kwargs if args.model_kwargs is None or len(args.model_kwargs) <= 200 else args.model_kwargs[:200] + "..."
    try:
        kwargs = loads_json(args.model_kwargs, parse_constant=_no_constant,
                            object_pairs_hook=_once_each) if args.model_kwargs is not None else {}
    except json.JSONDecodeError as e:
        raise UsageError(f"--model-kwargs is not valid JSON ({e.msg}): {given!r}") from None
    except ValueError as e:
        raise UsageError(f"--model-kwargs: {e}, in {given!r}") from None
    if not isinstance(kwargs, dict):
        raise UsageError(f"--model-kwargs must be a JSON object, e.g. '{{\"depth\": 28}}', got {args.model_kwargs!r}")
    dataset = args.dataset or "cifar10"
    data = TrainConfig(dataset=dataset, data_dir=args.data_dir, image_size=args.image_size or 224,
                       workers=min(8, os.cpu_count() or 1) if dataset in ("imagefolder", "tiny-imagenet") else 8,
                       unverified_data=bool(args.unverified_data),
                       cifar100_labels=args.cifar100_labels or "fine")
    if args.cifar100_labels and data.dataset != "cifar100":
        raise UsageError(f"--cifar100-labels is for --dataset cifar100, not {data.dataset}")
    if args.image_size is not None and data.dataset != "imagefolder":
        raise UsageError(f"--image-size is for --dataset imagefolder: {data.dataset} has its own image size")
    num_classes = _num_classes(data)
    digest = _file_sha256(Path(args.weights)) if Path(args.weights).is_file() else None
    model = load_external(args.model, args.weights, num_classes, normalize=args.normalize, kwargs=kwargs,
                          device=device)
    if digest != _file_sha256(Path(args.weights)):  # replaced while it was read: what was scored is unknown
        raise UsageError(f"--weights {args.weights} changed while it was read (is something writing it?): run again")
    _check_outputs(model, load_test_set(data, 2)[0], num_classes, data.dataset, device)
    test_data = _test_data(data)
    meta = {"model": args.model, "weights": str(args.weights), "normalize": args.normalize, "test_data": test_data,
            "dataset": data.dataset, "architecture": args.model, **({"model_kwargs": kwargs} if kwargs else {}),
            **({"image_size": data.image_size} if data.dataset == "imagefolder" else {})}
    return {"model": model, "test_size": num_test_images(data), "load": lambda n: load_test_set(data, n),
            "norm": "linf", "eps": DEFAULT_EPS["linf"], "meta": meta,
            "title": f"{args.model} ({args.weights})", "run_dir": None, "weights_sha256": digest}


def _check_outputs(model, x, num_classes: int, dataset: str, device) -> None:
    """A network with another number of outputs than the test set has classes would be scored
    (argmax over its outputs) as if it had them: refused, naming both."""
    from .evaluation.checks import output_form

    outputs = output_form(model, x.to(device).float() / 255)  # a model that cannot run at all: named there
    if outputs != num_classes:
        raise UsageError(f"the model gives {outputs} outputs per image, the test set ({dataset}) has "
                         f"{num_classes} classes: build it for {num_classes} classes (your own class: --model-kwargs "
                         f"'{{\"num_classes\": {num_classes}}}')"
                         + ("; a model of CIFAR-100's 20 coarse classes: --cifar100-labels coarse"
                            if dataset == "cifar100" and outputs == 20 else ""))


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows; give a finite number")


def _num_classes(data: TrainConfig) -> int:
    from .data import DataSource, class_names_of

    return len(class_names_of(DataSource.of(data)))


def _test_data(cfg: TrainConfig) -> str:
    """The test set scored, as reports record it: a published dataset is the same wherever it
    lies (checksums); an image folder, or a copy that is not the published one, is its folder."""
    from .data import OFFICIAL, DataSource, official_arrays

    if cfg.dataset == "imagefolder":
        return str(Path(cfg.data_dir).resolve() / "val")
    name = cfg.dataset + ("-coarse" if cfg.dataset == "cifar100" and cfg.cifar100_labels == "coarse" else "")
    if cfg.dataset in OFFICIAL and cfg.unverified_data:
        copy = official_arrays(DataSource.of(cfg))[0]
        if copy.unverified:
            return f"{name} (unverified copy: {Path(copy.root).resolve()})"
    return name


def _scored(meta: dict[str, Any]) -> str | None:
    """The test set as reports name it: the dataset, or what differs from it (coarse labels, an
    unverified copy and its folder); an image folder keeps the dataset's name here."""
    if meta.get("test_data") is None or meta.get("dataset") == "imagefolder":
        return meta.get("dataset")
    return meta["test_data"]


def robustbench_entry(report, meta: dict[str, Any]) -> dict[str, Any]:
    """The result in the fields of RobustBench's model cards (accuracies in percent, as
    strings with two decimals), so that it compares with the leaderboard directly.
    ``autoattack_acc`` only for AutoAttack's standard version (suite aa; ``full`` adds other
    attacks, so its robust accuracy is not AutoAttack's); ``n_examples`` says on how many."""
    aa = report.suite == "aa"
    return {"dataset": _scored(meta), "threat_model": {"linf": "Linf", "l2": "L2"}[report.norm],
            "eps": fmt_eps(report.eps) if report.norm == "linf" else f"{report.eps:g}",
            "clean_acc": f"{100 * report.clean_accuracy:.2f}",
            "autoattack_acc": f"{100 * report.robust_accuracy:.2f}" if aa else None,
            "n_examples": report.n, "architecture": meta.get("architecture")}


def _save_report(json_path: Path | None, out: dict[str, Any], md: str, same: Any = None) -> int:
    """Write the JSON and Markdown reports through the output owner (:mod:`eae.outputs`): a
    new file, or one that an earlier ``eae eval`` wrote and nobody changed. 0, or 2 when
    they could not be saved (the numbers are printed already)."""
    from .errors import OutputRefused
    from .outputs import check_report
    from .utils import atomic_write_bytes, atomic_write_json

    if json_path is None:
        print("(not saved: pass --output PATH.json to save the report)")
        return 0
    from .outputs import sealed

    text = md.encode(errors="surrogateescape")  # a path of bytes that are not UTF-8 is written as it is
    out = sealed({**out, "markdown_sha256": hashlib.sha256(text).hexdigest()})
    try:
        replaced = check_report(json_path, "eae eval", evaluation=same or out["evaluation"])
        json_path.parent.mkdir(parents=True, exist_ok=True)  # a new folder for the report: ours
        atomic_write_json(json_path, out)
        atomic_write_bytes(json_path.with_suffix(".md"), text)
    except (OSError, OutputRefused) as e:
        if isinstance(e, OutputRefused):  # its message says what to do
            print(f"error: the report was not saved: {e} (the numbers above are complete)", file=sys.stderr)
        else:
            print(f"error: could not save the report to {json_path} ({e.strerror or e}); the numbers above are "
                  "complete: pass --output PATH.json to save them elsewhere", file=sys.stderr)
        return 2
    md_path = json_path.with_suffix(".md")
    shown = [str(p) if str(p).isprintable() else repr(str(p)) for p in (json_path, md_path)]  # a newline: one line
    print(f"written: {shown[0]}, {shown[1]}" + (f" ({replaced})" if replaced else ""))
    return 0


# --------------------------------------------------------------------------- data / list
def cmd_data(args: argparse.Namespace) -> int:
    from .data import DataSource, official_arrays, prepare_cifar10

    if args.svhn_extra and args.dataset != "svhn":
        raise UsageError(f"--svhn-extra is for svhn, not {args.dataset}")
    if args.unverified_data and args.dataset == "cifar10":
        raise UsageError("--unverified-data is for cifar100, svhn and tiny-imagenet: CIFAR-10 is checked to the pixel")
    if args.dataset == "cifar10":
        folder = prepare_cifar10(args.data_dir, download=not args.no_download)  # DatasetError: exit 2 (main)
        print(f"CIFAR-10 verified: {folder} (50,000 train / 10,000 test, SHA-256 of pixels and labels match)")
        return 0
    src = DataSource(dataset=args.dataset, data_dir=args.data_dir, svhn_extra=args.svhn_extra,
                     unverified_data=args.unverified_data, workers=min(8, os.cpu_count() or 1))
    a, _ = official_arrays(src, download=not args.no_download)
    sizes = f"{len(a.train_y):,} train / {len(a.test_y):,} test, {len(a.classes)} classes"
    if a.unverified:
        print(f"{args.dataset} read, NOT verified: {a.root} ({sizes}; {a.unverified})")
    else:
        what = "the release's classes and counts" if args.dataset == "tiny-imagenet" else "published MD5s"
        print(f"{args.dataset} verified: {a.root} ({sizes}; {what} match)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .attacks import ATTACKS
    from .methods import METHODS
    from .models import MODELS

    for title, reg in (("architectures", MODELS), ("methods", METHODS), ("attacks", ATTACKS)):
        print(f"{title}:")
        for name in reg.names():
            doc = (reg.get(name).__doc__ or "").strip().split("\n\n")[0]  # the first paragraph, whole
            print(f"  {name:<18} {' '.join(doc.split())}")
        if reg is MODELS:
            print(f"  {'timm:NAME':<18} any timm network (timm.list_models()); needs timm")
            print(f"  {'torchvision:NAME':<18} any torchvision classifier (torchvision.models.list_models()); "
                  "needs torchvision")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    if args.suite == "headline":
        from .bench.headline import run_headline

        if (args.only or args.resume or args.seeds != 1 or args.compile or args.train_only or args.dataset
                or args.unverified_data):
            raise ValueError("headline takes --out, --budget, --tiny, --dry-run, --device, --data-dir and --quiet only")
        if args.dry_run:  # a plan for another machine: the device is checked by name, not looked for
            from .bench.headline import GPU, TINY, plan_table
            from .utils import parse_device

            parse_device(args.device)

            rows = plan_table(TINY if args.tiny else GPU)
            budget, used = (args.budget if args.budget is not None else 510.0), 0.0
            for name, secs in rows:
                used += secs
                print(f"{name:<16} {secs:6.1f} s" + ("   (past the budget at this point of the plan)" if used > budget else ""))
            print(f"{'total':<16} {sum(s for _, s in rows):6.1f} s against a budget of {budget:.0f} s (planning "
                  "figures; the run itself skips, most valuable first, what would not fit; see benchmarks/README.md)")
            return 0
        if not args.out:
            raise UsageError("headline needs --out DIR (the folder for its runs and REPORT.md)")
        results = run_headline(args.out, budget=args.budget if args.budget is not None else 510.0, tiny=args.tiny,
                               device=args.device, data_dir=args.data_dir, quiet=args.quiet)
        return 1 if any(s["status"] != "ok" for s in results["smoke"]) else 0
    if args.tiny or args.budget is not None or args.dry_run:
        raise ValueError("--tiny, --budget and --dry-run are options of `eae bench headline` only")
    if not args.out:
        raise UsageError(f"bench {args.suite} needs --out DIR (the folder for its runs, results.json and REPORT.md)")
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only is not None else None
    if only == []:
        raise UsageError(f"--only {args.only!r} names no entry: give e.g. --only eae,fgsm_rs (or leave it out)")
    run_bench(args.suite, args.out, seeds=args.seeds, resume=args.resume, device=args.device,
              data_dir=args.data_dir, budget_k=args.budget_k, quiet=args.quiet,
              only=only, compile=args.compile, train_only=args.train_only, dataset=args.dataset,
              unverified_data=args.unverified_data)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=args.out, data_dir=args.data_dir, device=args.device, quiet=args.quiet)
    return 0


# --------------------------------------------------------------------------- parser
class UsageError(SystemExit):
    """A wrong combination of arguments found after parsing: like argparse's own errors, a
    SystemExit with status 2, printed by ``main`` as one line."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _int_at_least(low: int, high: int = MAX_INT):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        if v > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {text[:27] + '...' if len(text) > 30 else text}")
        return v
    return parse


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def _budget_seconds(text: str) -> float:
    """headline's wall-clock budget: from a second to a week (what a plan can be printed against)."""
    from .bench.headline import MAX_BUDGET_S

    v = _positive_float(text)
    if not 1 <= v <= MAX_BUDGET_S:
        raise argparse.ArgumentTypeError(f"seconds in 1..{MAX_BUDGET_S:,} (a week), got {text}")
    return v


def _eps(text: str) -> float:
    """ε as train reads it: a float or a fraction (its range is checked with the norm)."""
    try:
        return parse_float(text) + 0.0  # -0 is 0 (printed as such)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _Parser(argparse.ArgumentParser):
    """Bad arguments: two lines (the error, where to look), not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="eae", description="Fast adversarial training in latent spaces (EAE) "
                                "and fast-AT baselines, with strong evaluation.")
    p.add_argument("--version", action="version", version=f"eae {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_train_parser, _eval_parser, _data_and_list_parsers, _bench_parser, _demo_parser):
        add(sub)
    p.commands = sub.choices  # name -> its parser
    return p


def _train_parser(sub) -> None:
    t = sub.add_parser("train", help="train a model", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--config", type=home_path, help="TOML preset (e.g. configs/cifar10_preact18_eae.toml); flags override it")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--stop-after", type=_int_at_least(1), default=None, help="stop after N epochs of this call (resumable)")
    t.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    add_config_flags(t)
    t.set_defaults(func=cmd_train)


def _eval_parser(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a trained run on the test set",
                       description="Attack a trained run on the test set; the per-example worst case over "
                                   "every attack is its robust accuracy; gradient-masking checks give a verdict.")
    e.add_argument("run_dir", nargs="?", default=None, type=home_path,
                   help="a run folder of eae train (or give --model and --weights for a model trained elsewhere)")
    e.add_argument("--suite", choices=SUITE_NAMES, default=None,
                   help="quick (FGSM, PGD-20, CW-20; the default), aa (AutoAttack standard), aa-fast "
                        "(APGD-CE + APGD-T, for development), full (both), aa-rand (AutoAttack's version for "
                        "randomised models: APGD-CE and APGD-DLR with EOT 20)")
    e.add_argument("--attacks", default=None,
                   help="instead of a suite, a comma-separated list: clean, fgsm, pgdK, cwK, pgdKrR, apgd-ce, "
                        "apgd-dlr, apgd-t, fab-t, square")
    e.add_argument("--norm", choices=("linf", "l2"), default=None,
                   help="threat model (default: the run's; linf for --model)")
    e.add_argument("--eps", type=_eps, default=None,
                   help="radius, e.g. 8/255 (linf) or 0.5 (l2) (default: the run's; 8/255 or 0.5 for --model)")
    e.add_argument("--n", type=_int_at_least(1), default=None,
                   help="first N test images (default: all; fewer is labelled SUBSET)")
    e.add_argument("--batch-size", type=_int_at_least(1), default=DEFAULT_EVAL_BATCH,
                   help="images per attack batch (default: 500); the random starts are drawn batch by batch, so "
                        "another size is another evaluation, with its own report")
    e.add_argument("--device", default="auto")
    e.add_argument("--seed", type=_int_at_least(0, MAX_SEED), default=0, help="seed of the attacks' random starts (default: 0)")
    e.add_argument("--weights", default=None, type=home_path,
                   help="of a run: final, or best (the best epoch on the validation split) (default: final); "
                        "with --model: the weights FILE (.safetensors, or a state_dict read with weights_only)")
    e.add_argument("--model", default=None,
                   help="evaluate a network trained elsewhere: a name from `eae list`, timm:NAME, "
                        "torchvision:NAME, or FILE.py:Class / package.module:Class (runs that code: your own)")
    e.add_argument("--model-kwargs", default=None, help="with --model: JSON arguments of its constructor")
    e.add_argument("--normalize", default=None,
                   help="with --model: the model expects normalised inputs: cifar10, imagenet, or "
                        "'m1,m2,m3,s1,s2,s3' (eae feeds it images in [0, 1] through this normalisation)")
    e.add_argument("--dataset", choices=("cifar10", "cifar100", "svhn", "tiny-imagenet", "imagefolder"), default=None,
                   help="with --model: test data (default: cifar10; imagefolder: --data-dir D with D/val)")
    e.add_argument("--unverified-data", action="store_true", default=None,
                   help="with --model: accept a copy of cifar100, svhn or tiny-imagenet that is not the published "
                        "files (the report says so)")
    e.add_argument("--cifar100-labels", choices=("fine", "coarse"), default=None,
                   help="with --model and --dataset cifar100: the 100 fine classes (default) or the 20 coarse ones")
    e.add_argument("--image-size", type=_int_at_least(1), default=None,
                   help="with --model and --dataset imagefolder: side of the test crops (default 224)")
    e.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32",
                   help="arithmetic of the attacks' gradients; their decisions (fooled or not) and the scores are always "
                        "strict fp32 (default: fp32)")
    e.add_argument("--eot", type=_int_at_least(1, 10_000), default=None,
                   help="average each attack gradient over N forward passes (expectation over transformation, "
                        "for randomised models; AutoAttack uses 20) (default: 1; aa-rand: 20)")
    e.add_argument("--diagnostics", choices=("full", "cheap", "off"), default=None,
                   help="gradient-masking checks (default: full)")
    e.add_argument("--diag-n", type=_int_at_least(0), default=1000, help="points used by the diagnostics (default: 1000)")
    e.add_argument("--strict", action="store_true", help="exit with status 3 unless the verdict is ok")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--output", default=None, type=home_path, help="JSON report path (default: RUN_DIR/eval-WHAT.json, named by what was run, e.g. "
                        "eval-quick.json, eval-aa-n1000.json; .md beside it)")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_eval)


def _data_and_list_parsers(sub) -> None:
    d = sub.add_parser("data", help="find, download or convert, and verify a dataset")
    d.add_argument("dataset", choices=("cifar10", "cifar100", "svhn", "tiny-imagenet"))
    d.add_argument("--data-dir", default=None)
    d.add_argument("--no-download", action="store_true", help="only look and verify")
    d.add_argument("--svhn-extra", action="store_true", help="svhn: also extra_32x32.mat")
    d.add_argument("--unverified-data", action="store_true",
                   help="read a copy that is not the published files and say what differs")
    d.set_defaults(func=cmd_data)

    ls = sub.add_parser("list", help="list architectures, methods and attacks")
    ls.set_defaults(func=cmd_list)


def _bench_parser(sub) -> None:
    from .bench.suites import BENCH_SUITES

    b = sub.add_parser("bench", help="train and evaluate every method of a benchmark suite, then report",
                       description="Suites: headline: the claims on one GPU in one command, under a time "
                                   "budget (smoke of the device paths, speed of every method, 15-epoch "
                                   "runs of eae, fgsm_rs, eae_paper and standard with CW-20 and AutoAttack); "
                                   + "; ".join(f"{k}: {v.description}" for k, v in BENCH_SUITES.items()))
    b.add_argument("suite", choices=("headline",) + tuple(BENCH_SUITES))
    b.add_argument("--out", type=home_path, help="output folder (runs, results.json, REPORT.md, report.html); "
                   "not needed with --dry-run")
    b.add_argument("--seeds", type=_int_at_least(1), default=1, help="training seeds 0..N-1 (default: 1)")
    b.add_argument("--resume", action="store_true", help="continue a benchmark in --out: finished runs are skipped")
    b.add_argument("--device", default="auto")
    b.add_argument("--data-dir", default=None)
    b.add_argument("--dataset", choices=("cifar10", "cifar100", "svhn", "tiny-imagenet"), default=None,
                   help="run a CIFAR-10 training suite's recipe on another dataset (default: the suite's own)")
    b.add_argument("--unverified-data", action="store_true",
                   help="with --dataset: accept a copy that is not the published files (recorded in each run)")
    b.add_argument("--budget-k", type=_positive_float, default=None,
                   help="cifar10-budget: the budget is K x the time of 15 standard epochs (default: 2)")
    b.add_argument("--only", default=None,
                   help="comma-separated entries to run now (the report keeps the ones finished before): "
                        "spreads a suite over several calls")
    b.add_argument("--compile", action="store_true",
                   help="torch.compile every network for training (the first epoch carries the compilation)")
    b.add_argument("--train-only", action="store_true",
                   help="train the entries and stop; a later call without it evaluates them")
    b.add_argument("--budget", type=_budget_seconds, default=None,
                   help="headline: wall-clock seconds for the whole command (1 to a week); parts that would not "
                        "fit are skipped with a note, most valuable first (default: 510)")
    b.add_argument("--tiny", action="store_true",
                   help="headline: the same path on a small network and a CIFAR-10 slice (CPU, minutes)")
    b.add_argument("--dry-run", action="store_true", help="headline: print the plan (parts, planned seconds) and exit")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=cmd_bench)


def _demo_parser(sub) -> None:
    demo = sub.add_parser("demo", help="CPU-sized comparison of standard, fgsm_rs, eae and eae_paper on CIFAR-10")
    demo.add_argument("--out", default="runs/demo", type=home_path)
    demo.add_argument("--data-dir", default=None)
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers and `timeout` send) or SIGHUP (the terminal closed), handled
    like Ctrl-C: the run keeps its last checkpoint and the message says how to continue."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_SIGNALS = {"SIGTERM": "terminated (SIGTERM)", "SIGHUP": "hung up (SIGHUP: its terminal was closed)"}


def _on_signal(signum, frame) -> None:
    """The first Ctrl-C, SIGTERM or SIGHUP stops the command; the ones after it (a user
    pressing Ctrl-C again) are ignored while it saves what it can and says how to continue."""
    import signal

    for num in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if num is not None and signal.getsignal(num) is _on_signal:
            signal.signal(num, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _work_saved() -> None:
    """The command's results are written: a Ctrl-C or SIGTERM from now on changes nothing, and
    must not turn a finished command's exit status into 130 or 143."""
    import signal

    for num in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if num is not None and signal.getsignal(num) is _on_signal:
            signal.signal(num, signal.SIG_IGN)


def _catch_signals() -> dict:
    """Answer SIGTERM and SIGHUP like Ctrl-C; returns the handlers to put back. A SIGHUP that
    is ignored (`nohup`) stays ignored."""
    import signal

    if not threading_main():
        return {}
    previous = {}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # Python's own: raises KeyboardInterrupt
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_signal)
    for name in _SIGNALS:
        num = getattr(signal, name, None)
        if num is not None and (name != "SIGHUP" or signal.getsignal(num) is signal.SIG_DFL):
            previous[num] = signal.signal(num, _on_signal)
    return previous


def main(argv: Sequence[str] | None = None, *, exiting: bool = False) -> int:
    """Run a command: the one exit path. A user's mistake or their machine (a bad value, a
    bad or missing file, a missing device, a full disk, their model's code) is one or two
    lines naming the cause, exit status 2; a guard that stops training, 4; Ctrl-C, 130;
    SIGTERM, 143; SIGHUP, 129. A traceback means a bug of ours (or EAE_DEBUG=1), and says so.
    ``exiting``: the process ends after it (the `eae` command): a signal that arrives once the
    command has finished is ignored, not answered by Python's default handler."""
    import signal

    closed = _usable_streams()
    parser = build_parser()
    shown = sys.stdout = _Stdout(sys.stdout, note=False)  # (argparse itself ignores a failed print)
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as e:  # --help, --version (0) or a usage error (2), printed by argparse
        if e.code in (0, None):
            shown.flush()
            what = "--version" if "--version" in (sys.argv[1:] if argv is None else argv) else "--help"
            if not isinstance(shown.failed, BrokenPipeError) and _unprinted(closed or shown.failed, what):
                raise SystemExit(2) from None
        raise
    finally:
        if sys.stdout is shown:
            sys.stdout = shown.stream
    if extra:  # said by the subcommand's parser, which knows its flags
        named = next((a for a in extra if a.startswith("-") and os.path.lexists(a)), None)
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}" + (
            f" (to name the file or folder {named}, write ./{named})" if named else ""))
    previous = _catch_signals()
    shows = args.command == "list" or getattr(args, "dry_run", False)  # what it prints is all it does
    stdout = sys.stdout = _Stdout(sys.stdout, note=not shows)
    stderr = sys.stderr = _Stdout(sys.stderr, note=False)  # `2>&1 | head`: the notes' pipe closes too
    try:
        status = args.func(args)
        _work_saved()
        if shows and not status:
            stdout.flush()  # (a full disk is found here: the wrapper keeps the error)
            if not isinstance(stdout.failed, BrokenPipeError) and _unprinted(
                    closed or stdout.failed, f"eae {args.command}" + (" --dry-run" if args.command == "bench" else "")):
                return 2
        # a reader that went away (`| head`) ends the command as such a reader expects: 141
        return 141 if not status and isinstance(stdout.failed, BrokenPipeError) else status
    except UsageError as e:
        _say(f"{parser.prog} {args.command}: error: {_printable(str(e))}")
        raise
    except KeyboardInterrupt as e:
        return _interrupted(e, args)
    except BrokenPipeError:  # stdout piped into a command that ended early (`| head`): not an error of the run
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit's own flush does not fail again
        _say("note: the output pipe was closed before eae finished writing to it (e.g. `| head`)")
        return 141
    except SystemExit as e:  # raised by a user's model code (ours never raises it here)
        _say(f"error: the model's code called sys.exit({e.code!r}) while eae was using it; nothing was "
             "scored: fix the model")
        return 2
    except Exception as e:
        return _failed(e, args)
    finally:
        for num, handler in previous.items():  # main() called from Python (tests, notebooks): leave it as it was
            signal.signal(num, signal.SIG_IGN if exiting else handler)  # (the process ends: nothing to answer)
        if sys.stdout is stdout:
            sys.stdout = stdout.stream
        if sys.stderr is stderr:
            sys.stderr = stderr.stream


def _unprinted(failed: bool | OSError | None, what: str) -> bool:
    """Whether a command whose only work is what it prints (``what``) could not print it:
    standard output closed (``failed`` True), full (an OSError, or found in the last flush).
    Said on stderr: its exit status must not claim the work was done."""
    if not failed:
        try:
            sys.stdout.flush()
        except OSError as e:
            failed = e
            try:  # what is still buffered goes nowhere, so that the exit's own flush does not fail again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):
                pass
        except ValueError:  # a stream closed from Python
            failed = True
    if not failed:
        return False
    why = "closed" if failed is True else f"could not be written ({failed.strerror or failed})"
    _say(f"error: standard output {why}: {what} prints its answer there, and nothing was shown; give it a "
         "terminal, a file or a pipe")
    return True


def _usable_streams() -> bool:
    """stdout/stderr closed (`>&-`): the work goes on, unprinted; a path with "ü" on an ASCII
    terminal is printed as \\xfc, never fatal. Returns whether stdout was closed."""
    closed = sys.stdout is None
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):  # not a text stream of ours (a test's capture)
            pass
    return closed


def _interrupted(e: KeyboardInterrupt, args: argparse.Namespace) -> int:
    """Ctrl-C or a signal: what happened and the command that continues; 130, or 128 + the signal."""
    import signal

    what = _SIGNALS[signal.Signals(e.signum).name] if isinstance(e, Terminated) else "interrupted"
    try:
        if _rank0():  # under torchrun: said once, by rank 0
            print(f"\n{what}{_resume_hint(args)}", file=sys.stderr)
    except OSError:  # the closed terminal was stderr: the exit status still says it
        pass
    return 128 + e.signum if isinstance(e, Terminated) else 130


def _failed(e: Exception, args: argparse.Namespace) -> int:
    """A user's or their machine's failure: one line and its exit status. Anything else is a bug
    of ours: re-raised with its traceback, and said to be one."""
    debug = os.environ.get("EAE_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")
    status, message = _user_error(e)
    if status is None:
        if not debug:
            print("eae: an internal error (a bug of ours, not your input): please report it with the "
                  "traceback below", file=sys.stderr)
        raise e
    if debug:  # the traceback as well, and the same exit status
        import traceback

        traceback.print_exc()
    # a bad setting fails alike on every rank of torchrun: said once, by rank 0 (but a launcher
    # variable is each process's own)
    if not isinstance(e, ConfigError) or _rank0() or _launch_variable(e):
        _say(f"error: {_printable(message)}" + (_resume_hint(args) if _peer_lost(e) else ""))
    else:  # the others wait a moment: torchrun stops every process once one exits, rank 0 maybe before it spoke
        time.sleep(2.0)
    return status


def _env_number(name: str, default: int) -> int:
    """A launcher's variable on the paths that report errors: one that is no number was said
    where it was read (distributed.env_int), and must not fail the report itself."""
    try:
        return int(os.environ.get(name, "").strip() or default)
    except ValueError:
        return default


def _launch_variable(e: Exception) -> bool:
    from .distributed import LAUNCH_VARIABLES

    return getattr(e, "field", None) in LAUNCH_VARIABLES


def _rank0() -> bool:
    """Whether this process says a setting's error: every process but the valid ranks 1..WORLD_SIZE-1
    (a RANK out of range is itself the error, and must be said)."""
    rank = _env_number("RANK", 0)
    return not 0 < rank < _env_number("WORLD_SIZE", 1)


def _printable(message: str) -> str:
    """One line: a newline or a terminal control inside a path the user gave, escaped as \\n."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def _say(message: str) -> None:
    """A line on stderr that cannot change the exit status: a full or closed stderr
    (`2>/dev/full`) must not turn a user's mistake (2) into what looks like a bug (1)."""
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


class _Stdout:
    """Standard output that outlives its reader: a closed pipe (`| head`) or a full disk
    (`> /dev/full`) stops the printing, never the training or the files; one note says so."""

    def __init__(self, stream, note: bool = True):
        self.stream, self.failed, self.note = stream, None, note  # note: say so on stderr when it fails

    def write(self, text: str) -> int:
        if self.failed is None:
            try:
                return self.stream.write(text)
            except OSError as e:
                self._fail(e)
        return len(text)

    def flush(self) -> None:
        if self.failed is None:
            try:
                self.stream.flush()
            except OSError as e:
                self._fail(e)

    def _fail(self, e: OSError) -> None:
        self.failed = e
        try:  # what is still buffered goes nowhere, so that the exit's own flush does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
        except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
            pass
        why = ("the output pipe was closed before eae finished writing to it (e.g. `| head`)"
               if isinstance(e, BrokenPipeError) else f"standard output could not be written ({e.strerror or e})")
        if self.note:
            _say(f"note: {why}; eae goes on without printing, and writes its files as usual")

    def __getattr__(self, name):  # fileno, isatty, encoding, ...: the stream's own
        return getattr(self.stream, name)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _resume_hint(args: argparse.Namespace) -> str:
    """The exact command that continues what was stopped, shell-quoted, from what it used."""
    from .utils import shell_quote as quote

    if getattr(args, "func", None) is cmd_train:
        out = getattr(args, "resolved_out", None) or getattr(args, "out", None) or "runs/default"
        if (Path(out) / "checkpoint.pt").exists():
            return f": the run continues from its last finished epoch with `{_launcher()} train --out={quote(out)} --resume`"
        if (Path(out) / "metrics.jsonl").exists():  # kept (other files were there): --resume starts it over
            return (f" before its first epoch ended, so there is no checkpoint: `{_launcher()} train "
                    f"--out={quote(out)} --resume` starts it again from epoch 1")
        if getattr(args, "resolved_out", None):
            return " before its first epoch ended: nothing was kept; the same command starts it again"
        return ""
    if getattr(args, "func", None) is cmd_demo:
        cmd = ["eae", "demo", f"--out={args.out}"] + (["--data-dir", args.data_dir] if args.data_dir else []) \
            + (["--device", args.device] if args.device != "cpu" else [])
        return f": the same command, `{' '.join(quote(c) for c in cmd)}`, continues it (finished parts are kept)"
    if getattr(args, "func", None) is cmd_bench:
        if args.suite == "headline":
            return ": headline runs in one go under its time budget; run it again with a new --out" if args.out else ""
        if not args.out:
            return ""
        if not Path(args.out).exists():  # stopped before anything was kept: the folder went with it
            return " before anything was kept: nothing to resume; the same command starts it again"
        flags = [f"--{f.replace('_', '-')}" for f in ("compile", "train_only", "unverified_data")
                 if getattr(args, f, False)]
        if args.seeds != 1:
            flags += ["--seeds", str(args.seeds)]
        if args.budget_k is not None:
            flags += ["--budget-k", repr(args.budget_k)]
        for name in ("only", "device", "data_dir", "dataset"):
            value = getattr(args, name, None)
            if value and not (name == "device" and value == "auto"):
                flags += [f"--{name.replace('_', '-')}", value]
        cmd = ["eae", "bench", args.suite, f"--out={args.out}", "--resume", *flags]
        return f": `{' '.join(quote(c) for c in cmd)}` continues it"
    if getattr(args, "func", None) is cmd_eval:  # reports are written whole at the end, never in part
        return " before the evaluation finished, so its report is not written: the same command runs it again"
    return ""


def _launcher() -> str:
    """How this process was started: ``eae``, or torchrun with its process count."""
    world, local = os.environ.get("WORLD_SIZE", "1"), os.environ.get("LOCAL_WORLD_SIZE")
    if world in ("", "1"):
        return "eae"
    if local == world:
        return f"torchrun --standalone --nproc_per_node {world} -m eae"
    return "torchrun (the same launch on every node) -m eae"


def _peer_lost(e: Exception) -> str | None:
    """Under torchrun, a collective that failed because another process ended (killed, or
    stopped by its own error, said on its own stderr) or lost its connection: no bug here."""
    import torch.distributed as tdist

    if _env_number("WORLD_SIZE", 1) <= 1:
        return None
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, tdist.DistError) or (isinstance(e, RuntimeError) and any(
            k in str(e) for k in ("Connection closed by peer", "Connection reset by peer", "gloo", "NCCL"))):
        return f"another process of this torchrun ended or lost its connection ({text[:200]}); this one stops too"
    return None


def _user_error(e: Exception) -> tuple[int | None, str]:
    """(exit status, message) of an error caused by the user's input or machine, else
    (None, '') for a bug."""
    from .checkpoint import RunLocked
    from .data import DatasetError
    from .models.external import user_code_failure
    from .models.library import MissingDependency
    from .trainer import RunSaveError, TrainingStopped

    from .errors import EaeError

    if isinstance(e, TrainingStopped):  # (an EaeError too: its status is its own)
        return 4, e.cli
    if isinstance(e, EaeError):
        return 2, e.cli
    if isinstance(e, RunSaveError):
        return 2, str(e)
    if isinstance(e, (FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return 2, str(e) if e.filename is None or str(e.filename) in str(e) else f"{e.strerror}: {e.filename}"
    if isinstance(e, OSError):  # permissions, disk full, name too long, ...
        where = f": {e.filename}" if e.filename else ""
        if e.errno == errno.ENAMETOOLONG:
            return 2, f"{e.strerror}{where} (a name in it is longer than the file system allows, usually 255 bytes: " \
                      "shorten it)"
        return 2, f"{e.strerror or e}{where} (check the path, its permissions and the free space)"
    peer = _peer_lost(e)
    if peer:
        return 2, peer
    user_code = user_code_failure(e)  # the user's --model failed mid-attack: theirs, however it failed
    if user_code:
        return 2, user_code
    if isinstance(e, (ValueError, RunLocked, DatasetError, MissingDependency)):
        return 2, str(e)
    return None, ""
