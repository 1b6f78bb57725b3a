"""Faults and hostile input: kill -9, corrupted files, code-running pickles, path
traversal, NaN batches, full disks, concurrent runs, catastrophic overfitting."""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import importlib
from eae import load, train
from eae.checkpoint import CheckpointError, RunLock, load_checkpoint, load_weights
from eae.config import ConfigError, TrainConfig
from eae.data import DeviceLoader
from eae.data import cifar10 as c10
from eae.evaluation import evaluate
from eae.evaluation.report import Report
from eae.trainer import TrainingStopped

train_mod = importlib.import_module("eae.trainer")  # the module of eae.train

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))


def _lines(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    except FileNotFoundError:
        return 0


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


# --------------------------------------------------------------------------- kill -9
def test_kill_9_at_random_moments_then_resume_gives_the_same_weights(tmp_path):
    args = [sys.executable, "-m", "eae", "train", "--device", "cpu", "--dataset", "synthetic",
            "--synthetic-train-size", "512", "--synthetic-test-size", "64", "--synthetic-image-size", "16",
            "--val-size", "64", "--arch", "resnet_small", "--method", "fgsm_rs", "--epochs", "10",
            "--batch-size", "64", "--val-attack-steps", "1", "--deterministic", "--quiet"]
    subprocess.run([*args, "--out", str(tmp_path / "ref")], env=_env(), check=True, timeout=300)
    run = tmp_path / "killed"
    rng = random.Random(1234)
    kills, epochs_seen = 0, []
    for _ in range(3):
        proc = subprocess.Popen([*args, "--out", str(run), "--resume"], env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # kill at a random moment of a random coming epoch: wait for its metrics line
        # (written just before the checkpoint), then up to a fraction of an epoch more
        done = _lines(run / "metrics.jsonl")
        target = done + rng.randint(1, 2)
        deadline = time.time() + 120
        while _lines(run / "metrics.jsonl") < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if (run / "checkpoint.pt").exists():  # whatever the moment, the last checkpoint loads
            epochs_seen.append(load_checkpoint(run / "checkpoint.pt")["epoch"])
    assert kills == 3, "the run finished before it could be killed: make it longer"
    assert epochs_seen and epochs_seen == sorted(epochs_seen) and epochs_seen[-1] < 10
    subprocess.run([*args, "--out", str(run), "--resume"], env=_env(), check=True, timeout=300)
    ref, got = _weights(tmp_path / "ref"), _weights(run)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 11))
    assert not list(run.glob(".*.pt.*"))  # no half-written file left behind


def test_a_second_run_on_the_same_directory_is_refused(tiny_cfg):
    Path(tiny_cfg.out).mkdir(parents=True)
    (Path(tiny_cfg.out) / ".eae-run").write_text("run")  # a live run marks its folder before it locks it
    with RunLock(tiny_cfg.out):
        with pytest.raises(RuntimeError, match="another run"):
            train(tiny_cfg, quiet=True)
    train(tiny_cfg.replace(epochs=1), quiet=True)  # the lock is gone with its holder


# --------------------------------------------------------------------------- corrupted files
@pytest.fixture
def finished_run(tiny_cfg):
    train(tiny_cfg, quiet=True)
    return Path(tiny_cfg.out)


