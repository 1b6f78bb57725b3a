"""The cost of one training step of each method relative to standard training, measured
side by side in one process: rounds alternate the methods (in a new random order each
round) on the same network and the same real CIFAR-10 batches, so that whatever else the
machine does slows every method alike, and the ratio of median step times is the cost.

A step is what ``eae train`` does per minibatch: the method's step under the run's precision
(bf16 autocast where the CPU has bf16 units, as ``--precision auto``), the backward pass and
the SGD update; channels_last as in training.

    PYTHONPATH=src EAE_DATA_DIR=/path/to/cifar10 python benchmarks/method_cost.py \\
        --out benchmarks/results/cpu-2core/method_cost

Writes OUT/method_cost.json and .md.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from eae.bench.runner import provenance  # noqa: E402
from eae.config import TrainConfig  # noqa: E402
from eae.data import DataSource, read_splits  # noqa: E402
from eae.methods import create_method  # noqa: E402
from eae.models import create_model  # noqa: E402
from eae.system import cpu_usage, describe_cpu, load_average, training_precision  # noqa: E402
from eae.training.epoch import _autocast  # noqa: E402

ENTRIES = {  # name: the config fields that make the method
    "standard": {"method": "standard"},
    "fgsm_rs": {"method": "fgsm_rs"},
    "n_fgsm": {"method": "n_fgsm"},
    "gradalign": {"method": "gradalign"},
    "fgsm_pgi": {"method": "fgsm_pgi"},
    "eae": {"method": "eae"},
    "eae0.1_on_gradalign": {"method": "eae", "eae_base": "gradalign"},
    "eae0.1_on_fgsm_pgi": {"method": "eae", "eae_base": "fgsm_pgi"},
}


def _one_step(method, model, opt, x, y, cfg, device) -> None:
    with _autocast(cfg.precision, device):
        out = method.step(model, x, y, 0)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()


def measure(arch: str, batch: int, rounds: int, steps: int, entries: list[str]) -> dict:
    device = torch.device("cpu")
    s = read_splits(DataSource(dataset="cifar10"), val_size=0)
    n = batch * steps
    images = s.train_x[:n].float().div(255).contiguous(memory_format=torch.channels_last)
    labels = s.train_y[:n].long()
    state = {}
    for name in entries:  # every method starts each round from the same weights
        cfg = TrainConfig(arch=arch, batch_size=batch, **ENTRIES[name])
        torch.manual_seed(0)
        model = create_model(arch, num_classes=10).to(memory_format=torch.channels_last).train()
        method = create_method(cfg)
        if method.per_example:
            method.setup_examples(n, (3, 32, 32), device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        state[name] = (cfg, model, method, opt)
        _run(state[name], images, labels, batch, 1, device)  # warm-up, not timed
    times: dict[str, list[float]] = {name: [] for name in entries}
    usage = []
    for r in range(rounds):
        order = random.Random(r).sample(entries, len(entries))
        for name in order:
            cpu0, t0 = time.process_time(), time.perf_counter()
            _run(state[name], images, labels, batch, steps, device)
            wall = time.perf_counter() - t0
            times[name].append(wall / steps)
            usage.append(cpu_usage(time.process_time() - cpu0) | {"wall": wall})
    base = statistics.median(times["standard"])
    rows = [{"entry": name, "median_step_seconds": statistics.median(t), "steps_timed": len(t) * steps,
             "relative_to_standard": statistics.median(t) / base} for name, t in times.items()]
    return {"arch": arch, "batch": batch, "rounds": rounds, "steps_per_round": steps,
            "precision": training_precision("auto", device), "rows": rows, "cpu_usage": usage}


def _run(st, images, labels, batch, steps, device) -> None:
    cfg, model, method, opt = st
    for i in range(steps):
        x, y = images[i * batch:(i + 1) * batch], labels[i * batch:(i + 1) * batch]
        if method.per_example:
            method.examples = (torch.arange(i * batch, (i + 1) * batch), 0, len(y))
        _one_step(method, model, opt, x, y, cfg, device)


def _markdown(result: dict) -> str:
    lines = [f"# Cost of a training step relative to standard training ({result['cpu']})", "",
             f"- command: `{result['command']}`", f"- torch {result['torch']}, commit {result['commit']}, "
             f"{result['date']}; load average at the start {result['load_at_start']}",
             "- side by side in one process: each round times every method once, in a new random order, "
             "on the same real CIFAR-10 batches; the ratio is of median step times (step, backward, SGD update)", ""]
    for m in result["measurements"]:
        lines += [f"## {m['arch']}, batch {m['batch']}, {m['precision']}, {m['rounds']} rounds x "
                  f"{m['steps_per_round']} steps", "", "| method | seconds per step (median) | relative to standard |",
                  "|---|---:|---:|"]
        lines += [f"| {r['entry']} | {r['median_step_seconds']:.3f} | {r['relative_to_standard']:.2f} |"
                  for r in m["rows"]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--archs", default="resnet_small:128,preact_resnet18:128", help="ARCH:BATCH,...")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--entries", default=",".join(ENTRIES))
    a = ap.parse_args()
    entries = a.entries.split(",")
    result = {**provenance(), "cpu": describe_cpu()["cpu"], "load_at_start": load_average(),
              "measurements": []}
    a.out.mkdir(parents=True, exist_ok=True)
    for spec in a.archs.split(","):
        arch, batch = spec.split(":")
        result["measurements"].append(measure(arch, int(batch), a.rounds, a.steps, entries))
        (a.out / "method_cost.json").write_text(json.dumps(result, indent=2) + "\n")
        (a.out / "method_cost.md").write_text(_markdown(result) + "\n")
        print(_markdown(result))


if __name__ == "__main__":
    main()
