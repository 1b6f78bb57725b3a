"""The pure logic of benchmarks/cpu_speed.py and benchmarks/precision_parity.py: the
reliability rule, the per-epoch arithmetic, the reports, and the bf16 / fp32 comparison."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # precision_parity imports training_equivalence
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.fixture(scope="module")
def speed():
    return _load("cpu_speed")


@pytest.fixture(scope="module")
def parity():
    return _load("precision_parity")


def _train_row(entry, precision, compiled, per_epoch, cpu_share=0.95):
    return {"entry": entry, "precision": precision, "compiled": compiled, "steps": 4, "replays": 1,
            "warmup_seconds": 50.0, "seconds_per_epoch": per_epoch,
            "pass": {"seconds": 40.0, "cpu_seconds": 80.0 * cpu_share, "threads": 2, "load": 2.0}}


def test_speed_report_marks_a_timing_without_its_cores(speed):
    res = {"machine": {"cpu": "Some CPU", "cores_available": 2, "threads": 2, "cpu_bf16_units": ["avx512_bf16"],
                       "cpu_capability": "AVX512"},
           "torch": "2.x", "python": "3.11", "commit": "abc", "date": "today", "command": "cpu_speed.py",
           "matmul_tflops": {"fp32": 0.15, "bf16": 0.4}, "step_gflop_per_image": 3.3,
           "train": [_train_row("standard", "bf16", False, 490.0), _train_row("standard", "fp32", False, 980.0),
                     _train_row("fgsm_rs", "bf16", False, 900.0, cpu_share=0.5)],
           "side_by_side": {"images": 2048, "rounds": 2, "trainers": {
               "eae fgsm_rs (compiled)": {"best_seconds": 10.0, "seconds_per_epoch": 240.0, "reliable": True},
               "plain fp32 FGSM-RS loop": {"best_seconds": 30.0, "seconds_per_epoch": 720.0, "reliable": False}}}}
    md = speed.report(res)
    assert "| `standard` | 980 | - | 490 | - | 1.00 | 4 |" in md
    assert "900 (unreliable)" in md and "| 1.84 | 4 |" in md
    # 49,000 / 490 s x 3.3 GFLOP = 0.33 TFLOPS = 82.5% of 0.4
    assert "computes 0.330 TFLOPS: 82% of the bf16 matmul throughput" in md
    assert "| plain fp32 FGSM-RS loop | 720 | 3.00 | no: the process did not get its cores |" in md
    assert speed.share_of_cores(res["train"][2]["pass"]) == pytest.approx(0.5)


def test_the_grid_is_every_method_precision_and_compile(speed):
    class A:
        methods, precisions = "standard,fgsm_rs", "fp32,bf16"

    g = speed.grid(A)
    assert len(g) == 8 and {(e.name, p, c) for e, p, c in g} >= {("fgsm_rs", "bf16", True), ("standard", "fp32", False)}


def _bench_row(entry, seed, clean, cw, aa, secs=100.0):
    return {"entry": entry, "seed": seed, "clean": clean, "cw20": cw, "aa": aa, "train_seconds": secs}


def test_parity_compares_bf16_with_fp32_per_method_and_metric(parity):
    rows = [_bench_row("fgsm_rs_fp32", s, 0.42 + 0.01 * s, 0.23, 0.22) for s in range(3)]
    rows += [_bench_row("fgsm_rs_bf16", s, 0.43 + 0.01 * s, 0.23 + 0.002 * s, 0.22) for s in range(3)]
    rows += [_bench_row("eae_fp32", s, 0.42 + 0.001 * s, 0.25 + 0.001 * s, 0.24) for s in range(3)]
    rows += [_bench_row("eae_bf16", s, 0.30 + 0.001 * s, 0.25 + 0.001 * s, 0.24) for s in range(3)]
    out = parity.parity(rows)
    assert out["fgsm_rs"]["clean"]["equivalent"] and out["fgsm_rs"]["clean"]["diff"] == pytest.approx(0.01)
    assert not out["eae"]["clean"]["equivalent"]  # 12 points apart with almost no spread
    assert out["eae"]["aa"]["equivalent"]  # identical: zero difference, zero spread
    assert out["fgsm_rs"]["seeds"] == {"bf16": [0, 1, 2], "fp32": [0, 1, 2]}
    doc = {"bench": {"suite": "precision-parity-cpu", "description": "d", "torch": "t", "commit": "c",
                     "date": "now", "command": "eae bench"}, "machine": "Some CPU", "rows": rows, "parity": out}
    md = parity.to_markdown(doc)
    assert "| `eae` | clean |" in md and "| no |" in md and "`fgsm_rs_bf16` seed 2" in md
