"""The pure logic of benchmarks/training_equivalence.py: statistics, the equivalence
rule, the schedule matching and the report. ART is not needed (its parts are skipped
when it is not installed)."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def te():
    spec = importlib.util.spec_from_file_location("training_equivalence", ROOT / "benchmarks" / "training_equivalence.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["training_equivalence"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_summarize(te):
    s = te.summarize([1.0, 2.0, 3.0, 4.0])
    assert s["n"] == 4 and s["mean"] == 2.5
    assert s["std"] == pytest.approx(math.sqrt(5 / 3))  # n - 1
    assert s["se"] == pytest.approx(math.sqrt(5 / 3) / 2)
    one = te.summarize([0.7])
    assert one["std"] == 0 and one["se"] == 0
    assert math.isnan(te.summarize([])["mean"])


def test_compare_rule(te):
    c = te.compare([0.50, 0.52, 0.48, 0.51, 0.49], [0.50, 0.51, 0.49, 0.52, 0.48])
    assert c["diff"] == pytest.approx(0.0, abs=1e-12) and c["equivalent"]
    se = math.sqrt(te.summarize([0.50, 0.52, 0.48, 0.51, 0.49])["se"] ** 2 * 2)
    assert c["se_diff"] == pytest.approx(se)
    far = te.compare([0.50, 0.52, 0.48, 0.51, 0.49], [0.30, 0.31, 0.29, 0.32, 0.28])
    assert not far["equivalent"] and far["diff"] == pytest.approx(0.2) and far["z"] > 2
    # the boundary is strict: |diff| must be below 2 SE
    a, b = [0.0, 2.0], [0.0, 0.0]  # mean 1 vs 0; se_a = 1, se_b = 0: z = 1
    assert te.compare(a, b)["equivalent"] and not te.compare(a, b, k=1.0)["equivalent"]
    assert te.compare([0.3, 0.3], [0.3, 0.3])["equivalent"]  # no spread, same mean
    assert not te.compare([0.3, 0.3], [0.4, 0.4])["equivalent"]


def test_schedules_match(te):
    assert te.onecycle_ok(10) and te.onecycle_ok(5) and not te.onecycle_ok(12)
    fracs, epochs = te.trades_milestones(10)
    assert epochs == (5, 8) and fracs == (0.5, 0.8)
    assert te.trades_milestones(4) == ((0.5, 0.75), (2, 3))
    # eae's per-step piecewise factor drops on the first step of the milestone epoch, as an
    # epoch-level MultiStepLR does
    from eae.config import TrainConfig
    from eae.training.run import lr_factor

    cfg = TrainConfig(lr_schedule="piecewise", lr_milestones=fracs)
    steps_per_epoch = 7
    f = lr_factor(cfg, 10 * steps_per_epoch)
    per_epoch = [f(e * steps_per_epoch + i) for e in range(10) for i in range(steps_per_epoch)]
    want = [0.1 ** sum(e >= m for m in epochs) for e in range(10) for _ in range(steps_per_epoch)]
    assert per_epoch == pytest.approx(want)


def test_onecycle_is_arts_fbf_triangle(te):
    """ART's FBF LR: np.interp(t, [0, epochs * 2 // 5, epochs], [0, 0.21, 0]) at t = epoch +
    (batch + 1) / batches; eae's onecycle with lr_peak_frac 0.4, lr_max 0.21 on 5 | epochs."""
    import numpy as np

    from eae.config import TrainConfig
    from eae.training.run import lr_factor

    epochs, batches = 10, 13
    cfg = TrainConfig(lr_schedule="onecycle", lr_peak_frac=0.4, lr_max=te.FBF_PEAK_LR)
    f = lr_factor(cfg, epochs * batches)
    ours = [te.FBF_PEAK_LR * f(e * batches + b) for e in range(epochs) for b in range(batches)]
    art = [np.interp([e + (b + 1) / batches], [0, epochs * 2 // 5, epochs], [0, 0.21, 0])[0]
           for e in range(epochs) for b in range(batches)]
    assert ours == pytest.approx(art, abs=1e-12)


def _run(method, impl, seed, clean, cw, aa):
    return {"method": method, "impl": impl, "seed": seed, "clean": clean, "cw20": cw, "aa": aa,
            "train_wall_seconds": 10.0 + seed}


def test_summary_and_markdown(te):
    runs = [_run("fgsm_rs", impl, s, 0.4 + 0.01 * s, 0.2, 0.18) for impl in ("eae", "art") for s in range(3)]
    runs.append(_run("trades", "eae", 0, 0.4, 0.2, 0.1))  # no ART run yet: not summarised
    summary = te.summarise_runs(runs)
    assert set(summary) == {"fgsm_rs"}
    assert summary["fgsm_rs"]["clean"]["equivalent"] and summary["fgsm_rs"]["clean"]["ours"]["n"] == 3
    settings = {"arch": "convnet_nobn", "train_n": 100, "split_seed": 0, "epochs": 5, "batch_size": 32,
                "weight_decay": 5e-4, "eps": 8 / 255, "eps_text": "8/255", "trades_steps": 3,
                "trades_alpha": 0.026, "trades_alpha_text": "6.667/255", "trades_beta": 6.0, "trades_lr": 0.1,
                "trades_drop_epochs": [2, 4], "seeds": [0, 1, 2], "eval_n": 100, "aa_n": 50, "aa_suite": "aa"}
    doc = {"header": {"command": "x", "machine": "m", "versions": {"eae": "0"}, "settings": settings,
                      "init_identical": True}, "runs": runs, "summary": summary}
    md = te.to_markdown(doc)
    assert "## fgsm_rs" in md and "| clean |" in md and "Not matched:" in md and "## trades" not in md
    # the control (ART's FBF without gradient clipping) is summarised on its own, against eae
    runs += [_run("fgsm_rs", "art_noclip", s, 0.3, 0.2, 0.18) for s in range(3)]
    summary = te.summarise_runs(runs)
    assert set(summary) == {"fgsm_rs", "fgsm_rs:art_noclip"}
    assert not summary["fgsm_rs:art_noclip"]["clean"]["equivalent"]
    assert summary["fgsm_rs:art_noclip"]["clean"]["theirs"]["mean"] == pytest.approx(0.3)
    md = te.to_markdown({**doc, "runs": runs, "summary": summary})
    assert "## fgsm_rs: control `art_noclip` (eae vs art_noclip)" in md


def test_only_paired_seeds_are_compared(te):
    runs = [_run("fgsm_rs", "eae", s, 0.4, 0.2, 0.1) for s in range(4)]
    runs += [_run("fgsm_rs", "art", s, 0.4 + 0.1 * (s >= 2), 0.2, 0.1) for s in range(2, 6)]
    c = te.summarise_runs(runs, ("fgsm_rs",))["fgsm_rs"]["clean"]
    assert c["ours"]["n"] == c["theirs"]["n"] == 2  # seeds 2 and 3
    assert c["theirs"]["mean"] == pytest.approx(0.5)


def test_art_present_when_installed():
    pytest.importorskip("art")
    from art.defences.trainer import AdversarialTrainerFBFPyTorch, AdversarialTrainerTRADESPyTorch  # noqa: F401