def _flip_bit(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x10
    path.write_bytes(bytes(data))


def test_truncated_or_bit_flipped_checkpoint_is_refused(finished_run, tiny_cfg):
    ckpt = finished_run / "checkpoint.pt"
    good = ckpt.read_bytes()
    _flip_bit(ckpt, 1000)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(ckpt)
    ckpt.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        train(tiny_cfg.replace(epochs=3), resume=True, quiet=True)  # differs only in epochs: still refused
    ckpt.write_bytes(good)
    assert load_checkpoint(ckpt)["epoch"] == 2


def test_bit_flipped_or_truncated_weights_are_refused(finished_run):
    w = finished_run / "model.safetensors"
    good = w.read_bytes()
    _flip_bit(w, 100)  # inside the tensor data: safetensors alone would not notice
    with pytest.raises(CheckpointError, match="SHA-256"):
        load(finished_run)
    w.write_bytes(good[:-10])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_weights(w)
    w.write_bytes(good)
    load(finished_run)


def test_truncated_and_bit_flipped_cifar_batches_are_refused(cifar_dir, tmp_path):
    for damage in ("truncate", "flip"):
        d = tmp_path / damage / "cifar-10-batches-py"
        d.mkdir(parents=True)
        for f in cifar_dir.iterdir():
            (d / f.name).symlink_to(f)
        target = d / "data_batch_3"
        target.unlink()
        data = bytearray((cifar_dir / "data_batch_3").read_bytes())
        if damage == "truncate":
            data = data[: len(data) - 5000]
        else:
            data[-20000] ^= 0x01  # one pixel bit
        target.write_bytes(bytes(data))
        with pytest.raises(c10.DatasetError, match="data_batch_3"):
            c10.load_cifar10(d)


class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_whose_pickle_would_run_code_is_refused(finished_run, tiny_cfg, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"epoch": 1, "config": tiny_cfg.to_dict(), "x": _RunsCode(str(marker))})
    buf = io.BytesIO()
    torch.save({"epoch": 1}, buf)  # a valid zip container, then its data.pkl swapped for the payload
    import zipfile
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, payload if item.filename.endswith("data.pkl") else src.read(item.filename))
    data = out.getvalue()
    ckpt = finished_run / "checkpoint.pt"
    for blob in (data, b"EAECKPT1" + hashlib.sha256(data).digest() + data):  # with and without a valid digest
        ckpt.write_bytes(blob)
        with pytest.raises(CheckpointError, match="refused"):
            train(tiny_cfg, resume=True, quiet=True)
    assert not marker.exists()


def test_tar_with_parent_paths_and_links_extracts_nothing_outside(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        evil = b"owned"
        for name in ("../evil", "/tmp/eae_abs_evil", "cifar-10-batches-py/../../evil2"):
            info = tarfile.TarInfo(name)
            info.size = len(evil)
            tar.addfile(info, io.BytesIO(evil))
        link = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    blob = buf.getvalue()
    monkeypatch.setattr(c10, "_urlopen", lambda *a, **k: io.BytesIO(blob))
    monkeypatch.setattr(c10, "OFFICIAL_MD5", hashlib.md5(blob).hexdigest())  # a "verified" hostile archive
    dest = tmp_path / "a" / "b" / "out"
    with pytest.raises(c10.DatasetError, match="not a regular file"):
        c10.fetch_official(dest)
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "a" / "b" / "evil").exists()
    assert not Path("/tmp/eae_abs_evil").exists() and not (dest / "data_batch_1").exists()


# --------------------------------------------------------------------------- training guards
def _inject_nan(monkeypatch, at: int = 1):
    real = DeviceLoader.__iter__

    def poisoned(self):
        for i, (x, y) in enumerate(real(self)):
            if i == at:
                x = x.clone()
                x[0, 0, 0, 0] = float("nan")
            yield x, y

    monkeypatch.setattr(DeviceLoader, "__iter__", poisoned)


def test_nan_batch_stops_the_run_without_a_checkpoint(tiny_cfg, monkeypatch):
    _inject_nan(monkeypatch)
    with pytest.raises(TrainingStopped, match="non-finite loss or gradient in epoch 1"):
        train(tiny_cfg, quiet=True)
    assert not (Path(tiny_cfg.out) / "checkpoint.pt").exists()


def test_nan_batch_is_skipped_and_counted(tiny_cfg, monkeypatch):
    _inject_nan(monkeypatch)
    res = train(tiny_cfg.replace(nonfinite="skip"), quiet=True)
    assert [r["skipped_steps"] for r in res.metrics] == [1, 1]  # the poisoned batch of each epoch
    state = load_checkpoint(Path(tiny_cfg.out) / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for v in _weights(Path(tiny_cfg.out)).values())


