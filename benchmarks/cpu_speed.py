"""Training speed of PreActResNet-18 on CIFAR-10 on this CPU.

1. The machine: its CPU, the cores this process may use, and the throughput of a 4096 x 4096
   matmul in fp32 and bf16 (the most a training step can hope for).
2. ``eae train`` for every method, fp32 and bf16 (autocast), eager and ``--compile``, on real
   CIFAR-10 batches of 512 with the ``cifar10`` recipe: two passes over the first
   ``--steps`` x 512 training images, the first not timed (warm-up, compilation); seconds per
   CIFAR-10 epoch = the timed pass's seconds per image x 49,000 (per epoch-equivalent for
   Free-AT). The FLOPs of one standard step (counted by ``torch.utils.flop_counter``) over its
   time give the share of the bf16 matmul throughput the step uses.
3. Side by side in one process, on the same images and the same initial network: our
   ``fgsm_rs`` (``eae train``'s loop with its defaults: precision auto, channels_last),
   IBM ART's ``AdversarialTrainerFBFPyTorch`` (the same algorithm), and a plain fp32 FGSM-RS
   loop written the usual way (NCHW, ``loss.backward()`` for the attack, as Wong et al.'s
   code). Rounds alternate (ours, ART, plain, ours, ...) so that drift hits all alike.

Every timing records the process's CPU seconds and the machine's load beside its wall time;
a timing whose CPU time is below 80% of wall time x threads did not get its cores and is
marked unreliable. ART is installed at benchmark time only:

    pip install --no-deps --target /tmp/art adversarial-robustness-toolbox==1.20.1 scikit-learn==1.5.2 \\
        scipy six tqdm joblib threadpoolctl cloudpickle
    PYTHONPATH=src:/tmp/art EAE_DATA_DIR=/path/to/cifar10 python benchmarks/cpu_speed.py \\
        --out benchmarks/results/cpu-2core/cpu_speed

Writes OUT/<cpu>.json and OUT/<cpu>.md (``<cpu>``: the CPU model, lower case), after every
measurement; ``--resume`` keeps the measurements already in the json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import eae  # noqa: E402
from eae.bench.runner import provenance  # noqa: E402
from eae.bench.suites import CIFAR10_PREACT18, METHODS  # noqa: E402
from eae.system import configure_threads, cpu_usage, describe_cpu, load_average  # noqa: E402

TRAIN_IMAGES = 49_000  # the cifar10 recipe's training split (1,000 held out)
BATCH = CIFAR10_PREACT18["batch_size"]
RELIABLE = 0.8  # CPU seconds / (wall seconds x threads) below this: the process did not get its cores
EXPENSIVE = ("pgd10", "trades", "free8")  # 8-11 network passes per minibatch: fewer minibatches per pass


class Timed:
    """Wall and process CPU seconds of a region, and the load it ran under."""

    def __enter__(self):
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.row = {"seconds": time.perf_counter() - self.wall0, **cpu_usage(time.process_time() - self.cpu0)}


def share_of_cores(t: dict[str, Any]) -> float:
    return t["cpu_seconds"] / (t["seconds"] * t["threads"])


# ----------------------------------------------------------------------------- the machine
def matmul_tflops(dtype: torch.dtype, n: int = 4096, reps: int = 5) -> float:
    """Best of ``reps`` n x n matmuls, in TFLOPS."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e12


