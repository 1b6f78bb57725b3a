"""CPU time of APGD-T, ours against the official (pyautoattack), on the clean-correct points
among the first N test images of a trained run: one torch thread, process CPU time (the
work done; still inflated by other jobs on a shared machine, so the two alternate over
``--repeats`` rounds and the least time of each is the figure), and the robust count of each.

    pip install --no-deps pyautoattack==0.2.0
    EAE_DATA_DIR=/path/to/cifar10 PYTHONPATH=src python benchmarks/apgdt_cpu_time.py runs/eae_paper --n 300
"""
from __future__ import annotations

import argparse
import time

import torch

import eae
from eae.attacks import build_attack
from eae.checkpoint import read_config
from eae.data import load_test_set


def timed(attack, model, x, y) -> tuple[int, float]:
    start = time.process_time()
    x_adv = attack(x, y)
    seconds = time.process_time() - start
    with torch.no_grad():
        return int((model(x_adv).argmax(1) == y).sum()), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from pyautoattack.autopgd_base import APGDAttack_targeted

    torch.set_num_threads(1)
    model = eae.load(args.run).eval()
    x, y = load_test_set(read_config(args.run), args.n)
    x, y = x.float() / 255, y.long()
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x, y = x[correct], y[correct]
    ref = APGDAttack_targeted(model, n_restarts=1, n_iter=100, eps=args.eps, norm="Linf", seed=0, device="cpu",
                              n_target_classes=9)
    ours = build_attack("apgd-t", args.eps)
    best: dict[str, float] = {}
    for r in range(args.repeats):
        torch.manual_seed(r)
        for name, attack in (("official", ref.perturb), ("eae", lambda a, b: ours(model, a, b))):
            robust, seconds = timed(attack, model, x, y)
            best[name] = min(seconds, best.get(name, seconds))
            print(f"round {r}: {name:>8} APGD-T {robust}/{len(y)} robust, {seconds:.1f} s CPU", flush=True)
    print(f"least CPU time over {args.repeats} rounds on {len(y)} points: official {best['official']:.1f} s, "
          f"eae {best['eae']:.1f} s ({best['eae'] / best['official']:.2f} x)")


if __name__ == "__main__":
    main()