def test_failed_save_keeps_the_previous_checkpoint(tiny_cfg, monkeypatch, capsys):
    real, calls = train_mod.save_checkpoint, []

    def flaky(path, state):
        calls.append(state["epoch"])
        if state["epoch"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, state)

    monkeypatch.setattr(train_mod, "save_checkpoint", flaky)
    res = train(tiny_cfg.replace(epochs=3), quiet=True)
    assert res.finished and calls == [1, 2, 3]
    assert load_checkpoint(Path(tiny_cfg.out) / "checkpoint.pt")["epoch"] == 2  # the previous one, intact
    assert "No space left on device" in capsys.readouterr().err  # said on stderr even with quiet
    events = [json.loads(line) for line in (Path(tiny_cfg.out) / "events.jsonl").read_text().splitlines()]
    assert events == [{"epoch": 3, "event": "save_failed", "file": "checkpoint.pt",
                       "error": "[Errno 28] No space left on device"}]


def _collapse_at(monkeypatch, epoch_collapse: int):
    """Validation reports PGD accuracy 0.40 (rising slowly), then 0.0 at the given epoch
    of each trajectory; clean accuracy is what it is."""
    real = train_mod.run_suite
    count = {"calls": 0}

    def fake(model, x, y, attacks=None, eps=8 / 255, *, seed=0, **kw):
        rep = real(model, x, y, {"clean": None}, eps, seed=seed, **kw)
        epoch = seed - 0 + 1  # the loop passes seed = cfg.seed + epoch index
        count["calls"] += 1
        n = len(y)  # accuracies are whole numbers of the n images (the report checks it)
        pgd = 0.0 if epoch == epoch_collapse and count["calls"] <= epoch_collapse else round((0.4 + 0.01 * epoch) * n) / n
        clean = max(rep.clean_accuracy, pgd)
        per = {"pgd": {"accuracy": pgd, "mode": "standalone", "seconds": 0, "n_attacked": round(clean * n)},
               "cw": {"accuracy": pgd, "mode": "standalone", "seconds": 0, "n_attacked": round(clean * n)}}
        return Report(suite="custom", label="", n=n, eps=eps, norm="linf", seed=seed, precision="fp32",
                      clean_accuracy=clean, per_attack=per, robust_accuracy=pgd, seconds=0.0)

    monkeypatch.setattr(train_mod, "run_suite", fake)


def test_overfitting_guard_warns(tiny_cfg, monkeypatch):
    _collapse_at(monkeypatch, 3)
    res = train(tiny_cfg.replace(epochs=4, method="fgsm_rs"), quiet=True)
    assert [r.get("overfit", False) for r in res.metrics] == [False, False, True, False]
    ev = json.loads((Path(tiny_cfg.out) / "events.jsonl").read_text())
    assert ev["event"] == "catastrophic_overfitting" and ev["action"] == "warn" and ev["best_epoch"] == 2


def test_no_overfitting_alarm_for_standard_training(tiny_cfg, monkeypatch):
    # standard training loses its chance robustness as it learns: not catastrophic overfitting
    _collapse_at(monkeypatch, 3)
    with pytest.raises(ConfigError, match="standard training has none to lose"):  # an action that could never act
        tiny_cfg.replace(epochs=4, method="standard", overfit_action="stop")
    res = train(tiny_cfg.replace(epochs=4, method="standard"), quiet=True)
    assert res.finished and not any(r.get("overfit") for r in res.metrics)
    assert not (Path(tiny_cfg.out) / "events.jsonl").exists()


def test_overfitting_guard_stops(tiny_cfg, monkeypatch):
    _collapse_at(monkeypatch, 3)
    with pytest.raises(TrainingStopped, match="catastrophic overfitting at epoch 3"):
        train(tiny_cfg.replace(epochs=4, method="fgsm_rs", overfit_action="stop"), quiet=True)
    assert (Path(tiny_cfg.out) / "model_best.safetensors").is_file()
    assert load_checkpoint(Path(tiny_cfg.out) / "checkpoint.pt")["epoch"] == 2  # the collapsed state is not kept