def step_flops() -> float:
    """FLOPs of one standard training step (forward and backward) of PreActResNet-18 on one
    32 x 32 image (counted at batch 8; the count does not depend on the precision)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = eae.create_model("preact_resnet18", 10, (0.5,) * 3, (0.25,) * 3)
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(x), y).backward()
    return counter.get_total_flops() / 8


# ----------------------------------------------------------------------------- eae train
def eae_pass_seconds(entry, precision: str, compiled: bool, steps: int, workdir: str,
                     channels_last: bool = True) -> dict[str, Any]:
    """Two passes of ``eae train`` over the first ``steps`` x 512 images; the second, timed."""
    from eae.methods import create_method

    fields = {**CIFAR10_PREACT18, **entry.overrides, "train_subset": steps * BATCH, "val_size": 0,
              "val_attack_steps": 0, "precision": precision, "compile": compiled, "device": "cpu",
              "channels_last": channels_last,
              "out": os.path.join(workdir, f"{entry.name}-{precision}-{int(compiled)}-{int(channels_last)}")}
    cfg = eae.TrainConfig.from_dict(fields)
    m = create_method(cfg).replays
    res = eae.train(cfg.replace(epochs=2 * m), quiet=True)
    timed = res.metrics[-1]
    per_epoch = timed["seconds"] / (steps * BATCH) * TRAIN_IMAGES / m
    return {"entry": entry.name, "precision": precision, "compiled": compiled, "channels_last": channels_last,
            "steps": steps, "replays": m,
            "warmup_seconds": res.metrics[0]["seconds"], "pass": {k: timed[k] for k in
                                                                ("seconds", "cpu_seconds", "threads", "load")},
            "seconds_per_epoch": per_epoch}


# ----------------------------------------------------------------------------- side by side
def side_by_side_config(steps: int, workdir: str) -> "eae.TrainConfig":
    # no augmentation: ART's fit does none, nor does the plain loop
    return eae.TrainConfig.from_dict({**CIFAR10_PREACT18, "method": "fgsm_rs", "train_subset": steps * BATCH,
                                      "val_size": 0, "val_attack_steps": 0, "augment": False,
                                      "epochs": 1000, "device": "cpu", "out": os.path.join(workdir, "side")})


def side_by_side_images(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """The images ``eae train`` trains on under ``cfg``, as float NCHW in [0, 1]."""
    from eae.data import load_splits

    s = load_splits(cfg)
    return s.train_x.float().div(255).contiguous(), s.train_y.long()


def fresh_net():
    torch.manual_seed(0)  # the same initial weights for every trainer, as eae train draws them
    return eae.create_model("preact_resnet18", 10, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))


def ours_fgsm_rs(cfg) -> Callable[[], None]:
    """eae's training loop (``Run`` + ``train_epoch``, what ``eae train`` runs) with its
    defaults (precision auto, channels_last, eager): one epoch per call."""
    from eae.training import NonFiniteGuard, Run, train_epoch

    run, guard, epochs = Run(cfg, torch.device("cpu"), lambda *a: None), NonFiniteGuard("stop"), iter(range(1000))
    return lambda: train_epoch(run, next(epochs), guard)


def plain_fgsm_rs(x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255) -> Callable[[], None]:
    """FGSM-RS as it is usually written (after Wong et al.'s code), fp32, NCHW: one epoch per call."""
    net = fresh_net().train()
    opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-4)
    alpha = 1.25 * eps

    def run() -> None:
        for i in range(0, len(y), BATCH):
            xb, yb = x[i:i + BATCH], y[i:i + BATCH]
            delta = torch.empty_like(xb).uniform_(-eps, eps)
            delta.data = torch.max(torch.min(delta, 1 - xb), -xb)
            delta.requires_grad = True
            F.cross_entropy(net(xb + delta), yb).backward()
            delta.data = torch.clamp(delta + alpha * delta.grad.sign(), -eps, eps)
            delta.data = torch.max(torch.min(delta, 1 - xb), -xb)
            loss = F.cross_entropy(net(xb + delta.detach()), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return run


def art_fbf(x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255) -> Callable[[], None]:
    """IBM ART's AdversarialTrainerFBFPyTorch (defaults; fp32, no apex): one epoch per call."""
    from art.defences.trainer import AdversarialTrainerFBFPyTorch
    from art.estimators.classification import PyTorchClassifier

    net = fresh_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-4)
    clf = PyTorchClassifier(model=net, loss=torch.nn.CrossEntropyLoss(), optimizer=opt, input_shape=(3, 32, 32),
                            nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    trainer = AdversarialTrainerFBFPyTorch(clf, eps=eps)
    xn, yn = x.numpy(), np.eye(10, dtype=np.float32)[y.numpy()]
    return lambda: trainer.fit(xn, yn, batch_size=BATCH, nb_epochs=1)


def side_by_side(steps: int, rounds: int, workdir: str, with_art: bool) -> dict[str, Any]:
    """Seconds per epoch of the three trainers, alternating, after one warm-up epoch each."""
    cfg = side_by_side_config(steps, workdir)
    x, y = side_by_side_images(cfg)
    ours = f"eae fgsm_rs (defaults: {'bf16 autocast' if _bf16() else 'fp32'}, channels_last)"
    trainers = {ours: ours_fgsm_rs(cfg), "plain fp32 FGSM-RS loop": plain_fgsm_rs(x, y)}
    if with_art:
        trainers["IBM ART AdversarialTrainerFBFPyTorch"] = art_fbf(x, y)
    for fit in trainers.values():
        fit()  # warm-up (and compilation)
    times: dict[str, list[dict[str, Any]]] = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, fit in trainers.items():
            with Timed() as t:
                fit()
            times[name].append(t.row)
    out = {}
    for name, rows in times.items():
        best = min(rows, key=lambda r: r["seconds"])
        out[name] = {"rounds": rows, "best_seconds": best["seconds"],
                     "seconds_per_epoch": best["seconds"] / len(y) * TRAIN_IMAGES,
                     "reliable": all(share_of_cores(r) >= RELIABLE for r in rows)}
    return {"images": len(y), "rounds": rounds, "trainers": out}


def _bf16() -> bool:
    from eae.system import training_precision

    return training_precision("auto", torch.device("cpu")) == "bf16"


# ----------------------------------------------------------------------------- driver
def cpu_slug() -> str:
    return re.sub(r"[^a-z0-9]+", "-", describe_cpu()["cpu"].lower()).strip("-") or "cpu"


def grid(a) -> list[tuple[Any, str, bool]]:
    wanted = [e for e in METHODS if not a.methods or e.name in a.methods.split(",")]
    return [(e, p, c) for e in wanted for p in a.precisions.split(",") for c in (False, True)]


def run(a) -> None:
    configure_threads()
    path = Path(a.out) / f"{cpu_slug()}.json"
    res: dict[str, Any] = json.loads(path.read_text()) if a.resume and path.is_file() else {}
    res.update(machine={**describe_cpu(), "load_at_start": load_average()}, **provenance())
    save = lambda: _write(path, res)  # noqa: E731
    if "matmul_tflops" not in res:
        res["matmul_tflops"] = {"fp32": matmul_tflops(torch.float32), "bf16": matmul_tflops(torch.bfloat16)}
        res["step_gflop_per_image"] = step_flops() / 1e9
        save()
    res.setdefault("train", [])
    done = {(r["entry"], r["precision"], r["compiled"]) for r in res["train"]}
    with tempfile.TemporaryDirectory() as work:
        for entry, precision, compiled in grid(a):
            if (entry.name, precision, compiled) in done:
                continue
            steps = a.steps_expensive if entry.name in EXPENSIVE else a.steps
            print(f"{entry.name} {precision} {'compiled' if compiled else 'eager'}: {steps} steps x 2", flush=True)
            res["train"].append(eae_pass_seconds(entry, precision, compiled, steps, work))
            save()
        if a.memory_format and "memory_format" not in res:
            standard = next(e for e in METHODS if e.name == "standard")
            res["memory_format"] = [eae_pass_seconds(standard, p, False, a.steps, work, channels_last=cl)
                                    for p in a.precisions.split(",") for cl in (False, True)]
            save()
        if a.rounds and "side_by_side" not in res:
            res["side_by_side"] = side_by_side(a.steps, a.rounds, work, not a.no_art)
            save()


def _write(path: Path, res: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")
    path.with_suffix(".md").write_text(report(res))


# ----------------------------------------------------------------------------- report
def _cell(rows: dict, key) -> str:
    r = rows.get(key)
    if r is None:
        return "-"
    flag = "" if share_of_cores(r["pass"]) >= RELIABLE else " (unreliable)"
    return f"{r['seconds_per_epoch']:,.0f}{flag}"


def _utilisation(res: dict[str, Any], rows: dict) -> str:
    std = rows.get(("standard", "bf16", False)) or rows.get(("standard", "bf16", True))
    if std is None or "matmul_tflops" not in res:
        return ""
    flops = TRAIN_IMAGES / std["seconds_per_epoch"] * res["step_gflop_per_image"] * 1e9
    peak = res["matmul_tflops"]["bf16"] * 1e12
    return (f"A standard bf16 step ({'compiled' if std['compiled'] else 'eager'}) computes "
            f"{flops / 1e12:.3f} TFLOPS: {100 * flops / peak:.0f}% of the bf16 matmul throughput.\n")


def report(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = ["# Training speed on the CPU: PreActResNet-18, CIFAR-10", "",
             f"Machine: {m['cpu']} ({m['cores_available']} cores available to the process, {m['threads']} torch "
             f"threads; native bf16: {', '.join(m['cpu_bf16_units']) or 'none'}; torch CPU capability "
             f"{m['cpu_capability']}). torch {res['torch']}, Python {res['python']}, commit {res['commit']}, "
             f"{res['date']}. Command: `{res['command']}`.", ""]
    if "matmul_tflops" in res:
        mm = res["matmul_tflops"]
        lines += [f"4096 x 4096 matmul: fp32 {mm['fp32']:.3f} TFLOPS, bf16 {mm['bf16']:.3f} TFLOPS. One training "
                  f"step (forward and backward, counted by torch.utils.flop_counter): "
                  f"{res['step_gflop_per_image']:.2f} GFLOP per image.", ""]
    rows = {(r["entry"], r["precision"], r["compiled"]): r for r in res.get("train", [])}
    if rows:
        lines += ["## `eae train`: seconds per CIFAR-10 epoch", "",
                  "49,000 images, batch 512, the `cifar10` recipe; each cell from one timed pass of a few steps on "
                  "real CIFAR-10 batches after a warm-up pass (seconds per image x 49,000; Free-AT: per "
                  "epoch-equivalent). A pass carries a fixed start-up cost, so a pass of few steps overstates "
                  "the seconds per epoch a little: compare rows with the same steps per pass. \"unreliable\": the "
                  "process got less than 80% of its cores.", "",
                  "| method | fp32 eager | fp32 compiled | bf16 eager | bf16 compiled | x standard (bf16 eager) "
                  "| steps per pass |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        base = rows.get(("standard", "bf16", False))
        for name in dict.fromkeys(r[0] for r in rows):
            cells = [_cell(rows, (name, p, c)) for p in ("fp32", "bf16") for c in (False, True)]
            mine = rows.get((name, "bf16", False))
            ratio = f"{mine['seconds_per_epoch'] / base['seconds_per_epoch']:.2f}" if mine and base else "-"
            steps = sorted({r["steps"] for k, r in rows.items() if k[0] == name})
            lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {ratio} | {'/'.join(map(str, steps))} |")
        lines += ["", _utilisation(res, rows)]
    if "memory_format" in res:
        lines += ["## Memory format", "", "`standard`, eager, seconds per epoch as above:", "",
                  "| precision | contiguous (NCHW) | channels_last |", "|---|---:|---:|"]
        mf = {(r["precision"], r["channels_last"]): r for r in res["memory_format"]}
        for p in dict.fromkeys(r["precision"] for r in res["memory_format"]):
            lines.append(f"| {p} | " + " | ".join(f"{mf[(p, cl)]['seconds_per_epoch']:,.0f}" if (p, cl) in mf else "-"
                                                 for cl in (False, True)) + " |")
        lines.append("")
    if "side_by_side" in res:
        lines += _side_report(res["side_by_side"])
    return "\n".join(lines) + "\n"


def _side_report(side: dict[str, Any]) -> list[str]:
    t = side["trainers"]
    ours = next(v for k, v in t.items() if k.startswith("eae"))
    lines = ["## FGSM-RS side by side, one process", "",
             f"The same {side['images']:,} CIFAR-10 training images (no augmentation) and the same initial "
             f"PreActResNet-18, batch 512; one warm-up epoch each, then {side['rounds']} alternating rounds; "
             "the best round, as seconds per 49,000-image epoch.", "",
             "| trainer | seconds per epoch | time / ours | reliable |", "|---|---:|---:|---|"]
    for name, v in t.items():
        lines.append(f"| {name} | {v['seconds_per_epoch']:,.0f} | {v['best_seconds'] / ours['best_seconds']:.2f} | "
                     f"{'yes' if v['reliable'] else 'no: the process did not get its cores'} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for <cpu>.json and <cpu>.md")
    p.add_argument("--methods", default="", help="comma-separated entries of the cifar10 suite (default: all)")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--steps", type=int, default=2, help="steps of 512 images per timed pass")
    p.add_argument("--steps-expensive", type=int, default=1, help="the same for pgd10, trades and free8")
    p.add_argument("--rounds", type=int, default=2, help="side-by-side rounds (0: none)")
    p.add_argument("--no-art", action="store_true", help="side by side without ART")
    p.add_argument("--memory-format", action="store_true",
                   help="also time standard training (eager) with and without channels_last")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--report", action="store_true", help="only rewrite OUT/<cpu>.md from OUT/<cpu>.json")
    a = p.parse_args(argv)
    if a.report:
        path = Path(a.out) / f"{cpu_slug()}.json"
        path.with_suffix(".md").write_text(report(json.loads(path.read_text())))
        return
    run(a)


if __name__ == "__main__":
    main()
