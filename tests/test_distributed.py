"""Multi-process training and evaluation: torchrun with the gloo backend on the CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from eae.checkpoint import load_checkpoint
from eae.data import DeviceLoader

REPO = Path(__file__).resolve().parents[1]
TINY = ["--device", "cpu", "--dataset", "synthetic", "--synthetic-train-size", "512", "--synthetic-test-size", "128",
        "--synthetic-image-size", "16", "--val-size", "64", "--val-attack-steps", "1", "--quiet"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    env.pop("WORLD_SIZE", None)
    return env


def torchrun(*args: str, nproc: int = 2, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def single(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "eae", *args], env=_env(), check=True, capture_output=True, timeout=600)


def max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


def test_loader_shards_are_the_single_process_batches():
    x = torch.randint(0, 256, (103, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(103)
    one = DeviceLoader(x, y, 20, shuffle=True, augment=True, seed=3)
    parts = [DeviceLoader(x, y, 20, shuffle=True, augment=True, seed=3, rank=r, world_size=3) for r in range(3)]
    for (bx, by), *shards in zip(one, *parts):
        assert torch.equal(torch.cat([s[1] for s in shards]), by)  # the same images, in rank order
        assert torch.equal(torch.cat([s[0] for s in shards]), bx)  # and the same crops and flips
    assert len(one) == len(parts[0]) == 6


def test_loader_drops_a_final_batch_smaller_than_the_world():
    x, y = torch.zeros(41, 3, 4, 4, dtype=torch.uint8), torch.arange(41)
    assert len(DeviceLoader(x, y, 20, world_size=2)) == 2  # last batch of 1 image for 2 ranks
    assert len(DeviceLoader(x, y, 20, world_size=1)) == 3
    with pytest.raises(ValueError, match="global batch"):
        DeviceLoader(x, y, 1, world_size=2)


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    # BatchNorm-free net: per-rank BN statistics would differ by design. Global batch 45
    # splits 23/22 (and the last, 43, 22/21): the reweighting of uneven shares is tested too.
    # fp32: bf16 autocast (auto on CPUs with bf16 units) rounds the two sums differently
    args = [*TINY, "--arch", "convnet_nobn", "--method", "standard", "--epochs", "2", "--batch-size", "45",
            "--lr-max", "0.05", "--precision", "fp32"]
    torchrun("-m", "eae", "train", *args, "--out", str(tmp_path / "ddp"))
    single("train", *args, "--out", str(tmp_path / "one"))
    assert max_diff(tmp_path / "ddp", tmp_path / "one") < 1e-5
    w = load_file(str(tmp_path / "one" / "model.safetensors"))
    assert max(v.abs().max().item() for v in w.values()) > 0.1  # trained weights, not a trivial match
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rows, ref):  # metrics reduced across ranks: the same epoch averages
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=1e-6)
        assert a["val_clean"] == b["val_clean"]
    env = json.loads((tmp_path / "ddp" / "environment.json").read_text())
    assert env["world_size"] == 2 and env["backend"] == "gloo"


def test_resume_under_ddp_is_exact(tmp_path):
    # random starts and BatchNorm: every rank's RNG comes back from the checkpoint
    args = [*TINY, "--arch", "resnet_small", "--method", "fgsm_rs", "--epochs", "2", "--batch-size", "64"]
    torchrun("-m", "eae", "train", *args, "--out", str(tmp_path / "full"))
    torchrun("-m", "eae", "train", *args, "--out", str(tmp_path / "cut"), "--stop-after", "1")
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert len(ckpt["ranks"]) == 2 and not torch.equal(ckpt["ranks"][0]["rng"]["torch"], ckpt["ranks"][1]["rng"]["torch"])
    torchrun("-m", "eae", "train", *args, "--out", str(tmp_path / "cut"), "--resume")
    assert max_diff(tmp_path / "full", tmp_path / "cut") == 0.0


def test_prior_guided_fgsm_under_two_processes_matches_one(tmp_path):
    # per-image priors and momenta: each rank updates its slice, all ranks hold every image's
    args = [*TINY, "--arch", "convnet_nobn", "--method", "fgsm_pgi", "--epochs", "2", "--batch-size", "45",
            "--lr-max", "0.05", "--precision", "fp32"]
    torchrun("-m", "eae", "train", *args, "--out", str(tmp_path / "ddp"))
    single("train", *args, "--out", str(tmp_path / "one"))
    assert max_diff(tmp_path / "ddp", tmp_path / "one") < 1e-5
    a, b = (load_checkpoint(tmp_path / r / "checkpoint.pt")["examples"] for r in ("ddp", "one"))
    # the weights differ by rounding, so a sign of a momentum within rounding of 0 may flip: all but a
    # few pixels agree (rows left unshared would differ on about half the images)
    assert a["delta"].abs().max() > 0 and ((a["delta"] - b["delta"]).abs() > 1e-6).float().mean() < 0.01
    assert ((a["momentum"] - b["momentum"]).abs() > 1e-3 * b["momentum"].abs().max()).float().mean() < 0.01


def test_every_method_trains_and_evaluates_under_torchrun(tmp_path):
    script = tmp_path / "all_methods.py"
    script.write_text(
        "import sys\n"
        "from eae import distributed as dist\n"
        "from eae.config import TrainConfig, own_settings\n"
        "from eae.methods import list_methods\n"
        "from eae.trainer import train\n"
        "out = sys.argv[1]\n"
        "for m in list_methods():\n"
        "    cfg = TrainConfig(out=f'{out}/{m}', method=m, dataset='synthetic', arch='resnet_small', device='cpu',\n"
        "                      synthetic_train_size=256, synthetic_test_size=64, synthetic_image_size=16,\n"
        "                      val_size=64, batch_size=64, epochs=2, val_attack_steps=1,\n"
        "                      **own_settings(dict(free_replays=2, pgd_steps=2, trades_steps=2), m))\n"
        "    train(cfg, quiet=True)\n"
        "dist.shutdown()\n")
    torchrun(str(script), str(tmp_path / "runs"))
    from eae.methods import list_methods

    for m in list_methods():
        run = tmp_path / "runs" / m
        assert (run / "model.safetensors").is_file(), m
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == (1 if m == "free" else 2) and all(r["train_loss"] == r["train_loss"] for r in rows)

    # evaluation under torchrun: each rank attacks half of the points; the report covers all
    run = tmp_path / "runs" / "standard"
    torchrun("-m", "eae", "eval", str(run), "--attacks", "clean,pgd3", "--diagnostics", "cheap",
             "--device", "cpu", "--output", str(tmp_path / "ddp_eval.json"), "--quiet")
    single("eval", str(run), "--attacks", "clean,pgd3", "--diagnostics", "off", "--device", "cpu",
           "--output", str(tmp_path / "one_eval.json"), "--quiet")
    a = json.loads((tmp_path / "ddp_eval.json").read_text())
    b = json.loads((tmp_path / "one_eval.json").read_text())
    assert a["n"] == b["n"] == 64 and a["clean_accuracy"] == b["clean_accuracy"]
    assert a["per_attack"]["pgd3"]["n_attacked"] == b["per_attack"]["pgd3"]["n_attacked"]
    assert "2 processes" in a["device"] and a["verdict"] != "not run"


def test_nan_on_one_rank_is_handled_by_all(tmp_path):
    # a NaN batch on rank 1 only: with skip both ranks skip the step (identical weights go on),
    # with stop both ranks stop (none is left waiting in a collective)
    script = tmp_path / "nan_rank1.py"
    script.write_text(
        "import sys, torch\n"
        "from eae import distributed as dist\n"
        "from eae.config import TrainConfig, own_settings\n"
        "from eae.data import DeviceLoader\n"
        "from eae.trainer import TrainingStopped, train\n"
        "real = DeviceLoader.__iter__\n"
        "def poisoned(self):\n"
        "    for i, (x, y) in enumerate(real(self)):\n"
        "        if i == 1 and self.rank == 1:\n"
        "            x = x.clone(); x[0, 0, 0, 0] = float('nan')\n"
        "        yield x, y\n"
        "DeviceLoader.__iter__ = poisoned\n"
        "out = sys.argv[1]\n"
        "base = dict(method='standard', dataset='synthetic', arch='resnet_small', device='cpu',\n"
        "            synthetic_train_size=256, synthetic_test_size=64, synthetic_image_size=16, val_size=64,\n"
        "            batch_size=64, epochs=1, val_attack_steps=1, precision='fp32')\n"
        "res = train(TrainConfig(out=out + '/skip', nonfinite='skip', **base), quiet=True)\n"
        "open(f'{out}/skipped_{dist.rank()}', 'w').write(str(res.metrics[-1]['skipped_steps']))\n"
        "try:\n"
        "    train(TrainConfig(out=out + '/stop', **base), quiet=True)\n"
        "except TrainingStopped:\n"
        "    open(f'{out}/stopped_{dist.rank()}', 'w').close()\n"
        "dist.shutdown()\n")
    torchrun(str(script), str(tmp_path / "runs"))
    assert [(tmp_path / "runs" / f"skipped_{r}").read_text() for r in range(2)] == ["1", "1"]
    assert (tmp_path / "runs" / "stopped_0").exists() and (tmp_path / "runs" / "stopped_1").exists()
    assert all(torch.isfinite(v).all() for v in load_file(str(tmp_path / "runs" / "skip" / "model.safetensors")).values())


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path):
    res = torchrun("-m", "eae", "train", *TINY, "--arch", "resnet_small", "--epochs", "1", "--sync-bn",
                   "--out", str(tmp_path / "r"), check=False)
    assert res.returncode != 0 and "sync_bn needs CUDA" in res.stderr


def test_fewer_training_images_than_processes_is_one_line_not_a_crash(tmp_path):
    res = torchrun("-m", "eae", "train", *TINY, "--arch", "resnet_small", "--train-subset", "1", "--val-size", "8",
                   "--out", str(tmp_path / "r"), check=False)
    assert res.returncode != 0 and "1 training image(s) for 2 processes" in res.stderr
    assert "ZeroDivisionError" not in res.stderr and "internal error" not in res.stderr
    assert not (tmp_path / "r").exists()


def test_processes_given_other_settings_are_refused_not_mixed(tmp_path):
    """Ranks given another --lr-max (training) or another --n (evaluation): one line, never a
    hang or a number that mixes two runs."""
    wrapper = tmp_path / "rank1_differs.py"
    wrapper.write_text("import os, sys\nfrom eae.cli import main\n"
                       "extra = os.environ['EXTRA'].split() if os.environ.get('LOCAL_RANK') == '1' else []\n"
                       "sys.exit(main(sys.argv[1:] + extra))\n")
    os.environ["EXTRA"] = "--lr-max 0.5"
    try:
        res = torchrun(str(wrapper), "train", *TINY, "--epochs", "1", "--out", str(tmp_path / "r"), check=False)
        assert res.returncode != 0 and "disagree on the run's settings: rank 1 differs" in res.stderr, res.stderr[-2000:]
        assert "internal error" not in res.stderr and not (tmp_path / "r" / "model.safetensors").exists()
        single("train", *TINY, "--epochs", "1", "--out", str(tmp_path / "ok"))
        os.environ["EXTRA"] = "--n 32"
        res = torchrun(str(wrapper), "eval", str(tmp_path / "ok"), "--attacks", "clean,pgd1", "--diagnostics", "off",
                       "--quiet", check=False)
        assert res.returncode != 0 and "disagree on the evaluation" in res.stderr, res.stderr[-2000:]
        assert "internal error" not in res.stderr and not list((tmp_path / "ok").glob("eval-*.json"))
    finally:
        os.environ.pop("EXTRA")