def test_overfitting_guard_rolls_back_and_lowers_the_step(tiny_cfg, monkeypatch):
    _collapse_at(monkeypatch, 3)
    cfg = tiny_cfg.replace(epochs=4, method="fgsm_rs", overfit_action="rollback_lower_step")
    res = train(cfg, quiet=True)
    assert res.finished and [r["epoch"] for r in res.metrics] == [1, 2, 3, 4]
    assert not any(r.get("overfit") for r in res.metrics)  # the collapsed epoch was retrained
    ev = json.loads((Path(tiny_cfg.out) / "events.jsonl").read_text())
    assert ev["action"] == "rollback_lower_step" and ev["to_epoch"] == 2 and ev["step_scale"] == 0.5
    assert load_checkpoint(Path(tiny_cfg.out) / "checkpoint.pt")["step_scale"] == 0.5


@pytest.mark.slow
def test_real_catastrophic_overfitting_is_caught(cifar_dir, tmp_path):
    """FGSM from a zero start at eps 16/255 on the small ResNet, real CIFAR-10: as the
    one-cycle LR rises, validation PGD accuracy collapses (about 10% -> 4% or less on
    500 images) while accuracy on the FGSM training examples keeps rising."""
    cfg = TrainConfig(out=str(tmp_path / "co"), data_dir=str(cifar_dir.parent), arch="resnet_small", device="cpu",
                      method="fgsm_rs", fgsm_init="zero", eps=16 / 255, fgsm_alpha=16 / 255, epochs=6,
                      train_subset=5000, batch_size=128, val_size=500, val_attack_steps=5, lr_max=0.2,
                      overfit_action="stop")
    with pytest.raises(TrainingStopped, match="catastrophic overfitting"):
        train(cfg, quiet=True)
    ev = json.loads((tmp_path / "co" / "events.jsonl").read_text())
    assert ev["action"] == "stop" and ev["val_pgd"] < 0.5 * ev["best_val_pgd"]
    rows = [json.loads(line) for line in (tmp_path / "co" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["overfit"] and rows[-1]["train_acc"] > rows[0]["train_acc"]  # FGSM examples fitted better


# --------------------------------------------------------------------------- validation of values
@pytest.mark.parametrize("field,value,match", [
    ("eps", 8.0, "eps must be in \\[0, 1\\]"), ("eps", -0.1, "eps must be in"), ("epochs", 0, "epochs must be >= 1"),
    ("lr_max", float("nan"), "lr_max must be a finite number"), ("nonfinite", "ignore", "nonfinite must be one of"),
])
def test_bad_config_values_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_unknown_method_or_arch_names_the_field(tiny_cfg):
    with pytest.raises(ValueError, match="config field method: unknown training method 'fgsm_typo'"):
        train(tiny_cfg.replace(method="fgsm_typo"), quiet=True)
    # The config itself refuses an unknown arch (it is checked where the value is set).
    with pytest.raises(ValueError, match="arch must be one of .*got 'resnet9000'"):
        train(tiny_cfg.replace(arch="resnet9000"), quiet=True)


def test_evaluate_refuses_bad_data(trained_small):
    model, x, y = trained_small
    cases = [
        (x[:4, 0], y[:4], "shape"),  # no channel axis
        (x[:4], y[:3], "one label per image"),
        (x[:4], y[:4].float(), "integer class labels"),
        (x[:4] * 255, y[:4], "\\[0, 1\\]"),
        (x[:4].clone().index_fill_(0, torch.tensor([1]), float("nan")), y[:4], "NaN"),
        (x[:4], torch.tensor([0, 1, 2, 10]), "out of range"),
        (x[:4], torch.tensor([0, -1, 2, 3]), ">= 0"),
    ]
    for xi, yi, match in cases:
        with pytest.raises(ValueError, match=match):
            evaluate(model, xi, yi, attacks=["clean"], diagnostics="off")
