"""`eae bench headline`: the budget logic, the plan's arithmetic, the whole path at tiny
size on real CIFAR-10, and the lossless CIFAR-10 transfer."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from eae.bench.budget import Task, run_tasks
from eae.bench.headline import GPU, Planner, run_headline


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def task(self, name, est, took, needs=(), fail=False):
        def run():
            self.t += took
            if fail:
                raise RuntimeError(f"{name} broke")
            return name
        return Task(name, lambda: est, run, needs=needs)


def test_budget_runs_in_order_and_skips_what_does_not_fit():
    c = FakeClock()
    tasks = [c.task("a", 40, 50), c.task("b", 60, 10), c.task("c", 30, 30), c.task("d", 10, 5)]
    out = {o.name: o for o in run_tasks(tasks, 100, clock=c)}
    # a took 50 (more than planned); b needs 60 of the 50 left: skipped; c and d still fit
    assert [out[k].status for k in "abcd"] == ["done", "skipped", "done", "done"]
    assert "needs about 60 s, 50 s of the budget left" in out["b"].note
    assert c.t == 85


def test_budget_skips_dependents_and_survives_failures():
    c = FakeClock()
    tasks = [c.task("train", 10, 10, fail=True), c.task("eval", 1, 1, needs=("train",)), c.task("other", 1, 1)]
    out = {o.name: o for o in run_tasks(tasks, None, clock=c)}
    assert out["train"].status == "failed" and "train broke" in out["train"].note
    assert out["eval"].status == "skipped" and "needs train" in out["eval"].note
    assert out["other"].status == "done"


def test_budget_counts_from_the_given_start():
    c = FakeClock()
    c.t = 95.0  # start-up already spent 95 of 100 s
    out = run_tasks([c.task("a", 10, 1)], 100, clock=c, start=0.0)
    assert out[0].status == "skipped"


def test_gpu_plan_fits_nine_minutes_by_the_h100_figures():
    """The arithmetic of benchmarks/README.md: every part planned from the H100 figures
    fits the default budget of 510 s, itself under 9 minutes with start-up and report."""
    from eae.bench.headline import PLAN_STANDARD_EPOCH_S, plan_table

    p = Planner(GPU, GPU.speed_step_s)
    assert p._std_epoch_s() == pytest.approx(PLAN_STANDARD_EPOCH_S, rel=0.01)  # 96 steps of 512 (49,000 images)
    plan = dict(plan_table(GPU))
    assert len(plan) == 2 + 3 * 4 + 1 and sum(plan.values()) <= 510
    # not trivially small: AutoAttack on a robust model is planned at the reference's 85 s per 1,000
    assert plan["aa:eae"] >= 85 and plan["train:eae"] > 15 * PLAN_STANDARD_EPOCH_S * 2


@pytest.mark.slow
def test_tiny_headline_end_to_end(cifar_dir, tmp_path, capsys):
    out = tmp_path / "hl"
    res = run_headline(out, tiny=True, device="cpu", data_dir=str(cifar_dir.parent), quiet=True, budget=None)
    assert [s["status"] for s in res["smoke"]] == ["ok"] * len(res["smoke"]) and len(res["smoke"]) == 7
    assert {r["method"] for r in res["speed"]} == {"standard", "fgsm_rs", "n_fgsm", "eae", "eae_paper", "free", "pgd"}
    assert next(r for r in res["speed"] if r["method"] == "pgd")["x_standard"] > 1.5  # 3 attack steps cost
    runs = {r["method"]: r for r in res["runs"]}
    assert set(runs) == {"eae", "fgsm_rs", "eae_paper", "standard"}
    for r in runs.values():
        for k in ("clean", "cw20", "aa", "worst_case"):
            assert 0.0 <= r[k] <= 1.0
        # the worst case is per image of the AA subset, so it is bounded by CW-20 on that subset
        assert r["worst_case"] <= min(r["aa"], r["cw20_on_aa_subset"]) + 1e-9
        assert r["verdict"] in ("ok", "suspicious", "masked") and r["aa_n"] == 48 and r["test_size"] == 10000
    assert runs["fgsm_rs"]["cw20"] > runs["standard"]["cw20"]  # adversarial training buys robustness
    assert res["skipped"] == []
    saved = json.loads((out / "headline.json").read_text())
    assert saved["meta"]["device"].startswith("cpu") and saved["meta"]["commit"]
    report = (out / "REPORT.md").read_text()
    for section in ("## Accuracy and time", "## Speed", "## Smoke", "## Skipped or failed parts", "SUBSET"):
        assert section in report
    assert (out / "pareto.png").stat().st_size > 1000


def test_headline_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "mine.txt").write_text("a user's file")
    with pytest.raises(FileExistsError, match="not empty"):
        run_headline(tmp_path, tiny=True, device="cpu")
    assert (tmp_path / "mine.txt").read_text() == "a user's file"


# --------------------------------------------------------------------------- transfer
@pytest.fixture(scope="module")
def packed(cifar_dir, tmp_path_factory):
    from eae.data.transfer import pack

    out = tmp_path_factory.mktemp("parts")
    return pack(str(cifar_dir.parent), out, max_mib=40, effort=0, log=lambda *a: None)


def test_transfer_round_trip_is_lossless_and_verified(packed, tmp_path):
    from eae.data import load_cifar10
    from eae.data.transfer import unpack

    assert len(packed) == 3 and all(p.stat().st_size < 40 * 2**20 for p in packed)
    assert unpack(packed[:1], tmp_path, log=lambda *a: None) is False  # parts may come in separate commands
    assert unpack(packed[1:], tmp_path, log=lambda *a: None) is True
    arrays = load_cifar10(tmp_path / "cifar-10-batches-py")  # raises unless every hash matches
    assert arrays.train_x.shape == (50000, 3, 32, 32)


def test_transfer_refuses_damaged_or_foreign_parts(packed, tmp_path):
    from eae.data import DatasetError
    from eae.data.transfer import unpack

    blob = bytearray(packed[0].read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped bit inside a member
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(blob))
    with pytest.raises(DatasetError):
        unpack([bad], tmp_path / "c", log=lambda *a: None)
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(DatasetError, match="unexpected member"):
        unpack([evil], tmp_path / "c", log=lambda *a: None)
    assert not (tmp_path / "escape.txt").exists()


def test_transfer_never_overwrites_a_foreign_batch_file(packed, tmp_path):
    from eae.data.transfer import unpack

    dest = tmp_path / "cifar-10-batches-py"
    dest.mkdir()
    (dest / "data_batch_1").write_bytes(b"a user's file")
    with pytest.raises(FileExistsError, match="move it away"):
        unpack(packed[:1], tmp_path, log=lambda *a: None)
    assert (dest / "data_batch_1").read_bytes() == b"a user's file"


def test_grid_layout_is_invertible():
    from eae.data.transfer import from_grid, to_grid

    rows = np.random.default_rng(0).integers(0, 256, size=(10000, 3072), dtype=np.uint8)
    g = to_grid(rows)
    assert g.shape == (3200, 3200, 3)
    assert np.array_equal(g[32:64, 0:32], rows[100].reshape(3, 32, 32).transpose(1, 2, 0))  # tile (1, 0)
    assert np.array_equal(from_grid(g), rows)
