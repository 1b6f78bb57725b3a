"""Hostile and careless input, as a new user would give it, table-driven.

Every case asserts the exit status, that the message names the problem, that no
traceback is printed, and that no file outside the run's own changed (a user folder is
hashed before and after). Classes: wrong numbers, lost results, tracebacks for user
errors, misleading messages, data loss."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from eae.cli import main
from eae.evaluation import evaluate

SYN = ["--device", "cpu", "--dataset", "synthetic", "--synthetic-train-size", "192", "--synthetic-test-size", "64",
       "--synthetic-image-size", "16", "--val-size", "64", "--arch", "resnet_small", "--batch-size", "64",
       "--val-attack-steps", "1", "--quiet"]


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One finished tiny run (synthetic data) that the eval cases point at."""
    out = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", *SYN, "--method", "fgsm_rs", "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture()
def user(tmp_path) -> Path:
    """A user's folder that no command may touch."""
    d = tmp_path / "mine"
    d.mkdir()
    (d / "config.json").write_text('{"a user": "file"}')
    (d / "model.safetensors").write_bytes(b"the user's weights")
    (d / ".notes.pt.bak").write_text("hidden")
    return d


def _call(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse and usage errors
        rc = e.code
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "Traceback" not in text, text
    return rc, text


def _tamper(run: Path, tmp_path: Path, name: str, content: bytes | None = None, edit=None) -> Path:
    """A copy of the run with one file replaced or edited."""
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    if edit is not None:
        edit(dst / name)
    else:
        (dst / name).write_bytes(content)
    return dst


# (argv builder, exit status, fragment of the message); RUN is the tiny run, USER the user's folder
EVAL_CASES = [
    (["--batch-size", "-5"], 2, "--batch-size: must be >= 1"),
    (["--batch-size", "0"], 2, "--batch-size: must be >= 1"),
    (["--batch-size", "many"], 2, "not an integer"),
    (["--eps", "8"], 2, "must be in [0, 1]"),
    (["--eps", "-0.1"], 2, "must be in [0, 1]"),
    (["--eps", "nan"], 2, "must be in [0, 1]"),
    (["--eps", "8/0"], 2, "division by zero"),
    (["--eps", "eight"], 2, "--eps"),
    (["--diag-n", "-5"], 2, "--diag-n: must be >= 0"),
    (["--eot", "0"], 2, "--eot: must be >= 1"),
    (["--eot", "many"], 2, "not an integer"),
    (["--n", "0"], 2, "--n: must be >= 1"),
    (["--n", "-3"], 2, "--n: must be >= 1"),
    (["--n", "999999"], 2, "--n must be in 1..64"),
    (["--attacks", "bogus"], 2, "unknown attack spec"),
    (["--attacks", "clean", "--suite", "aa"], 2, "not both"),
    (["--suite", "bogus"], 2, "invalid choice"),
    (["--precision", "fp64"], 2, "invalid choice"),
    (["--weights", "bogus"], 2, "final or best"),
    (["--device", "cuda"], 2, "CUDA is not available"),
    (["--device", "tpu:7"], 2, "device"),
    (["--diagnostics", "everything"], 2, "invalid choice"),
]


@pytest.mark.parametrize("extra,status,fragment", EVAL_CASES, ids=[" ".join(c[0]) for c in EVAL_CASES])
def test_eval_refuses_bad_values(run, extra, status, fragment, capsys):
    before = _tree_hash(run)
    plan = [] if {"--attacks", "--suite"} & set(extra) else ["--attacks", "clean"]
    rc, text = _call(["eval", str(run), "--quiet", *plan, *extra], capsys)
    assert rc == status and fragment in text, text
    assert _tree_hash(run) == before  # nothing written for a refused command


TRAIN_CASES = [
    (["--eps", "8"], "eps must be in [0, 1]"),
    (["--eps", "8/0"], "division by zero"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--epochs", "-1"], "epochs must be >= 1"),
    (["--batch-size", "-5"], "batch_size must be >= 1"),
    (["--lr-max", "nan"], "lr_max must be a finite number"),
    (["--momentum", "inf"], "momentum must be a finite number"),
    (["--head", "cosine", "--head-scale", "nan"], "head_scale must be a finite number"),
    (["--method", "eae", "--eae-eta", "nan"], "eae_eta must be a finite number"),
    (["--method", "n_fgsm", "--nfgsm-noise", "nan"], "nfgsm_noise must be a finite number"),
    (["--method", "trades", "--trades-beta", "nan"], "trades_beta must be a finite number"),
    (["--lr-schedule", "piecewise", "--lr-gamma", "nan"], "lr_gamma must be a finite number"),
    (["--method", "fgsm_rs", "--fgsm-alpha", "-0.1"], "fgsm_alpha must be > 0"),
    (["--method", "pgd", "--pgd-alpha", "0"], "pgd_alpha must be > 0"),
    (["--method", "trades", "--trades-beta", "-1"], "trades_beta must be >= 0"),
    (["--method", "eae", "--eae-q", "0"], "eae_q must be in (0, 1]"),
    (["--val-size", "-1"], "val_size must be >= 0"),
    (["--stop-after", "-1"], "--stop-after: must be >= 1"),
    (["--stop-after", "0"], "--stop-after: must be >= 1"),
    (["--method", "bogus"], "invalid choice"),
    (["--arch", "bogus"], "arch must be one of"),
    (["--nonfinite", "ignore"], "invalid choice"),
    (["--epochs", "1.5"], "not an integer"),
    (["--device", "cuda"], "CUDA is not available"),
    (["--config", "/nonexistent/preset.toml"], "config file not found: /nonexistent/preset.toml"),
]


@pytest.mark.parametrize("extra,fragment", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_train_refuses_bad_values(tmp_path, user, extra, fragment, capsys):
    before = _tree_hash(user)
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(tmp_path / "r"), *extra], capsys)
    assert rc == 2 and fragment in text, text
    assert _tree_hash(user) == before and not (tmp_path / "r" / "model.safetensors").exists()


def test_bad_toml_presets_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = [unclosed\n")
    rc, text = _call(["train", "--config", str(bad), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and str(bad) in text and "not valid TOML" in text
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("epochs = 1\nno_such_field = 3\n")
    rc, text = _call(["train", "--config", str(unknown), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and "no_such_field" in text


def _edit_json(path: Path, **changes) -> None:
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


DAMAGED_RUNS = [
    ("config.json", b"{ not json", None, "config.json: not a valid run config"),
    ("config.json", b"[1, 2, 3]", None, "config.json: not a valid run config"),
    ("config.json", None, lambda p: _edit_json(p, arch="preact_resnet18"),
     "arch: 'preact_resnet18' in config.json, 'resnet_small' for the weights"),
    ("config.json", None, lambda p: _edit_json(p, eps="a lot"), "config field eps"),
    ("model.safetensors", b"truncated", None, "model.safetensors"),
]


@pytest.mark.parametrize("name,content,edit,fragment", DAMAGED_RUNS, ids=[c[3][:30] for c in DAMAGED_RUNS])
def test_eval_of_a_damaged_run_names_the_file(run, tmp_path, name, content, edit, fragment, capsys):
    bad = _tamper(run, tmp_path, name, content, edit)
    rc, text = _call(["eval", str(bad), "--attacks", "clean", "--quiet"], capsys)
    assert rc == 2 and fragment in text, text


def test_eval_of_missing_things(run, tmp_path, capsys):
    rc, text = _call(["eval", str(tmp_path / "nothing")], capsys)
    assert rc == 2 and "nothing: no such folder" in text
    rc, text = _call(["eval", str(run), "--weights", "best", "--attacks", "clean", "--quiet"], capsys)
    assert rc in (0, 2) and ("model_best" in text or "clean" in text)


def test_eval_prints_the_numbers_even_when_it_cannot_save_them(run, tmp_path, monkeypatch, capsys):
    import errno

    import eae.utils

    def full(path, obj):  # the disk fills while the report is written
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(eae.utils, "atomic_write_json", full)
    rc, text = _call(["eval", str(run), "--attacks", "clean,pgd2", "--diagnostics", "off", "--quiet",
                      "--output", str(tmp_path / "eval.json")], capsys)
    assert rc == 2 and "could not save the report" in text and "pgd2" in text  # the table came first


def test_eval_of_a_model_with_nan_outputs_is_an_error_not_a_score(run, tmp_path, capsys):
    from eae.checkpoint import load, save_weights, weights_metadata

    model = load(run)
    kept = {k: v for k, v in weights_metadata(run / "model.safetensors").items() if k != "sha256"}  # the run's own
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    bad = _tamper(run, tmp_path, "model.safetensors", edit=lambda p: save_weights(model, p, kept))
    rc, text = _call(["eval", str(bad), "--attacks", "clean,pgd2", "--quiet"], capsys)
    assert rc == 2 and "NaN or infinite logits" in text and "%" not in text


class _Const(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return torch.full((len(x), 10), self.value) * self.w


EVALUATE_CASES = [
    (dict(batch_size=-3), "batch_size must be an integer in 1.."),
    (dict(batch_size=0), "batch_size must be an integer in 1.."),
    (dict(eps=8), "eps must be in [0, 1]"),
    (dict(eps=float("nan")), "eps must be in [0, 1]"),
    (dict(diag_n=-5), "diag_n must be an integer in 0.."),
    (dict(eot=0), "eot must be an integer in 1.."),
    (dict(eot=2.5), "eot must be an integer in 1.."),
    (dict(precision="fp64"), "precision must be one of"),
    (dict(diagnostics="all"), "diagnostics must be one of"),
]


@pytest.mark.parametrize("kwargs,fragment", EVALUATE_CASES, ids=[str(c[0]) for c in EVALUATE_CASES])
def test_evaluate_refuses_bad_arguments(kwargs, fragment):
    x, y = torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("(", r"\(")):
        evaluate(_Const(1.0), x, y, ["clean"], **kwargs)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_evaluate_refuses_non_finite_logits(value):
    x, y = torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)  # label 0: argmax of NaN would "hit" it
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        evaluate(_Const(value), x, y, ["clean"], diagnostics="off")


def test_data_and_bench_refuse_with_one_line(tmp_path, user, capsys, monkeypatch):
    monkeypatch.delenv("EAE_DATA_DIR", raising=False)  # CI points it at real data: search only empty places
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rc, text = _call(["data", "cifar10", "--data-dir", str(tmp_path / "none"), "--no-download"], capsys)
    assert rc == 2 and "CIFAR-10 not found" in text
    before = _tree_hash(user)
    for argv, fragment in [(["bench", "headline", "--out", str(user), "--tiny"], "not empty"),
                           (["bench", "headline", "--out", str(tmp_path / "h"), "--budget", "-1"], "--budget"),
                           (["bench", "headline", "--out", str(tmp_path / "h"), "--budget", "nan"], "--budget"),
                           (["bench", "smoke", "--out", str(tmp_path / "s"), "--tiny"], "headline` only"),
                           (["bench", "smoke", "--out", str(tmp_path / "s"), "--seeds", "0"], "--seeds"),
                           (["bench", "smoke", "--out", str(tmp_path / "s"), "--only", "bogus"], "unknown entries"),
                           (["bench", "bogus", "--out", str(tmp_path / "s")], "invalid choice"),
                           (["bench", "smoke"], "needs --out DIR"), (["bench", "headline"], "needs --out DIR")]:
        rc, text = _call(argv, capsys)
        assert rc == 2 and fragment in text, (argv, text)
    assert _tree_hash(user) == before
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bench.json").write_text("{ torn")
    rc, text = _call(["bench", "smoke", "--out", str(tmp_path / "b"), "--resume"], capsys)
    assert rc == 2 and "was not made by eae (it holds bench.json)" in text


def test_resume_takes_the_runs_config_and_refuses_changes(run, tmp_path, capsys):
    import shutil

    mine = tmp_path / "r"
    shutil.copytree(run, mine)
    before = _tree_hash(mine)
    rc, text = _call(["train", "--out", str(mine), "--resume", "--method", "standard"], capsys)
    assert rc == 2 and "method 'fgsm_rs' -> 'standard'" in text and _tree_hash(mine) == before
    (mine / "checkpoint.pt").unlink()  # a finished run whose checkpoint was deleted to save space
    before = _tree_hash(mine)
    rc, text = _call(["train", "--out", str(mine), "--resume"], capsys)
    assert rc == 2 and "no checkpoint.pt to continue from" in text and _tree_hash(mine) == before


def test_out_paths_the_os_refuses(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(blocker / "run")], capsys)
    assert rc == 2 and str(blocker) in text
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(tmp_path / ("n" * 300))], capsys)
    assert rc == 2 and "name too long" in text.lower()
    assert blocker.read_text() == "x"


def test_stop_after_says_the_run_is_unfinished(tmp_path, capsys):
    rc, text = _call(["train", *SYN, "--epochs", "2", "--stop-after", "1", "--out", str(tmp_path / "r")], capsys)
    assert rc == 0 and "unfinished" in text and "--resume" in text


@pytest.mark.slow
def test_ctrl_c_during_training_says_how_to_resume(tmp_path):
    out = tmp_path / "r"
    args = [sys.executable, "-m", "eae", "train", *SYN, "--epochs", "50", "--synthetic-train-size", "1024",
            "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    # a test run started in the background by a shell inherits SIGINT ignored: give the child the default back
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert f"eae train --out={out} --resume" in err


# --------------------------------------------------------------------------- the run folder
def _copy(run: Path, tmp_path: Path, name: str = "r") -> Path:
    import shutil

    shutil.copytree(run, tmp_path / name)
    return tmp_path / name


def _user_out(tmp_path, user, run):
    return ["--out", str(user)], user


def _user_resume(tmp_path, user, run):
    return ["--out", str(user), "--resume"], user


def _file_out(tmp_path, user, run):
    return ["--out", str(user / "config.json")], user


def _finished_run(tmp_path, user, run):
    mine = _copy(run, tmp_path)
    return ["--out", str(mine)], mine


def _weights_only(tmp_path, user, run):
    mine = _copy(run, tmp_path)
    for name in ("checkpoint.pt", "checkpoint_best.pt", "metrics.jsonl"):
        (mine / name).unlink()  # a finished run trimmed to its results
    return ["--out", str(mine)], mine


def _torn_middle(tmp_path, user, run):
    mine = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "3", "--stop-after", "2", "--out", str(mine)]) == 0
    lines = (mine / "metrics.jsonl").read_text().splitlines()
    (mine / "metrics.jsonl").write_text(lines[0][:20] + "\n" + lines[1] + "\n")
    return ["--epochs", "3", "--out", str(mine), "--resume"], mine


# (how the --out folder is made, exit status, fragment of the message); the folder given is hashed
OUT_CASES = [
    (_user_out, 2, "is not empty and was not made by eae (it holds .notes.pt.bak, config.json"),
    (_user_resume, 2, "was not made by eae"),
    (_file_out, 2, "is a file, not a folder"),
    (_finished_run, 2, "already holds a run"),
    (_weights_only, 2, "already holds a run (model.safetensors, model_best.safetensors)"),
    (_torn_middle, 2, "metrics.jsonl, line 1: not a metrics row"),
]


@pytest.mark.parametrize("make,status,fragment", OUT_CASES, ids=[c[0].__name__.strip("_") for c in OUT_CASES])
def test_train_writes_only_into_new_empty_or_run_folders(run, tmp_path, user, make, status, fragment, capsys):
    argv, folder = make(tmp_path, user, run)
    capsys.readouterr()
    before = _tree_hash(folder)
    rc, text = _call(["train", *SYN, "--epochs", "1", *argv], capsys)
    assert rc == status and fragment in text, text
    assert _tree_hash(folder) == before and len(text.strip().splitlines()) == 1


def test_train_deletes_none_but_its_own_temporary_files(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "2", "--stop-after", "1", "--out", str(out)]) == 0
    (out / ".notes.pt.bak").write_text("the user's")
    (out / ".checkpoint.pt.x8Jq").write_text("not one of ours: 4 characters, upper case")
    (out / ".checkpoint.pt.eae-tmp-ab12cd_3").write_text("a temporary file of an interrupted write")
    (out / ".config.json.original").write_text("the user's backup: 8 lower-case letters after the name")
    rc, _ = _call(["train", *SYN, "--epochs", "2", "--out", str(out), "--resume"], capsys)
    assert rc == 0 and (out / ".eae-run").is_file()
    assert (out / ".notes.pt.bak").read_text() == "the user's" and (out / ".checkpoint.pt.x8Jq").exists()
    assert not (out / ".checkpoint.pt.eae-tmp-ab12cd_3").exists() and (out / ".config.json.original").exists()


def test_a_run_without_the_marker_is_still_recognised(run, tmp_path, capsys):
    mine = _copy(run, tmp_path)
    (mine / ".eae-run").unlink()  # written by a version before the marker
    (mine / "model.safetensors").unlink()
    rc, text = _call(["train", *SYN, "--method", "fgsm_rs", "--epochs", "1", "--out", str(mine), "--resume"], capsys)
    assert rc == 0 and (mine / "model.safetensors").is_file(), text


@pytest.mark.parametrize("extra", [None, "notes.txt"])
def test_a_users_folder_with_a_config_json_is_not_taken_for_an_old_run(run, tmp_path, capsys, extra):
    user = tmp_path / "p"
    user.mkdir()
    if extra is None:  # a config.json of the user's, with a few of the same keys
        (user / "config.json").write_text('{"out": "results", "method": "mine", "arch": "vit", "epochs": 100}')
        (user / "environment.json").write_text('{"my": "env"}')
    else:  # an old run's files, with a file of the user's among them
        for name in ("config.json", "metrics.jsonl", "checkpoint.pt"):
            (user / name).write_bytes((run / name).read_bytes())
        (user / extra).write_text("mine")
    before = _tree_hash(user)
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(user)], capsys)
    assert rc == 2 and "was not made by eae" in text and _tree_hash(user) == before


def test_no_validation_split_writes_no_nan_and_keeps_the_last_as_best(tmp_path, capsys):
    out = tmp_path / "r"
    rc, text = _call(["train", *SYN, "--epochs", "2", "--val-size", "0", "--val-attack-steps", "0", "--out", str(out)],
                     capsys)
    assert rc == 0 and "no validation" in text, text
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))
            for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and not any(k.startswith("val_") for r in rows for k in r)
    from eae.checkpoint import load_weights

    best, last = load_weights(out / "model_best.safetensors"), load_weights(out / "model.safetensors")
    assert all(torch.equal(best[k], last[k]) for k in last)
    rc, text = _call(["eval", str(out), "--weights", "best", "--attacks", "clean", "--diagnostics", "off",
                      "--quiet", "--output", str(tmp_path / "e.json")], capsys)
    assert rc == 0, text


def test_final_weights_that_cannot_be_written_say_how_to_recover(tmp_path, monkeypatch, capsys):
    import errno

    from eae.checkpoint import load_checkpoint
    from eae.training import folder as folder_mod

    real = folder_mod.save_weights

    def full_disk(model, path, metadata=None):
        if Path(path).name == "model.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(model, path, metadata)

    monkeypatch.setattr(folder_mod, "save_weights", full_disk)
    out = tmp_path / "r"
    rc, text = _call(["train", *SYN, "--epochs", "2", "--out", str(out)], capsys)
    assert rc == 2 and len(text.strip().splitlines()) == 1, text
    assert "could not write the final weights" in text and "No space left on device" in text
    assert f"{out / 'checkpoint.pt'} holds epoch 2" in text and f"eae train --out={out} --resume" in text
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2 and not (out / "model.safetensors").exists()
    monkeypatch.setattr(folder_mod, "save_weights", real)
    rc, text = _call(["train", *SYN, "--epochs", "2", "--out", str(out), "--resume"], capsys)
    assert rc == 0 and (out / "model.safetensors").is_file(), text


def test_a_torn_last_metrics_line_does_not_block_resume(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "3", "--stop-after", "2", "--out", str(out)]) == 0
    with (out / "metrics.jsonl").open("a") as fh:
        fh.write('{"epoch": 3, "lr": 0.0')  # a crash while epoch 3's line was appended
    capsys.readouterr()
    rc, text = _call(["train", *SYN, "--epochs", "3", "--out", str(out), "--resume"], capsys)
    assert rc == 0 and "line 3: an incomplete last line" in text, text
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def _nan_in_epoch(monkeypatch, epoch: int) -> None:
    from eae.data import DeviceLoader

    real, calls = DeviceLoader.__iter__, {"n": 0}

    def poisoned(self):
        calls["n"] += 1
        for i, (x, y) in enumerate(real(self)):
            if calls["n"] == epoch and i == 1:
                x = x.clone()
                x[0, 0, 0, 0] = float("nan")
            yield x, y

    monkeypatch.setattr(DeviceLoader, "__iter__", poisoned)


@pytest.mark.parametrize("epoch,lr,fragments", [
    (1, "0.05", ["non-finite loss or gradient in epoch 1", "no checkpoint has been written", "--lr-max (now 0.05)",
                 "--nonfinite skip"]),
    (2, "0.05", ["non-finite loss or gradient in epoch 2", "checkpoint.pt holds epoch 1", "--resume", "--lr-max"]),
    (None, "1e6", ["non-finite", "stopped without saving", "--lr-max (now 1e+06)"]),  # diverges by itself
])
def test_the_non_finite_stop_says_what_exists_and_what_to_change(tmp_path, monkeypatch, epoch, lr, fragments,
                                                                 capsys):
    if epoch is not None:
        _nan_in_epoch(monkeypatch, epoch)
    rc, text = _call(["train", *SYN, "--epochs", "2", "--lr-max", lr, "--out", str(tmp_path / "r")], capsys)
    assert rc == 4 and all(f in text for f in fragments) and "holds epoch 0" not in text, text
    assert len(text.strip().splitlines()) == 1


def _other_classes(tmp_path, run):
    from test_imagefolder import make_folder

    a, b = make_folder(tmp_path / "a", per_class=4), make_folder(tmp_path / "b", classes=("a", "b", "x"), per_class=4)
    out = tmp_path / "folder_run"
    assert main(["train", "--device", "cpu", "--dataset", "imagefolder", "--data-dir", str(a), "--image-size", "16",
                 "--workers", "0", "--val-size", "3", "--arch", "resnet_small", "--batch-size", "16", "--epochs", "1",
                 "--val-attack-steps", "0", "--quiet", "--out", str(out)]) == 0
    return out, ["--data-dir", str(b)]


def _other_image_size(tmp_path, run):
    mine = _copy(run, tmp_path)
    _edit_json(mine / "dataset.json", image_size=24)  # as if trained on 24-pixel images
    return mine, []


# (how the run and the evaluation data are made, fragment of the message)
EVAL_DATA_CASES = [
    (_other_classes, "was trained on imagefolder with 3 classes (a, b, c), the test set here has 3 classes "
                     "(a, b, x); label 2 is 'c' there, 'x' here"),
    (_other_image_size, "dataset.json says 24x24 images, the synthetic data of its config has 16x16 images"),
]


@pytest.mark.parametrize("make,fragment", EVAL_DATA_CASES, ids=[c[0].__name__.strip("_") for c in EVAL_DATA_CASES])
def test_eval_refuses_data_other_than_the_runs(run, tmp_path, make, fragment, capsys):
    mine, extra = make(tmp_path, run)
    capsys.readouterr()
    before = _tree_hash(mine)
    rc, text = _call(["eval", str(mine), "--attacks", "clean", "--diagnostics", "off", "--quiet", *extra], capsys)
    assert rc == 2 and fragment in text and len(text.strip().splitlines()) == 1, text
    assert _tree_hash(mine) == before


def test_runs_record_their_data_and_older_runs_still_evaluate(run, tmp_path, capsys):
    assert json.loads((run / "dataset.json").read_text()) == {
        "dataset": "synthetic", "num_classes": 10, "classes": [f"class{i}" for i in range(10)], "image_size": 16}
    old = _copy(run, tmp_path)
    (old / "dataset.json").unlink()
    rc, text = _call(["eval", str(old), "--attacks", "clean", "--diagnostics", "off", "--quiet"], capsys)
    assert rc == 0 and "clean" in text, text


# --------------------------------------------------------------------------- eval --model (a network from elsewhere)
USER_MODELS = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, width=4, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


class Crashy(Tiny):
    def forward(self, x):
        raise RuntimeError("boom in forward")


class Pair(Tiny):
    def forward(self, x):
        return super().forward(x), 0


class FailsUnderAttack(Tiny):
    def forward(self, x):
        if x.requires_grad:
            raise RuntimeError("boom under attack")
        return super().forward(x)


class NeedsDepth(Tiny):
    def __init__(self, depth):
        super().__init__()


class NoParams(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))
'''


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.fixture()
def external(tmp_path, monkeypatch) -> dict[str, str]:
    """A user's model file, files that fail on import, weights of every kind, and a 3-class
    image folder (16x16) to evaluate on: the placeholders of EXTERNAL_CASES."""
    from test_imagefolder import make_folder

    monkeypatch.chdir(tmp_path)  # where the pickle's code would touch 'pwned'
    (tmp_path / "models.py").write_text(USER_MODELS)
    (tmp_path / "raises.py").write_text('raise RuntimeError("raised on import")\n')
    (tmp_path / "syntax.py").write_text("def broken(:\n")
    ns: dict = {}
    exec(compile(USER_MODELS, "models.py", "exec"), ns)
    torch.save(ns["Tiny"]().state_dict(), tmp_path / "tiny.pt")
    torch.save(ns["Tiny"](num_classes=10).state_dict(), tmp_path / "tiny10.pt")
    torch.save({"w": _Evil()}, tmp_path / "evil.pt")
    (tmp_path / "folder.pt").mkdir()
    return {"MODELS": str(tmp_path / "models.py"), "RAISES": str(tmp_path / "raises.py"),
            "SYNTAX": str(tmp_path / "syntax.py"), "TINY": str(tmp_path / "tiny.pt"),
            "EVIL": str(tmp_path / "evil.pt"), "FOLDER": str(tmp_path / "folder.pt"), "TINY10": str(tmp_path / "tiny10.pt"),
            "DATA": str(make_folder(tmp_path / "data", per_class=1)), "ROOT": str(tmp_path)}


def _external_argv(external: dict[str, str], model: str, weights: str, extra: list[str]) -> list[str]:
    fill = lambda a: a.format(**external)  # noqa: E731
    return ["eval", "--model", fill(model), "--weights", fill(weights), *map(fill, extra), "--device", "cpu",
            "--dataset", "imagefolder", "--data-dir", external["DATA"], "--image-size", "16", "--quiet", "--attacks", "clean,pgd1", "--diagnostics", "off"]


# (--model, --weights, more flags, fragment of the one-line refusal)
EXTERNAL_CASES = [
    ("timm:", "{TINY}", [], "name the timm network after the colon, e.g. timm:resnet18"),
    ("{RAISES}:Net", "{TINY}", [], "failed (RuntimeError: raised on import, {RAISES} line 1)"),
    ("{SYNTAX}:Net", "{TINY}", [], "failed (SyntaxError: invalid syntax"),
    ("{MODELS}", "{TINY}", [], "name it: {MODELS}:ClassName"),
    ("my dir:x/m.py", "{TINY}", [], "name the class in the file: my dir:x/m.py:ClassName"),
    (":Tiny", "{TINY}", [], "give FILE.py:ClassName or package.module:ClassName"),
    ("{MODELS}:Tiny", "{TINY}", ["--model-kwargs", '{{"nope": 1}}'],
     "could not be built with --model-kwargs {{\"nope\": 1}} (TypeError"),
    ("{MODELS}:NeedsDepth", "{TINY}", [], "missing 1 required positional argument: 'depth'"),
    ("{MODELS}:Tiny", "{TINY}", ["--model-kwargs", '{{"width": NaN}}'], "NaN is not a number JSON allows"),
    ("resnet_small", "{TINY}", ["--model-kwargs", '{{"num_classes": 5}}'], "num_classes is set from the dataset"),
    ("{MODELS}:Tiny", "{FOLDER}", [], "is a folder, not a weights file"),
    ("{MODELS}:Tiny", "{EVIL}", [], "holds Python objects beyond tensors (posix.system)"
     if os.name == "posix" else "holds Python objects beyond tensors"),
    ("{MODELS}:Tiny", "{TINY}", ["--normalize", ""], "--normalize takes"),
    ("{MODELS}:Crashy", "{TINY}", [], "the model failed on a batch of shape (2, 3, 16, 16) (images in [0, 1]): "
                                      "RuntimeError: boom in forward"),
    ("{MODELS}:Pair", "{TINY}", [], "(wrap it to pick them out of the tuple)"),
    ("{MODELS}:FailsUnderAttack", "{TINY}", [], "the model given by --model raised RuntimeError: boom under attack "
                                                "({MODELS} line"),
    ("{MODELS}:Tiny", "{TINY}", ["--norm", "l2", "--eps", "100"], "beyond the largest L2 distance between two "
                                                                 "(3, 16, 16) images in [0, 1] (27.7)"),
    # trial 6: a 10-class network scored on 3 classes; a std that makes every logit 1e45
    ("{MODELS}:Tiny", "{TINY10}", ["--model-kwargs", '{{"num_classes": 10}}'],
     "the model gives 10 outputs per image, the test set (imagefolder) has 3 classes"),
    ("{MODELS}:Tiny", "{TINY}", ["--normalize", "0.5,0.5,0.5,1e-45,1,1"], "std from 1e-4 to 1e4"),
]


@pytest.mark.parametrize("model,weights,extra,fragment", EXTERNAL_CASES,
                         ids=[f"{c[0]} {' '.join(c[2])}".strip() for c in EXTERNAL_CASES])
def test_eval_of_a_model_from_elsewhere_refuses_with_one_line(external, model, weights, extra, fragment, capsys):
    before = _tree_hash(Path(external["ROOT"]))
    rc, text = _call(_external_argv(external, model, weights, extra), capsys)
    err = [line for line in text.strip().splitlines() if line.startswith(("error", "eae eval: error"))]
    assert rc == 2 and fragment.format(**external) in text and len(err) == 1, text
    assert "{kind}" not in text and "Warning" not in text
    assert _tree_hash(Path(external["ROOT"])) == before  # nothing written, the pickle's code never ran


def test_weights_are_read_by_their_content_not_their_name(external, tmp_path, capsys):
    from safetensors.torch import save_file

    state = torch.load(external["TINY"], weights_only=True)
    save_file(state, str(tmp_path / "really_safetensors.pt"))
    torch.save(state, tmp_path / "really_torch.safetensors")
    for name in ("really_safetensors.pt", "really_torch.safetensors"):
        rc, text = _call(_external_argv(external, "{MODELS}:Tiny", str(tmp_path / name), []), capsys)
        assert rc == 0 and "| clean |" in text, text


def test_eval_output_keeps_a_report_the_user_edited(external, tmp_path, capsys):
    out = tmp_path / "results" / "r.json"
    out.parent.mkdir()
    argv = _external_argv(external, "{MODELS}:Tiny", "{TINY}", ["--output", str(out)])
    assert _call(argv, capsys)[0] == 0 and _call(argv, capsys)[0] == 0  # its own report: replaced
    md = out.with_suffix(".md")
    md.write_text(md.read_text() + "\nmy notes on this result\n")
    before = _tree_hash(out.parent)
    rc, text = _call(argv, capsys)
    assert rc == 2 and f"{md} was changed since eae eval wrote it" in text, text
    assert _tree_hash(out.parent) == before and "| clean |" not in text  # refused before the attacks ran


def test_train_with_a_missing_library_names_the_extra_and_claims_no_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    rc, text = _call(["train", *SYN, "--arch", "timm:resnet18", "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and "pip install 'eae-at[timm]'" in text and not (tmp_path / "r").exists(), text


@pytest.mark.parametrize("extra,fragment", [
    (["--eps", "100"], "eps 100 for l2 is beyond the largest L2 distance between two (3, 16, 16) images"),
    (["--eps", "-1"], "eps must be a finite number >= 0 for l2"),
    (["--eps", "nan"], "eps must be a finite number >= 0 for l2"),
])
def test_train_l2_eps_is_said_once_and_in_range(tmp_path, extra, fragment, capsys):
    rc, text = _call(["train", *SYN, "--norm", "l2", *extra, "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and fragment in text and "pgd_alpha" not in text and "trades_alpha" not in text, text
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- starting up
def test_the_command_starts_without_importing_torch():
    # the precondition for answering a Ctrl-C in the first second: torch loads inside eae.launch.main
    code = "import sys, eae, eae.launch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_ctrl_c_while_torch_is_imported_is_one_line(monkeypatch, capsys):
    from eae import launch

    class Interrupting:  # a finder that is asked for eae.cli while torch would be loading
        def find_spec(self, name, path=None, target=None):
            if name == "eae.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "eae.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    assert launch.main() == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err


# --------------------------------------------------------------------------- trial 6
def test_a_network_without_parameters_evaluates_from_its_empty_state_dict(external, tmp_path, capsys):
    torch.save({}, tmp_path / "empty.pt")
    rc, text = _call(_external_argv(external, "{MODELS}:NoParams", str(tmp_path / "empty.pt"), []), capsys)
    assert rc == 0 and "clean" in text


def test_weights_that_are_not_a_regular_file_are_named_as_such(external, tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo.pt")
    rc, text = _call(_external_argv(external, "{MODELS}:Tiny", str(tmp_path / "fifo.pt"), []), capsys)
    assert rc == 2 and "is not a regular file" in text and "not found" not in text


@pytest.mark.parametrize("call,field,fragment", [
    (lambda eae, run: eae.load(run, weights="Final"), "weights", "'final' or 'best'"),
    (lambda eae, run: eae.load(run, device=torch.device("cuda", 0)), "device", "CUDA is not available"),
    (lambda eae, run: eae.load(run, device=0), "device", "CUDA is not available"),
    (lambda eae, run: eae.load(run, device=1.5), "device", "a torch.device, got float"),
    (lambda eae, run: eae.evaluate(eae.load(run), torch.rand(2, 3, 16, 16), torch.zeros(2, dtype=torch.long),
                                   eps="8/255"), "eps", "eps must be a number"),
    (lambda eae, run: eae.evaluate(eae.load(run), torch.rand(2, 3, 16, 16), torch.zeros(2, dtype=torch.long),
                                   eps=torch.tensor(8 / 255)), "eps", "got Tensor"),
    (lambda eae, run: eae.evaluate(eae.load(run), [[0.5]], [0]), "x", "x must be a torch tensor"),
    (lambda eae, run: eae.evaluate(eae.load(run), torch.rand(2, 3, 16, 16), torch.zeros(2, dtype=torch.long),
                                   device=torch.device("cuda")), "device", "CUDA is not available"),
])
def test_python_api_arguments_of_the_wrong_kind_are_named(run, call, field, fragment):
    import eae

    if torch.cuda.is_available() and "CUDA" in fragment:
        pytest.skip("a GPU is there")
    with pytest.raises(eae.ConfigError, match=re.escape(fragment)) as info:
        call(eae, run)
    assert info.value.field == field


def test_an_ascii_terminal_does_not_stop_a_run_or_its_report(tmp_path):
    out = tmp_path / "r\u00fcn"
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    train = subprocess.run([sys.executable, "-m", "eae", "train", *SYN, "--epochs", "1", "--out", str(out)],
                           capture_output=True, env=env, timeout=300)
    assert train.returncode == 0 and (out / "model.safetensors").is_file(), train.stderr
    ev = subprocess.run([sys.executable, "-m", "eae", "eval", str(out), "--attacks", "clean", "--diagnostics", "off"],
                        capture_output=True, env=env, timeout=300)
    assert ev.returncode == 0 and (out / "eval-clean-diagoff.json").is_file(), ev.stderr
    assert b"r\\xfcn" in ev.stdout  # shown escaped, not fatal


def test_resume_hints_for_demo_headline_bench_and_torchrun(tmp_path, monkeypatch):
    import argparse

    from eae import cli

    demo = argparse.Namespace(func=cli.cmd_demo, out="my demo", data_dir="/d", device="cpu")
    assert "`eae demo '--out=my demo' --data-dir /d`, continues it" in cli._resume_hint(demo)
    head = argparse.Namespace(func=cli.cmd_bench, suite="headline", out="h")
    assert "run it again with a new --out" in cli._resume_hint(head)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b").mkdir()  # the bench kept something: --resume continues it
    bench = argparse.Namespace(func=cli.cmd_bench, suite="smoke", out="b", compile=False, train_only=False,
                               unverified_data=True, seeds=1, budget_k=None, only=None, device="cpu", data_dir="d",
                               dataset="svhn")
    assert "--out=b --resume --unverified-data --device cpu --data-dir d --dataset svhn" in cli._resume_hint(bench)
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    train = argparse.Namespace(func=cli.cmd_train, out=str(tmp_path), resolved_out=None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert f"`torchrun --standalone --nproc_per_node 2 -m eae train --out={tmp_path} --resume`" in cli._resume_hint(train)


def test_a_failed_replace_names_the_users_file_not_our_temporary(tmp_path, monkeypatch):
    import errno

    from eae import utils

    def refuse(src, dst):
        raise PermissionError(errno.EPERM, "Operation not permitted", src, None, dst)

    monkeypatch.setattr(utils.os, "replace", refuse)
    with pytest.raises(PermissionError) as info:
        utils.atomic_write_bytes(tmp_path / "metrics.jsonl", b"x")
    assert info.value.filename == str(tmp_path / "metrics.jsonl") and list(tmp_path.iterdir()) == []


def test_a_cifar10_folder_with_a_batch_missing_or_replaced_says_what_to_do(tmp_path):
    from eae.data.cifar10 import DatasetError, read_batch

    (tmp_path / "data_batch_3").mkdir()
    with pytest.raises(DatasetError, match="is not a regular file"):
        read_batch(tmp_path / "data_batch_3")
    with pytest.raises(DatasetError, match="restore the file, or run `eae data cifar10 --data-dir NEW` to download"):
        read_batch(tmp_path / "data_batch_4")


# --------------------------------------------------------------------------- trial 9
def test_an_empty_path_is_refused_not_read_as_the_current_folder(run, tmp_path, monkeypatch, capsys):
    import eae

    monkeypatch.chdir(tmp_path)
    with pytest.raises(eae.ConfigError, match="out is empty"):
        eae.TrainConfig(out="")
    with pytest.raises(eae.ConfigError, match="run_dir is empty"):
        eae.load(" ")
    for argv, fragment in ((["eval", ""], "RUN_DIR is empty"), (["eval", str(run), "--output", ""], "--output is empty")):
        rc, text = _call(argv, capsys)
        assert rc == 2 and fragment in text
    assert list(tmp_path.iterdir()) == []  # nothing written where it stands


@pytest.mark.parametrize("suite,k,fragment", [("smoke", 2.0, "applies to budget suites"),
                                              ("cifar10-budget", 1e9, "in (0, 1000]")])
def test_budget_k_only_where_there_is_a_budget_and_bounded(tmp_path, suite, k, fragment):
    import eae
    from eae.bench.runner import run_bench

    with pytest.raises(eae.ConfigError, match=re.escape(fragment)):
        run_bench(suite, tmp_path / "b", budget_k=k, device="cpu")
    assert not (tmp_path / "b").exists()


def _image_folder(root: Path, val: bool = True) -> Path:
    """Two classes of four 12x10 PNGs (val/ with one per class unless ``val`` is False)."""
    from PIL import Image

    for split, n in (("train", 4), ("val", 1))[: 2 if val else 1]:
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (12, 10), (40 * i, 100 if c == "a" else 200, 7)).save(root / split / c / f"{i}.png")
    return root


FOLDER = ["--device", "cpu", "--dataset", "imagefolder", "--arch", "resnet_small", "--epochs", "1",
          "--batch-size", "4", "--val-size", "2", "--workers", "0", "--val-attack-steps", "1", "--quiet"]


def test_an_image_size_below_8_is_refused_before_anything_is_written(tmp_path, capsys):
    import eae
    import numpy as np

    from eae.data.imagefolder import decode

    pytest.importorskip("PIL")
    data = _image_folder(tmp_path / "data")
    with pytest.raises(eae.ConfigError, match="image_size must be >= 8"):
        eae.TrainConfig(dataset="imagefolder", image_size=1)
    rc, text = _call(["train", *FOLDER, "--data-dir", str(data), "--image-size", "1", "--out", str(tmp_path / "r")],
                     capsys)
    assert rc == 2 and "image_size must be >= 8" in text and not (tmp_path / "r").exists()
    # the decoder itself copes with a one-pixel crop, flipped or not (a flipped 1-pixel row kept a negative stride)

    for seed in range(8):
        out = decode(str(data / "train" / "a" / "0.png"), 1, train=True, rng=np.random.default_rng(seed))
        assert out.shape == (3, 1, 1) and torch.from_numpy(out).shape == (3, 1, 1)


def test_fewer_training_images_than_processes_is_a_clear_error(monkeypatch):
    import eae
    from eae.training import run as run_module

    monkeypatch.setattr(run_module.dist, "world_size", lambda: 4)  # as under torchrun --nproc_per_node 4
    cfg = eae.TrainConfig(dataset="synthetic", synthetic_train_size=64, synthetic_test_size=16, synthetic_image_size=8,
                          train_subset=3, val_size=0, arch="resnet_small", batch_size=8, device="cpu")
    with pytest.raises(eae.ConfigError, match=r"3 training image\(s\) for 4 processes") as e:
        run_module.Run(cfg, torch.device("cpu"), lambda *a: None)
    assert e.value.field == "train_subset" and "--nproc_per_node" in e.value.cli


def _interrupted(monkeypatch):
    import eae.trainer

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(eae.trainer, "train_epoch", interrupt)


def test_ctrl_c_in_the_first_epoch_leaves_nothing_and_says_the_same_command_starts_again(tmp_path, monkeypatch,
                                                                                          capsys):
    out = tmp_path / "runs" / "r"
    argv = ["train", *SYN, "--epochs", "1", "--out", str(out)]
    with monkeypatch.context() as m:
        _interrupted(m)
        rc, text = _call(argv, capsys)
    assert rc == 130 and "nothing was kept; the same command starts it again" in text
    assert not (tmp_path / "runs").exists()  # the folders it made went with it
    assert _call(argv, capsys)[0] == 0  # and the same command is accepted


def test_ctrl_c_before_the_first_checkpoint_of_a_kept_folder_says_resume(run, tmp_path, monkeypatch, capsys):
    r = tmp_path / "r"
    import shutil

    shutil.copytree(run, r)
    for f in r.iterdir():  # a run killed before its first checkpoint, kept (other tests may have evaluated it)
        if f.name not in ("config.json", "metrics.jsonl", "dataset.json", "environment.json", ".eae-run", ".lock"):
            f.unlink()
    with monkeypatch.context() as m:
        _interrupted(m)
        rc, text = _call(["train", *SYN, "--method", "fgsm_rs", "--epochs", "1", "--out", str(r), "--resume"], capsys)
    assert rc == 130 and f"no checkpoint: `eae train --out={r} --resume` starts it again from epoch 1" in text, text
    assert (r / "config.json").is_file()  # a folder this call did not make stays


def test_images_in_subfolders_count_and_odd_entries_are_named(tmp_path):
    from eae.data import DatasetError
    from eae.data.imagefolder import scan_folder

    pytest.importorskip("PIL")
    data = _image_folder(tmp_path / "data")
    nested = data / "train" / "a" / "more"
    nested.mkdir()
    (data / "train" / "a" / "0.png").rename(nested / "0.png")  # as torchvision's ImageFolder: still class a
    idx = scan_folder(data / "train")
    assert len(idx.samples) == 8 and (str(nested / "0.png"), 0) in idx.samples
    (data / "train" / "b" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DatasetError, match="gone.png: a link to nothing"):
        scan_folder(data / "train")
    idx = scan_folder(data / "train", bad_images="skip")
    assert len(idx.samples) == 8 and [Path(p).name for p, _ in idx.skipped] == ["gone.png"]
    (data / "train" / "b" / "gone.png").unlink()
    os.mkfifo(data / "train" / "b" / "pipe.png")
    with pytest.raises(DatasetError, match="pipe.png: not a regular file"):
        scan_folder(data / "train")
    (data / "train" / "b" / "pipe.png").unlink()
    (nested / "loop").symlink_to(data / "train" / "a")  # a link cycle ends, and is named
    with pytest.raises(DatasetError, match="loop: a link to a folder already read"):
        scan_folder(data / "train")


def test_an_image_folder_without_val_trains_and_eval_says_what_it_needs(tmp_path, capsys):
    pytest.importorskip("PIL")
    data = _image_folder(tmp_path / "data", val=False)
    r = tmp_path / "r"
    assert main(["train", *FOLDER, "--data-dir", str(data), "--image-size", "8", "--out", str(r)]) == 0
    rc, text = _call(["eval", str(r), "--attacks", "clean", "--diagnostics", "off", "--quiet"], capsys)
    assert rc == 2 and f"{data / 'val'}: not a folder: an evaluation scores the test images of" in text


def test_bench_resume_on_a_new_folder_says_it_starts_one(tmp_path, monkeypatch, capsys):
    from eae.bench import runner

    monkeypatch.setattr(runner, "_run", lambda *a, **k: [])
    runner.run_bench("smoke", tmp_path / "typo", resume=True, device="cpu", quiet=True)
    assert "holds no benchmark yet: starting one" in capsys.readouterr().err
    runner.run_bench("smoke", tmp_path / "typo", resume=True, device="cpu", quiet=True)
    assert "holds no benchmark" not in capsys.readouterr().err


def test_eps_minus_zero_is_zero():
    import math

    from eae.cli import _eps

    assert math.copysign(1, _eps("-0")) == 1 and math.copysign(1, _eps("-0/255")) == 1


# --------------------------------------------------------------------------- trial 10
def test_an_unreadable_folder_among_the_images_is_named_not_skipped(tmp_path, monkeypatch):
    from eae.data import DatasetError
    from eae.data.imagefolder import scan_folder

    pytest.importorskip("PIL")
    data = _image_folder(tmp_path / "data")
    sub = data / "train" / "a" / "sub"
    sub.mkdir()
    (data / "train" / "a" / "1.png").rename(sub / "1.png")
    real_scandir = os.scandir

    def scandir(path="."):  # as chmod 000 does for a user other than root (tests may run as root)
        if Path(path) == sub:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DatasetError, match=r"sub: unreadable folder \(Permission denied\)"):
        scan_folder(data / "train")
    idx = scan_folder(data / "train", bad_images="skip")
    assert [Path(p).name for p, _ in idx.skipped] == ["sub"] and len(idx.samples) == 7


def test_a_link_cycle_names_the_link_and_labels_nothing_twice(tmp_path):
    from eae.data import DatasetError
    from eae.data.imagefolder import scan_folder

    pytest.importorskip("PIL")
    data = _image_folder(tmp_path / "data")
    loop = data / "train" / "a" / "loop"
    loop.symlink_to("..")
    with pytest.raises(DatasetError, match=f"{re.escape(str(loop))}: a link to a folder"):
        scan_folder(data / "train")
    idx = scan_folder(data / "train", bad_images="skip")
    assert [p for p, _ in idx.skipped] == [str(loop)] and len(idx.samples) == 8  # b's images only under b


def test_the_test_folder_advice_speaks_of_evaluation_not_training(tmp_path):
    from eae.data import DatasetError
    from eae.data.imagefolder import scan_folder

    pytest.importorskip("PIL")
    data = _image_folder(tmp_path / "data")
    (data / "val" / "zzz").mkdir()
    with pytest.raises(DatasetError) as e:
        scan_folder(data / "val", classes=("a", "b"))
    assert "an evaluation scores every image" in e.value.cli and "--bad-images" not in e.value.cli


def test_a_kill_between_the_best_weights_and_the_first_checkpoint_resumes(run, tmp_path, capsys):
    import shutil

    r = tmp_path / "r"
    shutil.copytree(run, r)
    keep = ("config.json", "metrics.jsonl", "dataset.json", "environment.json", ".eae-run", ".lock",
            "model_best.safetensors")
    for f in r.iterdir():
        if f.name not in keep:
            f.unlink()
    assert (r / "model_best.safetensors").exists()
    rc, text = _call(["train", *SYN, "--method", "fgsm_rs", "--epochs", "1", "--out", str(r), "--resume"], capsys)
    assert rc == 0 and "restarts from epoch 1" in text and (r / "checkpoint.pt").exists()


def test_a_closed_stdout_is_not_an_internal_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    res = subprocess.run(["bash", "-c", f"{sys.executable} -m eae list >&-"], capture_output=True, text=True,
                         env=env, timeout=120)
    # a list is all it does: nothing shown is said and is a failure (status 2), never an internal error
    assert res.returncode == 2 and "internal error" not in res.stderr and "nothing was shown" in res.stderr, res.stderr


def test_an_image_folder_run_resumes_only_on_the_files_it_started_on(tmp_path, capsys):
    import shutil

    pytest.importorskip("PIL")
    data = _image_folder(tmp_path / "data")
    r = tmp_path / "r"
    args = [*FOLDER, "--epochs", "2", "--image-size", "8", "--out", str(r)]
    assert main(["train", *args, "--data-dir", str(data), "--stop-after", "1"]) == 0
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    shutil.copy(moved / "train" / "a" / "0.png", moved / "train" / "a" / "extra.png")
    rc, text = _call(["train", "--out", str(r), "--resume", "--data-dir", str(moved)], capsys)
    assert rc == 2 and "files added, removed, renamed or rewritten" in text and "--data-dir" in text
    (moved / "train" / "a" / "extra.png").unlink()  # the same files in another place: the same data
    # and a resume may switch to --bad-images skip, as the advice for a file that fails to decode says
    rc, text = _call(["train", "--out", str(r), "--resume", "--data-dir", str(moved), "--bad-images", "skip"], capsys)
    assert rc == 0, text
    assert json.loads((r / "config.json").read_text())["bad_images"] == "skip"


def test_a_report_whose_seals_were_removed_is_not_replaced(run, tmp_path, capsys):
    import shutil

    r = tmp_path / "r"
    shutil.copytree(run, r)
    report = tmp_path / "rep.json"
    argv = ["eval", str(r), "--attacks", "clean", "--diagnostics", "off", "--quiet", "--output", str(report)]
    assert main(argv) == 0
    d = json.loads(report.read_text())
    del d["report_sha256"], d["markdown_sha256"]
    d["my note"] = "keep this"
    report.write_text(json.dumps(d))
    rc, text = _call(argv, capsys)
    assert rc == 2 and "was changed since eae eval wrote it" in text
    assert json.loads(report.read_text())["my note"] == "keep this"


def test_validation_options_without_validation_images_are_refused():
    import eae

    for kw, field in ((dict(overfit_action="rollback"), "overfit_action"), (dict(val_aa_n=10), "val_aa_n")):
        with pytest.raises(eae.ConfigError, match="val_size is 0") as e:
            eae.TrainConfig(val_size=0, **kw)
        assert e.value.field == field
    eae.TrainConfig(val_size=0)  # warn, and no aa: fine


def test_an_attack_called_directly_checks_its_inputs():
    import eae
    from eae.models import create_model

    torch.manual_seed(0)
    model = create_model("convnet_nobn", 10).eval()
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    attack = eae.build_attack("pgd2", eps=8 / 255)
    for args, fragment in (((x, y.float()), "integer class labels"), ((x[0], y[:1]), "x must be images"),
                           ((x * 3, y), "must lie in [0, 1]"), ((x.to("meta"), y), "meta device")):
        with pytest.raises(eae.ConfigError, match=re.escape(fragment)):
            attack(model, *args)
    xu = (x * 255).round().to(torch.uint8)  # uint8 images are read as 0-255, like evaluate's
    adv = attack(model, xu, y)
    assert adv.dtype == torch.float32 and (adv - xu.float() / 255).abs().max() <= 8 / 255 + 1e-6


def test_evaluate_on_meta_tensors_is_a_config_error():
    import eae
    from eae.models import create_model

    model = create_model("convnet_nobn", 10)
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    for xx, yy, name in ((x.to("meta"), y, "x"), (x, y.to("meta"), "y")):
        with pytest.raises(eae.ConfigError, match="meta device") as e:
            eae.evaluate(model, xx, yy, ["clean"], device="cpu", diagnostics="off")
        assert e.value.field == name


def test_a_toml_date_is_refused_naming_the_file_and_the_key(tmp_path, capsys):
    preset = tmp_path / "p.toml"
    preset.write_text("epochs = 1979-05-27\n")
    for extra in ([], ["--epochs", "1"]):  # a flag over it does not hide it
        rc, text = _call(["train", *SYN, "--config", str(preset), *extra, "--out", str(tmp_path / "r")], capsys)
        assert rc == 2 and f"{preset}: epochs = 1979-05-27: a date or time" in text
    assert not (tmp_path / "r").exists()


def test_create_model_bounds_classes_and_a_missing_library_is_an_eae_error():
    import eae
    from eae.models.library import import_library

    with pytest.raises(eae.ConfigError, match="num_classes must be an integer in"):
        eae.create_model("resnet_small", num_classes=10**9)
    with pytest.raises(eae.ConfigError, match="unknown head"):
        eae.create_model("resnet_small", head="x")
    with pytest.raises(eae.MissingDependency, match="architecture nolib_xyz:net needs nolib_xyz") as e:
        import_library("nolib_xyz", "nolib_xyz:net")
    assert isinstance(e.value, eae.EaeError) and isinstance(e.value, ImportError)


def test_eae_debug_shows_the_traceback_and_keeps_the_status(monkeypatch, capsys):
    monkeypatch.setenv("EAE_DEBUG", "1")
    rc = main(["train", *SYN, "--eps", "3", "--out", "unused"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" in err and "error: " in err and "internal error" not in err


def test_a_folder_in_place_of_the_lock_is_refused(tmp_path, capsys):
    r = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "1", "--out", str(r)]) == 0
    (r / ".lock").unlink()
    (r / ".lock").mkdir()
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(r), "--resume"], capsys)
    assert rc == 2 and ".lock is a folder where eae keeps its lock file" in text and (r / ".lock").is_dir()


def test_cifar10_not_found_without_download_says_how_to_fetch(tmp_path, capsys):
    rc, text = _call(["data", "cifar10", "--no-download", "--data-dir", str(tmp_path)], capsys)
    assert rc == 2 and "`eae data cifar10` (with the same --data-dir), without --no-download, fetches it" in text


def test_under_torchrun_a_bad_setting_is_said_by_rank_0_only(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    rc = main(["train", *SYN, "--eps", "3", "--out", "unused"])
    assert rc == 2 and capsys.readouterr().err == ""


def test_an_output_that_cannot_be_written_is_refused_before_the_attacks(run, tmp_path, capsys):
    rc, text = _call(["eval", str(run), "--attacks", "clean", "--diagnostics", "off", "--output",
                      str(tmp_path / "r.txt")], capsys)
    assert rc == 2 and "must be a file name ending in .json" in text and "clean" not in text.split("error")[0]


def test_a_large_photo_is_decoded_without_pillows_warning(tmp_path, monkeypatch):
    import warnings

    from PIL import Image

    from eae.data.imagefolder import decode

    path = tmp_path / "big.png"
    Image.new("RGB", (40, 40), (1, 2, 3)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 pixels: over the warning, under the error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode(str(path), 8, train=False).shape == (3, 8, 8)


# --------------------------------------------------------------------------- trial 11
@pytest.mark.parametrize("kw,field", [(dict(lr_schedule="piecewise", lr_gamma=1e300), "lr_gamma"),
                                      (dict(weight_decay=1e300), "weight_decay")])
def test_an_lr_gamma_or_weight_decay_that_would_overflow_is_refused(kw, field):
    import eae

    with pytest.raises(eae.ConfigError, match=f"{field} must be at most") as e:
        eae.TrainConfig(**kw)
    assert e.value.field == field


def test_training_piped_into_head_with_stderr_goes_on_to_the_end(tmp_path):
    out = tmp_path / "r"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = " ".join([sys.executable, "-m", "eae", "train", *[a for a in SYN if a != "--quiet"], "--epochs", "3",
                    "--out", str(out)])
    res = subprocess.run(["bash", "-c", f"{cmd} 2>&1 | head -1; exit ${{PIPESTATUS[0]}}"], env=env, timeout=300)
    assert res.returncode == 141 and (out / "model.safetensors").is_file()  # the work went on, unprinted
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_an_l2_evaluation_at_eps_0_has_no_sweep_but_no_error(run, tmp_path, capsys):
    rc, text = _call(["eval", str(run), "--norm", "l2", "--eps", "0", "--n", "16", "--attacks", "clean,pgd2",
                      "--diag-n", "16", "--output", str(tmp_path / "r.json")], capsys)
    evidence = json.dumps(json.loads((tmp_path / "r.json").read_text())["evidence"], ensure_ascii=False)
    assert rc == 0 and "no ε sweep" in evidence, text


def test_tiny_different_eps_get_their_own_reports(run, tmp_path, capsys):
    import shutil

    r = tmp_path / "r"
    shutil.copytree(run, r)
    for eps in ("0", "1e-12"):
        assert main(["eval", str(r), "--eps", eps, "--n", "4", "--attacks", "clean", "--diagnostics", "off",
                     "--quiet"]) == 0
    names = sorted(p.name for p in r.glob("eval-*linf-eps*.json"))
    assert names == ["eval-clean-n4-linf-eps0-255-diagoff.json", "eval-clean-n4-linf-eps1e-12-diagoff.json"], names


def test_a_resumed_bench_does_not_reuse_a_run_trained_with_other_settings(tmp_path, monkeypatch):
    import eae
    from eae.bench import runner

    suite = runner.get_bench_suite("smoke")
    entry = suite.entries[0]
    run_dir = tmp_path / "runs" / f"{entry.name}-s0"
    run_dir.mkdir(parents=True)
    cfg = runner._config(suite, entry, 0, run_dir, "cpu", None)
    from eae.outputs import sealed
    from eae.utils import atomic_write_json

    atomic_write_json(run_dir / "config.json", {**cfg.to_dict(), "eps": 0.1})  # edited, or another suite's
    atomic_write_json(run_dir / "bench_eval.json", sealed({"entry": entry.name}))
    with pytest.raises(eae.ConfigError, match=r"trained with other settings than this entry's \(eps 0.1"):
        runner._accuracy_run(suite, entry, 0, tmp_path, "cpu", None, True, lambda *a: None)
    atomic_write_json(run_dir / "config.json", cfg.to_dict())  # the entry's own: reused
    assert runner._accuracy_run(suite, entry, 0, tmp_path, "cpu", None, True, lambda *a: None) == {"entry": entry.name}


def test_run_files_errors_are_eae_errors_and_a_bom_is_read(run, tmp_path):
    import shutil

    import eae
    from eae.checkpoint import read_config
    from eae.training.folder import read_metrics

    r = tmp_path / "r"
    shutil.copytree(run, r)
    (r / "config.json").write_bytes(b"\xef\xbb\xbf" + (r / "config.json").read_bytes())
    (r / "metrics.jsonl").write_bytes(b"\xef\xbb\xbf" + (r / "metrics.jsonl").read_bytes())
    assert read_config(r).method == "fgsm_rs" and len(read_metrics(r / "metrics.jsonl", 1)) == 1
    (r / "config.json").write_text("[1, 2]")
    with pytest.raises(eae.CheckpointError) as e:
        eae.load(r)
    assert isinstance(e.value, eae.EaeError)


def test_a_metrics_row_with_a_word_for_a_number_is_named(run, tmp_path):
    from eae.training.folder import read_metrics

    m = tmp_path / "metrics.jsonl"
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    m.write_text(json.dumps({**row, "val_clean": "high"}) + "\n" + json.dumps({**row, "epoch": 2}) + "\n")
    with pytest.raises(ValueError, match="line 1: not a metrics row of eae \\(val_clean is 'high', not a finite number"):
        read_metrics(m, 2)


def test_registries_check_what_is_registered():
    import eae
    from eae.registry import Registry

    reg = Registry("model")
    reg.register("a")(lambda **k: None)
    for name, obj, fragment in (("a", lambda: None, "already registered"), (None, lambda: None, "non-empty string"),
                                (" b", lambda: None, "non-empty string"), ("c", 42, "register a class or a function")):
        with pytest.raises(eae.ConfigError, match=fragment):
            reg.register(name)(obj)
    assert reg.names() == ["a"] and reg["a"] is reg.get("a")
    with pytest.raises(eae.UnknownName):
        reg["zz"]


def test_evaluate_refuses_a_non_attack_or_one_built_for_another_radius():
    import eae
    from eae.models import create_model

    model = create_model("convnet_nobn", 10)
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    with pytest.raises(eae.ConfigError, match=r"attacks\['mine'\] must be an attack"):
        eae.evaluate(model, x, y, {"mine": 42}, eps=1 / 255, diagnostics="off")
    with pytest.raises(eae.ConfigError, match=r"attacks\['big'\] is built for eps 0.5 \(linf\)"):
        eae.evaluate(model, x, y, {"big": eae.build_attack("pgd2", eps=0.5)}, eps=1 / 255, diagnostics="off")
    with pytest.raises(eae.ModelError, match="must be a torch.nn.Module"):
        eae.evaluate(lambda t: model(t), x, y, ["clean"], diagnostics="off")
    r = eae.evaluate(model, x, y, {"same": eae.build_attack("pgd2", eps=1 / 255)}, eps=1 / 255, diagnostics="off")
    assert "same" in r.accuracy


def test_every_step_skipped_is_no_loss_not_a_zero(tmp_path, capsys):
    out = tmp_path / "r"
    rc = main(["train", *[a for a in SYN if a != "--quiet"], "--method", "eae", "--eae-temperature", "1e-300",
               "--nonfinite", "skip", "--epochs", "1", "--out", str(out)])
    text = capsys.readouterr()
    row = json.loads((out / "metrics.jsonl").read_text())
    assert rc == 0 and "every step skipped" in text.out and row["train_loss"] is None and row["skipped_steps"] == 2
    assert "lr_scheduler.step()" not in text.err


def test_the_nonfinite_advice_names_a_tiny_temperature_and_the_weight_decay():
    from eae.config import TrainConfig
    from eae.training.guards import nonfinite_advice

    text = nonfinite_advice(TrainConfig(method="eae", eae_temperature=1e-3, weight_decay=0.5), False)
    assert "a larger --eae-temperature (now 0.001; default 1)" in text and "--weight-decay (now 0.5" in text
    text = nonfinite_advice(TrainConfig(method="eae", eae_budget="relative", eae_rel=50.0), False)
    assert "--eae-rel (now 50" in text


def test_more_option_mistakes_are_refused_before_anything_runs(run, tmp_path, capsys):
    import eae
    from eae.bench.runner import run_bench

    with pytest.raises(eae.ConfigError, match=r"seeds must be an integer in \[1, 1000\]"):
        run_bench("smoke", tmp_path / "b", seeds=1001, device="cpu")
    (tmp_path / "net.py").write_text("import torch\nclass Net(torch.nn.Sequential):\n    def __init__(self):\n"
                                     "        super().__init__(torch.nn.Flatten(), torch.nn.LazyLinear(10))\n")
    for kw, fragment in ((dict(dataset="synthetic", image_size=64), "image_size is for dataset imagefolder"),
                         (dict(dataset="synthetic", bad_images="skip"), "bad_images is for dataset imagefolder"),
                         (dict(val_size=32, val_aa_n=1000), "val_aa_n 1000 is more than the 32 validation images")):
        with pytest.raises(eae.ConfigError, match=fragment):
            eae.TrainConfig(**kw)
    for argv, fragment in ((["eval", str(run), "--data-dir", str(tmp_path)], "trained on synthetic data"),
                           (["eval", str(run), "--strict", "--diagnostics", "off"], "--strict exits by"),
                           (["eval", str(run), "--output", "/dev/null"], "got '/dev/null'"),
                           (["eval", "--model", f"{tmp_path / 'net.py'}:Net", "--weights", str(run / "checkpoint.pt")],
                            "the training checkpoint of an eae run")):
        rc, text = _call(argv, capsys)
        assert rc == 2 and fragment in text, text
    preset = tmp_path / "p.toml"
    preset.write_text("resume = true\n")
    rc, text = _call(["train", *SYN, "--config", str(preset), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and f"config file {preset}: unknown field(s) resume (resume: a command-line option" in text


def test_events_after_a_torn_line_and_a_resume_stay_readable(tmp_path):
    from eae.config import TrainConfig
    from eae.training.folder import RunFolder

    cfg = TrainConfig(dataset="synthetic", out=str(tmp_path / "r"))
    (tmp_path / "r").mkdir()
    events = tmp_path / "r" / "events.jsonl"
    events.write_text('{"epoch": 3, "event": "ca')  # cut by a crash mid-line
    RunFolder(cfg, lambda *a: None).event(8, "overfit", action="warn")
    lines = events.read_text().splitlines()
    assert lines[0] == '{"epoch": 3, "event": "ca' and json.loads(lines[1]) == {"epoch": 8, "event": "overfit",
                                                                                 "action": "warn"}


def test_a_train_subset_beyond_the_data_is_said(tmp_path, capsys):
    assert main(["train", *SYN, "--epochs", "1", "--train-subset", "100000", "--out", str(tmp_path / "r")]) == 0
    assert "train_subset 100,000 is more than the 128 training images" in capsys.readouterr().err


def test_an_edited_result_row_of_a_bench_is_not_reported(tmp_path):
    import eae
    from eae.bench import runner
    from eae.outputs import sealed
    from eae.utils import atomic_write_json

    path = tmp_path / "bench_eval.json"
    atomic_write_json(path, sealed({"entry": "standard", "clean": 0.8, "aa": 0.1}))
    assert runner._read_row(path) == {"entry": "standard", "clean": 0.8, "aa": 0.1}
    d = json.loads(path.read_text())
    d["aa"] = 0.5
    path.write_text(json.dumps(d))
    with pytest.raises(eae.ConfigError, match="was changed since the benchmark wrote it"):
        runner._read_row(path)


def test_a_run_config_with_a_count_written_as_text_is_refused(run, tmp_path):
    import shutil

    import eae
    from eae.checkpoint import read_config

    r = tmp_path / "r"
    shutil.copytree(run, r)
    d = json.loads((r / "config.json").read_text())
    (r / "config.json").write_text(json.dumps({**d, "epochs": "2"}))
    with pytest.raises(eae.CheckpointError, match="epochs = '2': give a whole number"):
        read_config(r)
    (r / "config.json").write_text(json.dumps({**d, "a_future_field": 1}))  # unknown fields: still read
    assert read_config(r).epochs == d["epochs"]


def test_weights_copied_from_another_run_are_not_evaluated_as_this_ones(run, tmp_path, capsys):
    import shutil

    import eae

    other = tmp_path / "other"
    assert main(["train", *SYN, "--method", "fgsm_rs", "--epochs", "1", "--seed", "7", "--out", str(other)]) == 0
    r = tmp_path / "r"
    shutil.copytree(run, r)
    eae.load(r)  # its own weights: loaded
    shutil.copy(other / "model.safetensors", r / "model.safetensors")
    with pytest.raises(eae.CheckpointError, match="was saved by a run with other settings"):
        eae.load(r)
    rc, text = _call(["eval", str(r), "--attacks", "clean", "--diagnostics", "off"], capsys)
    assert rc == 2 and "weights copied from another run" in text


def test_unreadable_weights_are_said_to_be_unreadable(run, tmp_path, monkeypatch):
    import builtins
    import shutil

    import eae

    r = tmp_path / "r"
    shutil.copytree(run, r)
    real_open = builtins.open

    def no_read(file, *a, **k):  # as chmod 000 does for a user other than root (tests may run as root)
        if str(file) == str(r / "model.safetensors"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", no_read)
    with pytest.raises(eae.CheckpointError, match=r"model.safetensors: cannot be read \(Permission denied\)"):
        eae.load(r)


# --------------------------------------------------------------------------- trial 12
def test_a_users_attack_is_checked_before_its_points_are_scored():
    import eae
    from eae.models import create_model

    torch.manual_seed(0)
    model = create_model("convnet_nobn", 10).eval()
    x = torch.rand(8, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point correct: every point is attacked
    for attack, fragment in ((lambda m, xx, yy: torch.rand_like(xx), "beyond eps"),
                             (lambda m, xx, yy: xx * 3, "outside [0, 1]"),
                             (lambda m, xx, yy: xx[:1], "not float images of shape"),
                             (lambda m, xx, yy: None, "returned NoneType")):
        with pytest.raises(eae.ConfigError, match=re.escape(fragment)):
            eae.evaluate(model, x, y, {"mine": attack}, eps=8 / 255, diagnostics="off")
    r = eae.evaluate(model, x, y, {"ok": lambda m, xx, yy: (xx + 4 / 255).clamp(0, 1)}, eps=8 / 255, diagnostics="off")
    assert "ok" in r.accuracy


def test_eval_of_a_run_named_through_dotdot_saves_its_report(run, tmp_path, monkeypatch, capsys):
    import shutil

    r = tmp_path / "r"
    shutil.copytree(run, r)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    rc, text = _call(["eval", "../r", "--attacks", "clean", "--diagnostics", "off", "--quiet"], capsys)
    assert rc == 0 and (r / "eval-clean-diagoff.json").is_file(), text


def test_a_guard_stop_is_an_eae_error_and_still_exits_4(tmp_path, capsys):
    import eae
    from eae.training.guards import TrainingStopped

    assert issubclass(TrainingStopped, eae.EaeError)
    rc = main(["train", *SYN, "--method", "eae", "--eae-temperature", "1e-300", "--epochs", "1",
               "--out", str(tmp_path / "r")])
    assert rc == 4 and "non-finite" in capsys.readouterr().err


# --------------------------------------------------------------------------- trial 12's open list
def test_a_registered_attack_is_checked_like_a_dict_one():
    import eae

    model, x, y = _tiny_model_and_points(8)

    class Noise:  # ignores its radius: its points are random images
        def __init__(self, eps, norm="linf"):
            self.eps, self.norm = eps, norm

        def __call__(self, m, xx, yy):
            return torch.rand_like(xx)

    eae.ATTACKS.register("hostile_noise")(Noise)
    try:
        with pytest.raises(eae.ConfigError, match=re.escape("attacks['hostile_noise'] returned points")):
            eae.evaluate(model, x, y, ["hostile_noise"], eps=8 / 255, diagnostics="off")
    finally:
        eae.ATTACKS._entries.pop("hostile_noise")
    r = eae.evaluate(model, x, y, ["pgd2"], eps=8 / 255, diagnostics="off", precision="fp32")
    assert r.accuracy["pgd2"] <= r.clean_accuracy  # the built-in ones pass the same check


@pytest.mark.parametrize("attacks,fragment", [
    ({"clean": lambda m, x, y: x}, "attacks['clean'] is the clean accuracy"),
    ({"mine": None}, "attacks['mine'] is None, which only 'clean' may be"),
    ({"mine": 3}, "attacks['mine'] must be an attack"),
    ({3: lambda m, x, y: x}, "got 3"),
    ({"": lambda m, x, y: x}, "got ''"),
    ({"a\nb": lambda m, x, y: x}, "got 'a\\nb'"),
])
def test_attack_dict_names_are_row_labels(attacks, fragment):
    import eae
    from eae.models import create_model

    model = create_model("convnet_nobn", 10).eval()
    with pytest.raises(eae.ConfigError, match=re.escape(fragment)):
        eae.evaluate(model, torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), attacks, eps=8 / 255,
                     diagnostics="off")


@pytest.mark.parametrize("registry,name", [("MODELS", "timm:fake"), ("METHODS", "x\ny"), ("ATTACKS", "att2"),
                                           ("ATTACKS", "Mine"), ("MODELS", "a b")])
def test_registries_refuse_names_no_flag_could_select(registry, name):
    import eae

    with pytest.raises(eae.ConfigError, match="name is made of"):
        getattr(eae, registry).register(name)
    assert name not in getattr(eae, registry).names()


def _two_epochs(tmp_path) -> Path:
    out = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "3", "--stop-after", "2", "--out", str(out)]) == 0
    return out


def _edit_row(out: Path, line: int, **change) -> None:
    rows = (out / "metrics.jsonl").read_text().splitlines()
    rows[line] = json.dumps({**json.loads(rows[line]), **change})
    (out / "metrics.jsonl").write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize("edit,fragment", [
    (lambda out: _edit_row(out, 0, train_acc=1.7), "line 1: not a metrics row of eae (train_acc is 1.7, outside [0, 1])"),
    (lambda out: _edit_row(out, 1, seconds=-5.0), "line 2: not a metrics row of eae (seconds is -5.0, outside the"),
    (lambda out: _edit_row(out, 1, epoch=1), "line 2: not a metrics row of eae (epoch 1 after epoch 1"),
    (lambda out: _edit_row(out, 1, epoch=2.0), "line 2: not a metrics row of eae (not an object with an integer"),
    (lambda out: _edit_row(out, 0, train_loss=2.5), "metrics.jsonl is not the history checkpoint.pt recorded"),
    (lambda out: ((out / "metrics.jsonl").unlink(), (out / "metrics.jsonl").mkdir()), "metrics.jsonl is a folder, where the run keeps a file"),
    (lambda out: (out / "events.jsonl").mkdir(), "events.jsonl is a folder, where the run keeps a file"),
])
def test_resume_refuses_a_metrics_history_it_did_not_write(tmp_path, edit, fragment, capsys):
    out = _two_epochs(tmp_path)
    edit(out)
    before = _tree_hash(out)
    capsys.readouterr()
    rc, text = _call(["train", *SYN, "--epochs", "3", "--out", str(out), "--resume"], capsys)
    assert rc == 2 and fragment in text and len(text.strip().splitlines()) == 1, text
    assert _tree_hash(out) == before


def test_resume_refuses_metrics_copied_from_another_run(tmp_path, capsys):
    out = _two_epochs(tmp_path)
    other = tmp_path / "other"
    assert main(["train", *SYN, "--epochs", "3", "--stop-after", "2", "--seed", "5", "--out", str(other)]) == 0
    (out / "metrics.jsonl").write_bytes((other / "metrics.jsonl").read_bytes())
    capsys.readouterr()
    rc, text = _call(["train", *SYN, "--epochs", "3", "--out", str(out), "--resume"], capsys)
    assert rc == 2 and "not the history checkpoint.pt recorded for epochs 1-2" in text, text


def test_a_rollback_refuses_the_best_checkpoint_of_another_run(tmp_path):
    from eae.config import TrainConfig
    from eae.training.folder import RunFolder

    out = _two_epochs(tmp_path)
    other = tmp_path / "other"
    assert main(["train", *SYN, "--epochs", "1", "--seed", "5", "--val-size", "32", "--out", str(other)]) == 0
    (out / "checkpoint_best.pt").unlink(missing_ok=True)
    import shutil

    shutil.copy(other / "checkpoint_best.pt", out / "checkpoint_best.pt")
    from eae.checkpoint import read_config

    folder = RunFolder(read_config(out), print)
    import eae

    with pytest.raises(eae.EaeError, match="is the checkpoint of another run \\(.*seed: 5, this run 0"):
        folder.load_best_checkpoint()
    assert isinstance(folder.cfg, TrainConfig)


def test_a_key_added_to_config_json_is_named_when_the_weights_refuse_it(run, tmp_path, capsys):
    r = _copy(run, tmp_path)
    cfg = json.loads((r / "config.json").read_text())
    (r / "config.json").write_text(json.dumps({**cfg, "my_note": "try 2"}))
    rc, text = _call(["eval", str(r), "--attacks", "clean", "--diagnostics", "off", "--quiet"], capsys)
    assert rc == 2 and "my_note: 'try 2' in config.json, not a setting of the weights' run" in text, text


def test_a_run_of_a_registered_model_opened_where_it_is_not_registered_says_so(tmp_path, capsys):
    import eae
    from eae.models import Classifier
    from torch import nn

    @eae.MODELS.register("hostile_linear")
    def hostile_linear(num_classes=10, mean=None, std=None):
        return Classifier(nn.Flatten(), 3 * 16 * 16, num_classes, mean, std)

    try:
        assert main(["train", *SYN, "--arch", "hostile_linear", "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    finally:
        eae.MODELS._entries.pop("hostile_linear")  # a new process: the registration is gone
    capsys.readouterr()
    rc, text = _call(["eval", str(tmp_path / "r"), "--attacks", "clean", "--diagnostics", "off"], capsys)
    assert rc == 2 and "the architecture 'hostile_linear', which is not registered in this process" in text, text
    assert "config.json" not in text and "--model" not in text  # (synthetic data: only a run can be evaluated)


def _linear(size=16):
    from eae.models import Classifier
    from torch import nn

    return lambda num_classes=10, mean=None, std=None: Classifier(nn.Flatten(), 3 * size * size, num_classes, mean, std)


def _train_registered(registry: str, flag: str, factory, tmp_path, capsys):
    """`eae train` of ``factory``, registered for the call as 'hostile_x' in eae.<registry>."""
    import eae

    getattr(eae, registry).register("hostile_x")(factory)
    try:
        return _call(["train", *SYN, flag, "hostile_x", "--epochs", "1", "--out", str(tmp_path / "r")], capsys)
    finally:
        getattr(eae, registry)._entries.pop("hostile_x")


@pytest.mark.parametrize("factory,fragment", [
    (lambda num_classes: None, "its factory, called as hostile_x(num_classes=10, mean=..., std=...), failed: TypeError"),
    (lambda num_classes=10, mean=None, std=None: torch.nn.Linear(3, 3), "built a Linear, not an eae.models.Classifier"),
    (lambda num_classes=10, mean=None, std=None: _linear()(3, mean, std), "built a classifier of 3 classes, asked for 10"),
    (lambda num_classes=10, mean=None, std=None: _linear(8)(num_classes, mean, std), "the model failed on a batch of shape (2, 3, 16, 16)"),
])
def test_a_registered_model_is_checked_before_training(tmp_path, factory, fragment, capsys):
    rc, text = _train_registered("MODELS", "--arch", factory, tmp_path, capsys)
    assert rc == 2 and fragment in text and "internal error" not in text, text
    assert not (tmp_path / "r").exists()  # a new run that could not start leaves nothing


def _method(step):
    from eae.methods import Method

    return type("HostileMethod", (Method,), {"adversarial": False, "step": step})


@pytest.mark.parametrize("factory,fragment", [
    (lambda: None, "its factory, called with the run's TrainConfig, failed: TypeError"),
    (lambda cfg: object(), "built a object, not an eae.methods.Method"),
    (_method(lambda self, m, x, y, e: m(x).sum()), "its step returned a Tensor, not an eae.methods.StepOutput"),
    (_method(lambda self, m, x, y, e: eae_step(m(x).detach(), m(x))), "a loss with no gradient"),
    (_method(lambda self, m, x, y, e: eae_step(torch.nn.functional.cross_entropy(m(x), y), m(x)[:1])),
     "logits that are not (64, classes)"),
])
def test_a_registered_method_is_checked_before_its_step_is_used(tmp_path, factory, fragment, capsys):
    rc, text = _train_registered("METHODS", "--method", factory, tmp_path, capsys)
    assert rc == 2 and fragment in text and "internal error" not in text, text


def eae_step(loss_or_logits, logits):
    from eae.methods import StepOutput

    loss = loss_or_logits if loss_or_logits.ndim == 0 else loss_or_logits.sum()
    return StepOutput(loss, logits)


@pytest.mark.parametrize("change,fragment", [
    ({"image_size": 32}, "dataset.json says 32x32 images, the synthetic data of its config has 16x16"),
    ({"classes": ["a", "b"], "num_classes": 2}, "dataset.json says 2 classes (a, b), the synthetic data"),
    ({"num_classes": "10"}, "not a valid dataset record (num_classes is '10', but classes lists 10)"),
    ({"num_classes": -3}, "num_classes is -3"),
    ({"image_size": 0}, "image_size is 0, not a size in pixels"),
])
def test_an_edited_dataset_record_of_a_synthetic_run_is_named_as_edited(run, tmp_path, change, fragment, capsys):
    r = _copy(run, tmp_path)
    rec = json.loads((r / "dataset.json").read_text())
    (r / "dataset.json").write_text(json.dumps({**rec, **change}))
    rc, text = _call(["eval", str(r), "--attacks", "clean", "--diagnostics", "off", "--quiet"], capsys)
    assert rc == 2 and fragment in text and "--data-dir" not in text, text


def test_a_demo_over_a_demo_of_other_sizes_says_what_to_do(tmp_path):
    import eae
    from eae.demo import demo_config, run_demo
    from eae.outputs import OutputFolder

    out = tmp_path / "demo"
    OutputFolder(out, "demo").claim()
    (out / "standard").mkdir()
    earlier = demo_config("standard", str(out), None, "cpu", 600, 1).to_dict()
    (out / "standard" / "config.json").write_text(json.dumps(earlier))
    before = _tree_hash(out)
    with pytest.raises(eae.EaeError, match="holds a demo of other settings \\(standard: train_subset 600, epochs 1, val_every 1"
                                           "\\); nothing was changed: give another --out, or move"):
        run_demo(out=str(out), device="cpu", quiet=True, train_subset=64, epochs=2, n_test=16)
    assert _tree_hash(out) == before


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_tiny_eps_is_not_taken_for_masking(norm):
    from eae.models import Classifier
    from torch import nn

    torch.manual_seed(0)
    model = Classifier(nn.Flatten(), 3 * 8 * 8, 10, (0.5,) * 3, (0.5,) * 3).eval()  # linear: nothing to mask
    x = torch.rand(100, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    r = evaluate(model, x, y, ["pgd2"], eps=1e-8, norm=norm, diagnostics="full", diag_n=100)
    assert r.verdict == "ok", r.evidence
    assert any("below one grey level" in e for e in r.evidence)


class _Drift(torch.nn.Module):  # updates a buffer in every forward pass, and its outputs with it
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3 * 8 * 8, 10)
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x):
        self.seen += 1
        return self.lin(x.flatten(1)) * (1 + 0.5 * torch.sin(self.seen))


class _Flips(torch.nn.Module):  # a Python counter: its answers turn after a few calls
    def __init__(self):
        super().__init__()
        self.lin, self.calls = torch.nn.Linear(3 * 8 * 8, 10), 0

    def forward(self, x):
        self.calls += 1
        out = self.lin(x.flatten(1))
        return out if self.calls < 5 else -out


def test_a_model_that_changes_while_it_is_evaluated_is_seen():
    import eae

    torch.manual_seed(0)
    x = torch.rand(50, 3, 8, 8)
    drift = _Drift().eval()
    with torch.no_grad():
        y = drift.lin(x.flatten(1)).argmax(1)
    with pytest.raises(eae.ModelError, match="parameters or buffers changed during pgd2 \\(seen\\)"):
        evaluate(drift, x, y, ["pgd2"], eps=8 / 255, diagnostics="off")
    flips = _Flips().eval()
    flips.lin.load_state_dict(drift.lin.state_dict())
    r = evaluate(flips, x, y, ["pgd2"], eps=8 / 255, diagnostics="cheap")
    assert r.verdict != "ok" and any("clean predictions changed during the evaluation at 50 of 50" in e
                                     for e in r.evidence)


# --------------------------------------------------------------------------- trial 13
def test_an_attack_that_writes_into_its_inputs_is_checked_against_the_originals():
    import eae

    model, x, y = _tiny_model_and_points(16)

    def overwrite(m, xb, yb):  # random images, written into the batch it was given
        xb.copy_(torch.rand_like(xb))
        return xb

    def relabel(m, xb, yb):  # the clean images, with the labels it was given changed
        yb.fill_(int(y[0]) + 1)
        return xb.clone()

    with pytest.raises(eae.ConfigError, match="beyond eps"):
        evaluate(model, x, y, {"overwrite": overwrite}, eps=8 / 255, diagnostics="off")
    assert evaluate(model, x, y, {"relabel": relabel}, eps=8 / 255, diagnostics="off").accuracy["relabel"] == 1.0


def _tiny_model_and_points(n=16):
    from eae.models import create_model

    torch.manual_seed(0)
    model = create_model("convnet_nobn", 10).eval()
    x = torch.rand(n, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_eps_as_a_fraction_is_a_float_and_an_empty_suite_is_refused():
    from fractions import Fraction

    import eae

    model, x, y = _tiny_model_and_points()
    r = evaluate(model, x, y, ["pgd2"], eps=Fraction(8, 255), diagnostics="off")
    assert r.eps == 8 / 255 and isinstance(r.eps, float)
    assert eae.build_attack("pgd2", Fraction(8, 255)).threat.eps == 8 / 255
    with pytest.raises(eae.ConfigError, match="suite must be a suite name"):
        evaluate(model, x, y, suite="", diagnostics="off")


def test_evaluation_under_inference_mode_says_so():
    import eae

    model, x, y = _tiny_model_and_points()
    with torch.inference_mode(), pytest.raises(eae.ConfigError, match="torch.inference_mode"):
        evaluate(model, x, y, ["pgd2"], diagnostics="off")
    with torch.inference_mode(), pytest.raises(eae.ConfigError, match="torch.inference_mode"):
        eae.build_attack("pgd2", 8 / 255)(model, x, y)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"std": (0, 0, 0)}, "std must be > 0"), ({"std": (float("nan"),) * 3}, "std must be 1 or 3 finite numbers"),
    ({"mean": (0.5, 0.5)}, "mean must be 1 or 3 finite numbers"), ({"mean": "abc"}, "mean must be a sequence"),
])
def test_normalisation_constants_are_checked_when_the_model_is_built(kwargs, fragment):
    import eae

    with pytest.raises(eae.ConfigError, match=fragment):
        eae.create_model("resnet_small", **kwargs)


@pytest.mark.parametrize("name", ["apgd-ce", "fab-t", "clean"])
def test_attack_names_a_spec_reads_otherwise_cannot_be_registered(name):
    import eae

    with pytest.raises(eae.ConfigError, match="already registered \\((an alias|the clean)"):
        eae.ATTACKS.register(name)


def test_an_attack_dict_name_with_a_column_mark_is_refused():
    import eae

    model, x, y = _tiny_model_and_points()
    with pytest.raises(eae.ConfigError, match="'\\|'"):
        evaluate(model, x, y, {"a|b": eae.build_attack("pgd2", 8 / 255)}, diagnostics="off")


def test_report_outputs_are_checked_before_the_attacks(run, tmp_path, capsys):
    rc, text = _call(["eval", str(run), "--attacks", "clean,pgd1", "--diagnostics", "off", "--quiet",
                      "--output", str(run / "config.json" / "x.json")], capsys)
    assert rc == 2 and "config.json is a file, not a folder" in text and "| clean" not in text, text
    hidden = tmp_path / ".hidden.json"  # a hidden name is a name
    rc, text = _call(["eval", str(run), "--attacks", "clean", "--diagnostics", "off", "--quiet",
                      "--output", str(hidden)], capsys)
    assert rc == 0 and hidden.is_file() and hidden.with_suffix(".md").is_file(), text


def test_a_run_in_a_folder_whose_name_is_not_utf8_is_evaluated(tmp_path, capsys):
    out = Path(os.fsdecode(bytes(tmp_path) + b"/bad\xff"))
    assert main(["train", *SYN, "--epochs", "1", "--out", str(out)]) == 0
    rc, text = _call(["eval", str(out), "--attacks", "clean", "--diagnostics", "off", "--quiet"], capsys)
    assert rc == 0 and (out / "eval-clean-diagoff.json").is_file(), text


@pytest.mark.parametrize("argv,fragment", [
    (["--eps", "1e-400"], "too small for a float"),
    (["--eps", "1e-300/1e300"], "too small for a float"),
    (["--data-dir", "/nonexistent"], "data_dir is for data read from disk; synthetic data is generated"),
])
def test_train_refuses_values_that_would_be_read_as_something_else(tmp_path, argv, fragment, capsys):
    rc, text = _call(["train", *SYN, "--epochs", "1", *argv, "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and fragment in text and not (tmp_path / "r").exists(), text


@pytest.mark.parametrize("toml,fragment", [
    ('out = "../escape"', "out = '../escape' in"),
    ("lr_max = nan", "invalid config: lr_max must be a finite number >= 0, got nan (lr_max set in "),
    ("lr_milestones = [[1]]", "error: config field lr_milestones: not a number: [1] (lr_milestones set in "),
])
def test_preset_mistakes_are_named_once_and_as_the_presets(tmp_path, toml, fragment, capsys):
    preset = tmp_path / "p.toml"
    preset.write_text(toml + "\n")
    rc, text = _call(["train", *SYN, "--epochs", "1", "--config", str(preset)], capsys)
    assert rc == 2 and fragment in text and "--out" not in text, text


def test_a_device_edited_into_config_json_is_named_with_the_file(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "2", "--stop-after", "1", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "device": "tpu"}))
    capsys.readouterr()
    rc, text = _call(["train", "--out", str(out), "--resume", "--quiet"], capsys)
    assert rc == 2 and "config.json: unknown device 'tpu'" in text and "give --device" in text, text


def test_stopping_after_the_last_rollback_does_not_advise_rollbacks(tmp_path, capsys):
    rc, text = _call(["train", *SYN, "--val-attack-steps", "10", "--method", "fgsm_rs", "--epochs", "6", "--seed", "3",
                      "--overfit-action", "rollback_lower_step", "--overfit-drop", "0.01", "--out", str(tmp_path / "r")],
                     capsys)
    assert rc == 4 and "rollbacks with a lower step did not prevent it" in text, text
    assert "try --overfit-action rollback_lower_step" not in text


def test_resume_reads_metrics_rows_whatever_their_key_order(tmp_path, capsys):
    out = _two_epochs(tmp_path)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r, sort_keys=True, indent=None) + "\n" for r in rows))
    capsys.readouterr()
    rc, text = _call(["train", *SYN, "--epochs", "3", "--out", str(out), "--resume"], capsys)
    assert rc == 0, text


def test_final_weights_copied_over_the_best_are_not_scored_as_best(run, tmp_path, capsys):
    import shutil

    r = _copy(run, tmp_path)
    shutil.copy(r / "model.safetensors", r / "model_best.safetensors")
    rc, text = _call(["eval", str(r), "--weights", "best", "--attacks", "clean", "--diagnostics", "off"], capsys)
    assert rc == 2 and "holds final weights (no best epoch recorded)" in text, text


def test_sixteen_bit_and_float_images_are_refused_not_read_white(tmp_path):
    from PIL import Image

    import numpy as np

    from eae.data.imagefolder import decode

    for mode, arr in (("I;16", np.full((20, 20), 30000, dtype=np.uint16)),
                      ("F", np.full((20, 20), 0.5, dtype=np.float32))):
        path = tmp_path / f"x{mode[0]}.{'png' if mode != 'F' else 'tiff'}"
        Image.fromarray(arr).save(path)  # uint16 -> I;16, float32 -> F
        with pytest.raises(ValueError, match="16-bit or floating-point pixels"):
            decode(str(path), 16, train=False)


def test_an_attack_that_changes_the_model_is_named():
    import eae

    model, x, y = _tiny_model_and_points()

    def vandal(m, xb, yb):
        with torch.no_grad():
            for p in m.parameters():
                p.zero_()
        return xb.clone()

    with pytest.raises(eae.ModelError, match="changed during vandal .*or that attack wrote into them"):
        evaluate(model, x, y, {"vandal": vandal}, diagnostics="off")


# --------------------------------------------------------------------------- trial 14
def test_best_weights_copied_over_the_final_are_not_scored_as_final(run, tmp_path, capsys):
    import shutil

    import eae

    r = _copy(run, tmp_path)
    shutil.copy(r / "model_best.safetensors", r / "model.safetensors")
    rc, text = _call(["eval", str(r), "--attacks", "clean", "--diagnostics", "off"], capsys)
    assert rc == 2 and "holds the best weights of epoch 1, not the final ones" in text, text
    with pytest.raises(eae.EaeError, match="not the final ones"):
        eae.load(r)


def test_a_run_resumed_after_it_finished_is_still_the_same_evaluation(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["eval", str(out), "--attacks", "clean", "--diagnostics", "off", "--quiet"]
    assert main(["train", *SYN, "--epochs", "1", "--out", str(out)]) == 0
    assert main(argv) == 0
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0  # rewrites the same weights
    capsys.readouterr()
    rc, text = _call(argv, capsys)
    assert rc == 0 and "an earlier report of the same evaluation" in text, text


def test_strict_without_diagnostic_points_is_refused_before_the_attacks(run, capsys):
    rc, text = _call(["eval", str(run), "--attacks", "clean,pgd1", "--diagnostics", "cheap", "--diag-n", "0",
                      "--strict"], capsys)
    assert rc == 2 and "--diag-n 0 leaves without points" in text and "| clean" not in text, text


@pytest.mark.parametrize("argv,fragment", [
    (["--method", "fgsm_rs", "--overfit-action", "stop", "--overfit-step-factor", "0.3"],
     "overfit_step_factor 0.3 acts with overfit_action rollback_lower_step only, not 'stop'"),
    (["--max-rollbacks", "2"], "max_rollbacks 2 acts with overfit_action rollback or rollback_lower_step only"),
])
def test_guard_options_of_an_action_not_taken_are_refused(tmp_path, argv, fragment, capsys):
    rc, text = _call(["train", *SYN, "--epochs", "1", *argv, "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and fragment in text, text


# --------------------------------------------------------------------------- trial 15
def test_an_attack_named_twice_is_refused_not_merged(run, capsys):
    import eae

    model, x, y = _tiny_model_and_points()
    for specs in (["pgd2", "PGD2"], ["pgd2", "pgd2r1"], ["pgd2", "pgd02"], ["pgd2", "pgd\u0662"], ["fab-t", "fabt"]):
        with pytest.raises(eae.ConfigError, match=f"attacks {specs[0]!r} and {specs[1]!r} are one attack"):
            evaluate(model, x, y, specs, diagnostics="off")
    rc, text = _call(["eval", str(run), "--attacks", "clean,pgd1,pgd1", "--diagnostics", "off"], capsys)
    assert rc == 2 and "are one attack" in text and "| clean" not in text, text


def test_an_unknown_method_in_train_is_an_unknown_name():
    import eae

    cfg = eae.TrainConfig(dataset="synthetic", epochs=1)
    with pytest.raises(eae.UnknownName, match="unknown training method 'nope'") as info:
        eae.train(cfg.replace(method="nope"))
    assert info.value.field == "method"


@pytest.mark.parametrize("change,field", [
    (dict(robust_accuracy=float("nan")), "robust_accuracy"), (dict(n=-5), "n"), (dict(clean_accuracy=1.5), "clean"),
    (dict(eps=5.0), "eps"), (dict(test_size=3), "test_size"), (dict(verdict="great"), "verdict"),
])
def test_a_report_built_by_hand_is_checked(change, field):
    import eae

    good = dict(suite="custom", label="custom", n=20, eps=8 / 255, norm="linf", seed=0, precision="fp32",
                clean_accuracy=0.5, per_attack={"pgd2": {"accuracy": 0.3, "mode": "standalone", "seconds": 0.1,
                                                         "n_attacked": 10}}, robust_accuracy=0.3, seconds=1.0)
    eae.EvalResult(**good).to_markdown()
    with pytest.raises(eae.ConfigError, match=f"report field {field}"):
        eae.EvalResult(**{**good, **change})


def test_a_float64_model_is_told_to_be_float():
    import eae

    model, x, y = _tiny_model_and_points()
    with pytest.raises(eae.ModelError, match="parameters are float64.*model.float\\(\\)"):
        evaluate(model.double(), x.double(), y, ["pgd2"], diagnostics="off")



# --------------------------------------------------------------------------- trial 16
@pytest.mark.parametrize("label,fragment", [
    ("**worst case**", "a row of every report is named so already"), ("Clean", "a row of every report is named so"),
    ("pgd20", "reads as the built-in attack pgd20 but is another attack"),
])
def test_attack_dict_labels_cannot_pass_for_other_rows(label, fragment):
    import eae

    model, x, y = _tiny_model_and_points()
    with pytest.raises(eae.ConfigError, match=re.escape(fragment)):
        evaluate(model, x, y, {label: eae.build_attack("pgd2", 8 / 255)}, diagnostics="off")
    r = evaluate(model, x, y, {"pgd20": eae.build_attack("pgd20", 8 / 255)}, diagnostics="off")  # its own name: fine
    assert "pgd20" in r.accuracy


def test_attack_specs_from_a_generator_are_read():
    model, x, y = _tiny_model_and_points()
    r = evaluate(model, x, y, (a for a in ["clean", "pgd2"]), diagnostics="off")
    assert list(r.accuracy) == ["clean", "pgd2"] and "clean accuracy only" not in r.label
    assert "clean accuracy only" in evaluate(model, x, y, ["clean"], diagnostics="off").label


@pytest.mark.parametrize("change,field", [
    (dict(seconds=-5.0), "seconds"), (dict(seconds=float("nan")), "seconds"), (dict(seed=-1), "seed"),
    (dict(eot=0), "eot"), (dict(precision="fp8"), "precision"),
    (dict(per_attack={"pgd2": {"accuracy": 0.3, "mode": "standalone", "seconds": 0.1, "n_attacked": -4}}), "per_attack"),
    (dict(per_attack={"pgd2": {"accuracy": 0.3, "mode": "standalone", "seconds": -1.0, "n_attacked": 4}}), "per_attack"),
    (dict(per_attack={"pgd2": None}), "per_attack"), (dict(per_attack=[1, 2]), "per_attack"),
    (dict(per_attack={"pgd2": {"accuracy": 0.9, "mode": "standalone", "seconds": 0.1, "n_attacked": 4}}),
     "per_attack['pgd2']"),
    (dict(n=0, test_size=0, per_attack={}), "clean_accuracy"),
])
def test_a_report_built_by_hand_is_checked_in_every_field(change, field):
    import eae

    good = dict(suite="custom", label="custom", n=20, eps=8 / 255, norm="linf", seed=0, precision="fp32",
                clean_accuracy=0.5, per_attack={"pgd2": {"accuracy": 0.3, "mode": "standalone", "seconds": 0.1,
                                                         "n_attacked": 10}}, robust_accuracy=0.3, seconds=1.0)
    with pytest.raises(eae.ConfigError, match=f"report field {re.escape(field)}"):
        eae.EvalResult(**{**good, **change})


def test_strict_on_a_test_set_too_small_for_it_says_so(run, capsys):
    rc, text = _call(["eval", str(run), "--attacks", "clean", "--strict"], capsys)
    assert rc == 2 and "this test set has 64: leave --strict out here" in text, text
    rc, text = _call(["eval", str(run), "--attacks", "clean", "--strict", "--diagnostics", "off"], capsys)
    assert rc == 2 and "--diag-n 100 or more points" in text, text


# --------------------------------------------------------------------------- trial 17
def _resave_plain(src: Path, dst: Path) -> None:
    """The tensors of a weights file saved again by plain safetensors: no metadata."""
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(src)), str(dst))


@pytest.mark.parametrize("weights", ["final", "best"])
def test_weights_resaved_without_their_metadata_are_refused(run, tmp_path, capsys, weights):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval*"))
    name = "model.safetensors" if weights == "final" else "model_best.safetensors"
    other = "model_best.safetensors" if weights == "final" else "model.safetensors"
    _resave_plain(run / other, copy / name)  # the other weights, under this name, their run's checks gone
    rc, text = _call(["eval", str(copy), "--attacks", "clean", "--diagnostics", "off", "--weights", weights], capsys)
    assert rc == 2 and "lacks what eae train records in a run's weights" in text, text
    assert not list(copy.glob("eval*")), "nothing scored, nothing written"


def test_a_bench_row_weights_file_without_its_digest_is_refused(run, tmp_path):
    from eae.bench.runner import _weights_of
    from eae.checkpoint import CheckpointError

    assert set(_weights_of(run)) == {"weights_sha256"}
    bare = tmp_path / "row"
    bare.mkdir()
    assert _weights_of(bare) == {}  # not trained yet: nothing to compare
    _resave_plain(run / "model.safetensors", bare / "model.safetensors")
    with pytest.raises(CheckpointError, match="carries no SHA-256 of its tensors"):
        _weights_of(bare)


def test_the_attack_batch_size_names_its_own_report(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval*"))
    base = ["eval", str(copy), "--attacks", "clean,pgd2", "--diagnostics", "off"]
    for extra, name in (([], "eval-clean+pgd2-diagoff.json"), (["--batch-size", "7"], "eval-clean+pgd2-diagoff-bs7.json"),
                        (["--batch-size", "1000"], "eval-clean+pgd2-diagoff.json")):  # 64 images: one batch as 500
        rc, text = _call(base + extra, capsys)
        assert rc == 0 and f"written: {copy.resolve() / name}" in text, text
    assert json.loads((copy / "eval-clean+pgd2-diagoff-bs7.json").read_text())["batch_size"] == 7


def test_a_registered_attack_is_checked_for_its_radius_and_its_return(monkeypatch):
    import eae
    from eae.attacks import PGD

    monkeypatch.setitem(eae.ATTACKS._entries, "weak", lambda eps, norm="linf": PGD(eps / 8, norm=norm, steps=2))
    monkeypatch.setitem(eae.ATTACKS._entries, "ltwo", lambda eps, norm="linf": PGD(eps, norm="l2", steps=2))
    monkeypatch.setitem(eae.ATTACKS._entries, "nothing", lambda eps, norm="linf": None)
    model, x, y = _tiny_model_and_points()
    for spec, fragment in (("weak", "is built for eps 0.00392157 (linf)"), ("ltwo", "(l2), but this evaluation"),
                           ("nothing", "returned NoneType, not an attack")):
        with pytest.raises(eae.ConfigError, match=re.escape(fragment)):
            evaluate(model, x, y, ["clean", spec], diagnostics="off")


@pytest.mark.parametrize("label,refused", [
    ("apgd-ce", True), ("square", True), ("fgsm", True), ("CW-20", True), ("PGD-20", True), ("worst-case", True),
    ("pgd", False), ("PGD 2", False), ("my-pgd", False),
])
def test_dict_labels_that_read_as_other_attacks(label, refused):
    import eae

    model, x, y = _tiny_model_and_points()
    call = lambda: evaluate(model, x, y, {label: eae.build_attack("pgd2", 8 / 255)}, diagnostics="off")  # noqa: E731
    if refused:
        with pytest.raises(eae.ConfigError, match="reads as the built-in attack|a row of every report is named so"):
            call()
    else:
        assert label in call().accuracy


def test_one_attack_under_two_dict_labels_is_refused():
    import eae

    model, x, y = _tiny_model_and_points()
    pgd2 = eae.build_attack("pgd2", 8 / 255)
    for attacks in ({"a": pgd2, "b": pgd2}, {"a": pgd2, "b": eae.build_attack("pgd2", 8 / 255)}):
        with pytest.raises(eae.ConfigError, match="'a' and 'b' are one attack"):
            evaluate(model, x, y, attacks, diagnostics="off")
    r = evaluate(model, x, y, {"a": lambda m, xb, yb: xb, "b": lambda m, xb, yb: xb}, diagnostics="off")
    assert list(r.per_attack) == ["a", "b"]  # two functions are two attacks, whatever they do


_ROW17 = {"accuracy": 0.3, "mode": "standalone", "seconds": 0.1, "n_attacked": 5}


@pytest.mark.parametrize("change,field", [
    (dict(n=3, test_size=3, clean_accuracy=0.5, robust_accuracy=0.0,
          per_attack={"pgd2": {**_ROW17, "accuracy": 0.0, "n_attacked": 1}}), "clean_accuracy"),  # 1.5 images
    (dict(per_attack={"pgd2": {**_ROW17, "n_attacked": 9}}), "per_attack['pgd2']"),  # 5 are clean-correct
    (dict(per_attack={"clean": _ROW17}), "per_attack"), (dict(per_attack={"p|g": _ROW17}), "per_attack"),
    (dict(per_attack={"pgd2": {"accuracy": 0.3, "mode": "standalone"}}), "per_attack"),
    (dict(evidence=None), "evidence"), (dict(evidence="ab"), "evidence"),
    (dict(label=None), "label"), (dict(label="a\n| fake | row |"), "label"), (dict(suite=5), "suite"),
    (dict(robust_accuracy=0.2, per_attack={"a": {**_ROW17, "accuracy": 0.2, "mode": "cascade"},
                                           "b": {**_ROW17, "accuracy": 0.3, "mode": "cascade", "n_attacked": 4}}),
     "per_attack['b']"),  # a cascade never rises
])
def test_a_report_built_by_hand_holds_only_what_an_evaluation_could(change, field):
    import eae

    good = dict(suite="custom", label="x", n=10, eps=8 / 255, norm="linf", seed=0, precision="fp32",
                clean_accuracy=0.5, per_attack={"pgd2": dict(_ROW17)}, robust_accuracy=0.3, seconds=1.0, test_size=10)
    eae.EvalResult(**good).to_markdown()
    with pytest.raises(eae.ConfigError, match=f"report field {re.escape(field)}"):
        eae.EvalResult(**{**good, **change})


def test_another_evaluation_is_described_in_a_few_lines():
    from eae.outputs import _differs

    now = {"settings": "quick", "of": "the run's weights sha256:ab on cifar10"}
    text = _differs({**now, "of": "x" * 10**6}, now)
    assert len(text) < 1000 and "it scored 'xxx" in text
    assert "other fields (extra)" in _differs({**now, "extra": 1}, now)


@pytest.mark.parametrize("flags,fragment", [
    (["--val-attack-steps", "0", "--overfit-action", "rollback"], "but val_attack_steps is 0"),
    (["--method", "standard", "--overfit-action", "rollback_lower_step"], "standard training has none to lose"),
])
def test_guard_actions_that_could_never_act_are_refused(tmp_path, capsys, flags, fragment):
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(tmp_path / "r"), *flags], capsys)
    assert rc == 2 and fragment in text, text
    assert not (tmp_path / "r").exists()


def test_without_validation_attacks_no_robust_accuracy_is_recorded(tmp_path, capsys):
    rc, text = _call(["train", *SYN, "--method", "standard", "--epochs", "1", "--val-attack-steps", "0",
                      "--out", str(tmp_path / "r")], capsys)
    assert rc == 0, text
    row = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["val_robust"] is None and "val_pgd" not in row and 0 <= row["val_clean"] <= 1


@pytest.mark.parametrize("kind", ["loop", "dangling"])
def test_eval_of_a_broken_link_says_what_it_is(tmp_path, capsys, kind):
    link = tmp_path / "A"
    if kind == "loop":
        (tmp_path / "B").symlink_to(link)
    link.symlink_to(tmp_path / "B" if kind == "loop" else tmp_path / "nowhere")
    rc, text = _call(["eval", str(link)], capsys)
    assert rc == 2 and ("a loop of links" if kind == "loop" else "which does not exist") in text, text


# --------------------------------------------------------------------------- trial 18
def test_weights_without_their_runs_settings_are_refused_but_an_earlier_runs_are_read(run, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    from eae.checkpoint import weights_metadata

    meta = {k: v for k, v in weights_metadata(run / "model.safetensors").items() if k != "config"}
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval*"))
    save_file(load_file(str(run / "model.safetensors")), str(copy / "model.safetensors"), metadata=meta)
    rc, text = _call(["eval", str(copy), "--attacks", "clean", "--diagnostics", "off"], capsys)
    assert rc == 2 and "its run's settings" in text, text
    # a run of an earlier version: its config.json lacks fields of today's, its weights their settings
    cfg = json.loads((copy / "config.json").read_text())
    del cfg["unverified_data"], cfg["svhn_extra"]
    (copy / "config.json").write_text(json.dumps(cfg))
    rc, text = _call(["eval", str(copy), "--attacks", "clean", "--diagnostics", "off"], capsys)
    assert rc == 0 and "| clean |" in text, text


@pytest.mark.parametrize("label", ["worstcase", "WORSTCASE", "worst\u2010case", "\uff57\uff4f\uff52\uff53\uff54 case",
                                   "\uff43\uff4c\uff45\uff41\uff4e", "\uff50\uff47\uff44\uff12\uff10",
                                   "PGD\u201120"])
def test_labels_that_read_as_other_rows_in_other_spellings_are_refused(label):
    import eae

    model, x, y = _tiny_model_and_points()
    with pytest.raises(eae.ConfigError, match="reads as the built-in attack|a row of every report is named so"):
        evaluate(model, x, y, {label: eae.build_attack("pgd2", 8 / 255)}, diagnostics="off")


@pytest.mark.parametrize("name", ["worstcase", "worst-case", "worst_case", "apgd_ce"])
def test_attack_names_that_read_as_reserved_ones_cannot_be_registered(name):
    import eae

    with pytest.raises(eae.ConfigError, match="is already registered"):
        eae.ATTACKS.register(name)
    assert name not in eae.ATTACKS


_R18 = lambda a, k, mode="standalone": {"accuracy": a, "mode": mode, "seconds": 0.1, "n_attacked": k}  # noqa: E731


@pytest.mark.parametrize("change,field", [
    (dict(per_attack={}, robust_accuracy=0.0), "robust_accuracy"),  # nothing ran: the worst case is the clean
    (dict(per_attack={"pgd20": _R18(0.4, 10)}, robust_accuracy=0.0), "robust_accuracy"),
    (dict(per_attack={"pgd20": _R18(0.45, 10), "cw20": _R18(0.45, 10)}, robust_accuracy=0.0), "robust_accuracy"),
    (dict(per_attack={"apgd-ce": _R18(0.1, 10, "cascade"), "apgd-t": _R18(0.1, 10, "cascade")}, robust_accuracy=0.1),
     "per_attack['apgd-t']"),  # the first left 2 points standing
    (dict(eot=10**30), "eot"),
])
def test_a_hand_built_worst_case_is_one_the_attacks_could_give(change, field):
    import eae

    good = dict(suite="custom", label="m", n=20, eps=8 / 255, norm="linf", seed=0, precision="fp32", seconds=1.0,
                clean_accuracy=0.5, per_attack={"pgd20": _R18(0.4, 10)}, robust_accuracy=0.4)
    eae.EvalResult(**good)
    eae.EvalResult(**{**good, "per_attack": {"a": _R18(0.45, 10), "b": _R18(0.45, 10)}, "robust_accuracy": 0.4})
    with pytest.raises(eae.ConfigError, match=f"report field {re.escape(field)}"):
        eae.EvalResult(**{**good, **change})


@pytest.mark.parametrize("given,fragment", [
    ({"epochs": "3"}, "epochs = '3': give a whole number"), ({"epochs": 2.0}, "epochs = 2.0: give a whole number"),
    ({"augment": "yes"}, "augment = 'yes': give true or false"), (None, "a config is a dict"),
    (["epochs", 3], "a config is a dict"), ({1: 2}, "a config is a dict"),
])
def test_from_dict_takes_values_as_a_preset_gives_them(given, fragment):
    import eae

    with pytest.raises(eae.ConfigError, match=re.escape(fragment)):
        eae.TrainConfig.from_dict(given)
    with pytest.raises(eae.ConfigError, match="give a path"):
        eae.TrainConfig.from_toml(b"configs/cifar10_preact18_eae.toml")


def test_aa_fast_during_training_needs_the_validation_attacks():
    import eae

    with pytest.raises(eae.ConfigError, match="val_aa_n 10 with val_attack_steps 0"):
        eae.TrainConfig(method="fgsm_rs", val_attack_steps=0, val_aa_n=10)


def test_a_bench_report_names_the_command_as_typed(monkeypatch):
    import sys

    from eae.bench.runner import _command_line

    monkeypatch.setattr(sys, "argv", ["/somewhere/src/eae/__main__.py", "bench", "smoke", "--out", "b 1"])
    assert _command_line() == "eae bench smoke --out 'b 1'"
    monkeypatch.setattr(sys, "argv", ["scripts/mine.py", "--x"])
    assert _command_line() == "scripts/mine.py --x"


def test_a_hidden_file_named_as_an_image_is_said_to_be_left_out(tmp_path, capsys):
    from PIL import Image

    from eae.data.imagefolder import scan_folder

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / c / "0.png")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "a" / "._0.png").write_bytes(b"AppleDouble")
    assert len(scan_folder(tmp_path).samples) == 2 and "hidden" not in capsys.readouterr().err  # junk: silent
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / ".hidden.png")
    assert len(scan_folder(tmp_path).samples) == 2
    assert "1 hidden file(s) with an image's name left out" in capsys.readouterr().err


def test_a_report_written_into_the_test_folder_is_refused(external, capsys):
    inside = str(Path(external["DATA"]) / "val" / "r.json")
    rc, text = _call(_external_argv(external, "{MODELS}:Tiny", "{TINY}", ["--output", inside]), capsys)
    assert rc == 2 and "is inside the image folder" in text, text
    assert not Path(inside).exists()


# --------------------------------------------------------------------------- trial 19
def test_evaluate_gives_a_users_attack_back_as_it_was():
    import eae

    model, x, y = _tiny_model_and_points()
    pgd = eae.build_attack("pgd2", 8 / 255)
    own = dict(vars(pgd))
    for _ in range(2):  # the same call twice: the same answer
        assert list(evaluate(model, x, y, {"pgd2": pgd}, diagnostics="off", eot=3).per_attack) == ["pgd2"]
    assert vars(pgd) == own  # not left in the evaluation's precision and EOT
    with pytest.raises(eae.ConfigError, match="'a' and 'b' are one attack"):
        evaluate(model, x, y, {"a": pgd, "b": eae.build_attack("pgd2", 8 / 255)}, diagnostics="off")


@pytest.mark.parametrize("typed,canonical", [
    ("PGD5", "pgd5"), ("pgd5r1", "pgd5"), ("pgd", "pgd20"), ("apgd", "apgd-ce100"), ("apgd-ce", "apgd-ce100"),
    ("fabt", "fab-t100"), ("square", "square5000"), ("fgsm", "fgsm"), ("pgd5r3", "pgd5r3"), ("clean", "clean"),
])
def test_one_attack_has_one_spelling_in_report_names(typed, canonical):
    from eae.attacks import canonical_spec

    assert canonical_spec(typed) == canonical


def test_spellings_of_one_attack_are_one_evaluation(run, tmp_path, capsys):
    out = str(tmp_path / "same.json")
    for i, spec in enumerate(("clean,pgd1", "CLEAN,PGD1r1")):
        rc, text = _call(["eval", str(run), "--attacks", spec, "--diagnostics", "off", "--output", out], capsys)
        assert rc == 0 and ("replaces" in text) == (i == 1), text
    rc, text = _call(["eval", str(run), "--attacks", "clean,clean", "--diagnostics", "off", "--output", out], capsys)
    assert rc == 2 and "are the clean row: give it once" in text, text


def test_the_advice_for_a_checkpoint_given_as_weights_can_be_pasted(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "my run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval*"))
    rc, text = _call(["eval", "--model", "resnet_small", "--weights", str(copy / "checkpoint.pt"), "--attacks",
                      "clean"], capsys)
    assert rc == 2 and f"`eae eval '{copy}'`" in text, text


def test_workers_are_for_the_datasets_that_decode():
    import eae

    with pytest.raises(eae.ConfigError, match="workers is for dataset imagefolder or tiny-imagenet, not synthetic"):
        eae.TrainConfig(dataset="synthetic", workers=3)
    assert eae.TrainConfig(dataset="tiny-imagenet", workers=3).workers == 3


def test_the_best_weights_of_a_run_without_validation_are_said_to_be_its_last(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "1", "--val-size", "0", "--val-attack-steps", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    rc, text = _call(["eval", str(out), "--weights", "best", "--attacks", "clean", "--diagnostics", "off"], capsys)
    assert rc == 0 and "its best is its last" in text, text


# --------------------------------------------------------------------------- trial 20
def test_clean_anywhere_in_the_list_is_one_report(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval*"))
    for spec in ("pgd1", "clean,pgd1", "pgd1,clean"):
        rc, text = _call(["eval", str(copy), "--attacks", spec, "--diagnostics", "off"], capsys)
        assert rc == 0, text
    assert sorted(p.name for p in copy.glob("eval*.json")) == ["eval-clean+pgd1-diagoff.json"]
    rc, text = _call(["eval", str(copy), "--attacks", "apgd-ce,APGD", "--diagnostics", "off"], capsys)
    assert rc == 2 and "--attacks apgd-ce and APGD are one attack (apgd-ce100): give it once" in text, text


def test_an_interrupted_bench_that_kept_nothing_says_so(tmp_path):
    from argparse import Namespace

    from eae.cli import _resume_hint, cmd_bench

    args = Namespace(func=cmd_bench, suite="cifar10-budget", out=str(tmp_path / "gone"), seeds=1, budget_k=None)
    assert "nothing to resume; the same command starts it again" in _resume_hint(args)
    (tmp_path / "gone").mkdir()
    assert "--resume" in _resume_hint(args)


def test_a_data_path_through_a_missing_folder_and_dot_dot_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EAE_DATA_DIR", "relative/../data")
    rc, text = _call(["data", "cifar10", "--no-download"], capsys)
    assert rc == 2 and "goes through relative, which is not a folder, before '..'" in text, text
    assert not (tmp_path / "relative").exists()


@pytest.mark.parametrize("argv,fragment", [
    (["train", *SYN, "--sync-bn"], "sync_bn needs CUDA devices"),
    (["list", "--quiet"], "eae list: error: unrecognized arguments: --quiet"),
    (["train", "--config", ""], "the config file's path is empty"), (["train", "--config", " "], "path is empty"),

])
def test_more_mistakes_said_by_the_command_that_knows(tmp_path, capsys, argv, fragment):
    rc, text = _call([*argv, "--out", str(tmp_path / "r")] if argv[0] == "train" else argv, capsys)
    assert rc == 2 and fragment in text, text
    assert not (tmp_path / "r").exists()


def test_clean_twice_is_said_as_typed(run, capsys):
    rc, text = _call(["eval", str(run), "--attacks", "CLEAN,clean", "--diagnostics", "off"], capsys)
    assert rc == 2 and "--attacks CLEAN and clean are the clean row: give it once" in text, text


@pytest.mark.skipif(torch.cuda.is_available(), reason="device auto is CUDA here")
def test_sync_bn_on_a_machine_without_cuda_is_refused_before_the_run_folder(tmp_path, capsys):
    out = tmp_path / "r"
    rc, text = _call(["train", *[a for a in SYN if a not in ("--device", "cpu")], "--sync-bn", "--out", str(out)],
                     capsys)
    assert rc == 2 and "--sync-bn needs CUDA devices" in text and "this run is on cpu" in text, text
    assert not out.exists()


# --------------------------------------------------------------------------- trial 22
def test_an_out_starting_with_tilde_means_the_home_folder_never_a_folder_named_tilde(tmp_path, monkeypatch):
    from eae.config import TrainConfig

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert TrainConfig(out="~/runs/x").out == str(tmp_path / "home" / "runs" / "x")


def test_a_quoted_tilde_is_read_as_a_shell_reads_it_by_every_command(run, tmp_path, monkeypatch, capsys):
    import shutil

    from eae.cli import build_parser

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = str(tmp_path / "home")
    p = build_parser()
    assert p.parse_args(["eval", "~/r", "--output", "~/rep.json"]).output == f"{home}/rep.json"
    assert p.parse_args(["eval", "~/r"]).run_dir == f"{home}/r"
    assert p.parse_args(["bench", "smoke", "--out", "~/b"]).out == f"{home}/b"
    assert p.parse_args(["demo", "--out", "~/d"]).out == f"{home}/d"
    for literal in ("./~", "~nosuchuser_eae/x"):  # as a shell leaves them: a folder so named here, said in full
        assert p.parse_args(["demo", "--out", literal]).out == os.path.abspath(literal)
    assert p.parse_args(["demo", "--out", "sub/~"]).out == "sub/~"
    (tmp_path / "home" / "runs").mkdir(parents=True)
    shutil.copytree(run, tmp_path / "home" / "runs" / "a")
    import eae

    assert eae.load("~/runs/a") is not None  # the API reads a path as the run's out was read
    monkeypatch.chdir(tmp_path)
    rc, text = _call(["eval", "~/runs/a", "--attacks", "clean", "--diagnostics", "off"], capsys)
    assert rc == 0 and not (tmp_path / "~").exists(), text


def test_a_run_whose_out_was_given_with_a_tilde_resumes_from_a_preset(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    preset = tmp_path / "t.toml"
    preset.write_text('out = "~/runs/e"\n')
    assert main(["train", *SYN, "--epochs", "2", "--stop-after", "1", "--config", str(preset)]) == 0
    rc, text = _call(["train", "--config", str(preset), "--resume", "--quiet"], capsys)
    assert rc == 0 and (tmp_path / "home" / "runs" / "e" / "model.safetensors").is_file(), text
    assert not (tmp_path / "~").exists()


def test_a_data_dir_for_synthetic_data_is_refused_in_a_preset_and_in_python(tmp_path, capsys):
    from eae.config import TrainConfig
    from eae.errors import ConfigError

    with pytest.raises(ConfigError, match="data_dir is for data read from disk; synthetic data is generated") as e:
        TrainConfig(dataset="synthetic", data_dir="/nonexistent")
    assert e.value.field == "data_dir"
    preset = tmp_path / "p.toml"
    preset.write_text('dataset = "synthetic"\ndata_dir = "/nonexistent"\n')
    rc, text = _call(["train", *SYN, "--config", str(preset), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and "data_dir is for data read from disk; synthetic data is generated" in text and not (tmp_path / "r").exists(), text


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_is_told_to_convert_not_to_check_image_sizes(dtype):
    from eae.errors import ModelError

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).to(dtype)
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,))
    with pytest.raises(ModelError, match=f"its parameters are {str(dtype)[6:]}.*model.float()") as e:
        evaluate(model, x, y, ["clean"], diagnostics="off")
    assert "check that it takes images of this size" not in str(e.value)


@pytest.mark.parametrize("name,argv", [
    ("model.safetensors", ["eval", "{R}", "--attacks", "clean", "--diagnostics", "off"]),
    ("model_best.safetensors", ["eval", "{R}", "--weights", "best", "--attacks", "clean", "--diagnostics", "off"]),
    ("config.json", ["eval", "{R}", "--attacks", "clean", "--diagnostics", "off"]),
    ("dataset.json", ["eval", "{R}", "--attacks", "clean", "--diagnostics", "off"]),
    ("checkpoint.pt", ["train", "--out", "{R}", "--resume"]),
    ("dataset.json", ["train", "--out", "{R}", "--resume"]),
    ("environment.json", ["train", "--out", "{R}", "--resume"]),
])
def test_a_folder_where_a_run_keeps_a_file_is_said_as_such(run, tmp_path, capsys, name, argv):
    import shutil

    copy = tmp_path / "R"
    shutil.copytree(run, copy)
    (copy / name).unlink()
    (copy / name).mkdir()
    before = _tree_hash(copy)
    rc, text = _call([a.replace("{R}", str(copy)) for a in argv], capsys)
    assert rc == 2 and f"{copy / name} is a folder, where the run keeps a file of its own" in text, text
    assert "not found" not in text and "has not finished" not in text
    assert _tree_hash(copy) == before


def test_a_read_only_run_folder_is_named_not_a_temporary_file(run, tmp_path, monkeypatch, capsys):
    import shutil

    from eae import utils

    copy = tmp_path / "R"
    shutil.copytree(run, copy)

    def refused(*a, **k):  # what an immutable folder (chattr +i) answers, even to root
        raise PermissionError(1, "Operation not permitted", str(copy / ".metrics.jsonl.eae-tmp-abcdefgh"))

    monkeypatch.setattr(utils.tempfile, "mkstemp", refused)
    with pytest.raises(PermissionError) as e:
        utils.atomic_write_bytes(copy / "metrics.jsonl", b"")
    assert e.value.filename == str(copy) and "no file can be created in the folder" in str(e.value)


def test_image_folder_decoding_uses_no_more_processes_than_cores(tmp_path, monkeypatch):
    from eae.data import imagefolder
    from eae import system

    monkeypatch.setattr(system, "available_cores", lambda: 1)
    loader = imagefolder.FolderLoader([], 4, 8, workers=8)
    assert loader.workers == 1


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(batch_size=np.int64(4)), "batch_size must be an integer in 1..2,147,483,647, got np.int64(4) (numpy.int64): "
                                   "give a Python int, int(value)"),
    (dict(seed=np.int64(1)), "(numpy.int64): give a Python int"),
    (dict(test_size=np.int64(100)), "(numpy.int64): give a Python int"),
    (dict(progress="no"), "progress must be True or False, got 'no'"),
])
def test_evaluate_says_what_fixes_a_numpy_number(kwargs, fragment):
    from eae.errors import ConfigError

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    with pytest.raises(ConfigError) as e:
        evaluate(model, torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,)), ["clean"], diagnostics="off", **kwargs)
    assert fragment in str(e.value)


def test_train_config_says_what_fixes_a_numpy_or_fraction_number():
    from fractions import Fraction

    from eae.config import TrainConfig
    from eae.errors import ConfigError

    with pytest.raises(ConfigError, match=r"epochs must be an integer, got np.int64\(1\) \(numpy.int64\): give a "
                                          r"Python int, int\(value\)"):
        TrainConfig(epochs=np.int64(1))
    with pytest.raises(ConfigError, match=r"\(fractions.Fraction\): give a Python float, float\(value\)"):
        TrainConfig(eps=Fraction(8, 255))


def test_none_for_an_attack_other_than_clean_is_said_once_with_its_fix():
    from eae.errors import ConfigError

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    for attacks in ({"clean": None, "pgd2": None}, {"mine": None}):
        with pytest.raises(ConfigError, match=r"is None, which only 'clean' may be: give an attack"):
            evaluate(model, torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,)), attacks, diagnostics="off")


def test_a_model_class_instead_of_an_instance_is_said_so():
    from eae.errors import ModelError

    class Net(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10]

    with pytest.raises(ModelError, match=r"model is the class Net, not a network: pass an instance, Net\(\.\.\.\)"):
        evaluate(Net, torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,)), ["clean"], diagnostics="off")


def test_a_finished_run_whose_final_weights_went_missing_is_not_called_unfinished(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "R"
    shutil.copytree(run, copy)
    (copy / "model.safetensors").unlink()
    rc, text = _call(["eval", str(copy), "--attacks", "clean", "--diagnostics", "off"], capsys)
    assert rc == 2 and "the run finished all 1 epochs, but its final weights were moved or deleted" in text, text
    assert "has not finished" not in text
    assert main(["train", "--out", str(copy), "--resume", "--quiet"]) == 0  # the advice, followed
    assert (copy / "model.safetensors").is_file()


def test_a_path_starting_with_a_dash_gets_the_way_to_name_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-dash").mkdir()
    rc, text = _call(["eval", "-dash"], capsys)
    assert rc == 2 and "write ./-dash" in text, text


def test_model_kwargs_given_twice_are_refused(tmp_path, capsys):
    rc, text = _call(["eval", "--model", "resnet_small", "--weights", str(tmp_path / "w.pt"), "--dataset", "cifar10",
                      "--model-kwargs", '{"width": 1, "width": 2}'], capsys)
    assert rc == 2 and "--model-kwargs: 'width' is given twice" in text, text


def test_a_newline_in_a_path_is_escaped_in_the_error_line(tmp_path, capsys):
    rc, text = _call(["eval", str(tmp_path / "runs\nbase")], capsys)
    assert rc == 2 and "runs\\nbase" in text and text.count("\n") == 1, text


def test_a_file_name_too_long_says_so_and_how_to_fix_it():
    from eae.cli import _user_error

    status, text = _user_error(OSError(36, "File name too long", "runs/" + "a" * 300))
    assert status == 2 and "longer than the file system allows, usually 255 bytes: shorten it" in text


# --------------------------------------------------------------------------- trial 23
def test_headline_parts_on_synthetic_data_take_no_data_dir(tmp_path):
    from eae.bench import headline
    from eae.bench.runner import _config
    from eae.bench.suites import get_bench_suite

    h = object.__new__(headline.Headline)
    h.device, h.data_dir, h.scale = "cpu", str(tmp_path), headline.TINY
    assert h.config(tmp_path / "s", **{"dataset": "synthetic", **headline.TINY.smoke}).data_dir is None
    assert h.config(tmp_path / "p", method="pgd", **headline.TINY.speed).data_dir is None
    assert h.config(tmp_path / "r", **headline.TINY.run).data_dir == str(tmp_path)  # CIFAR-10: the folder given
    suite = get_bench_suite("smoke")
    assert _config(suite, suite.entries[0], 0, tmp_path / "x", "cpu", str(tmp_path)).data_dir == str(tmp_path)


@pytest.mark.parametrize("env,fragment", [
    ({"WORLD_SIZE": "abc"}, "$WORLD_SIZE is 'abc', not a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, "$MASTER_ADDR and $MASTER_PORT are not set: start the "
                                                          "processes with torchrun"),
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "x", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, "$LOCAL_RANK is 'x'"),
])
def test_launcher_variables_set_by_hand_are_said_in_one_line(tmp_path, monkeypatch, capsys, env, fragment):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and fragment in text and not (tmp_path / "r").exists(), text


def test_a_rank_that_is_no_number_does_not_fail_a_single_process_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "x")  # read only under torchrun (WORLD_SIZE > 1)
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(tmp_path / "r")], capsys)
    assert rc == 0 and (tmp_path / "r" / "model.safetensors").is_file(), text


def test_waiting_for_processes_that_torchrun_did_not_start_is_said_and_stoppable(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    env.pop("TORCHELASTIC_RUN_ID", None)
    p = subprocess.Popen([sys.executable, "-m", "eae", "train", *SYN, "--epochs", "1", "--out", str(tmp_path / "r")],
                         env=env, stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    assert "waiting for the 2 processes of $WORLD_SIZE to meet" in line and "Ctrl-C stops it" in line
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) != 0  # ended, not waiting on
    assert not (tmp_path / "r").exists()


def test_tf32_on_a_cpu_is_refused_not_recorded_as_another_evaluation(run, capsys):
    rc, text = _call(["eval", str(run), "--device", "cpu", "--attacks", "clean,pgd2", "--precision", "tf32",
                      "--diagnostics", "off"], capsys)
    assert rc == 2 and "--precision tf32 is a mode of NVIDIA GPUs" in text, text
    assert not list(run.glob("*precisiontf32*"))


@pytest.mark.parametrize("toml,fragment", [
    ("epochs = true", "p.toml: epochs = true: give a whole number"),
    ("eps = false", "p.toml: eps = false: give a number"),
    ("seed = [1]", "p.toml: seed = [1]: give one value, a whole number"),
    ('method = ["eae"]', "p.toml: method = ['eae']: give one value, a string"),
])
def test_preset_values_of_the_wrong_kind_name_the_file_in_tomls_words(tmp_path, capsys, toml, fragment):
    preset = tmp_path / "p.toml"
    preset.write_text(toml + "\n")
    rc, text = _call(["train", "--config", str(preset), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and fragment in text and not (tmp_path / "r").exists(), text


def test_from_dict_names_a_list_given_for_a_count():
    from eae.config import TrainConfig
    from eae.errors import ConfigError

    with pytest.raises(ConfigError, match=r"seed = \[1\]: give one value, a whole number"):
        TrainConfig.from_dict({"seed": [1]})


def test_a_bench_report_with_a_users_notes_is_never_rewritten(tmp_path, capsys):
    from eae.outputs import edited_documents, write_documents

    out = tmp_path / "b"
    out.mkdir()
    assert write_documents(out, {"REPORT.md": "# one\n", "report.html": "<p>one</p>\n"}) == []
    with open(out / "REPORT.md", "a") as fh:
        fh.write("my notes\n")
    assert edited_documents(out, ["REPORT.md", "report.html"]) == ["REPORT.md"]
    assert write_documents(out, {"REPORT.md": "# two\n", "report.html": "<p>two</p>\n"}) == ["REPORT.md"]
    assert (out / "REPORT.md").read_text() == "# one\nmy notes\n"
    assert (out / "report.html").read_text() == "<p>two</p>\n"


def test_resuming_a_bench_whose_report_was_edited_is_refused_before_any_work(tmp_path, capsys):
    import json

    from eae.bench.runner import _claim
    from eae.errors import OutputRefused
    from eae.outputs import write_documents

    out = tmp_path / "b"
    ask = {"suite": "smoke", "seeds": 1}
    _claim(out, ask, resume=False)
    write_documents(out, {"REPORT.md": "# one\n"})
    (out / "REPORT.md").write_text("# one\nmy notes\n")
    before = _tree_hash(out)
    with pytest.raises(OutputRefused, match="REPORT.md is not as eae bench wrote it"):
        _claim(out, json.loads(json.dumps(ask)), resume=True)
    assert _tree_hash(out) == before


def test_a_blank_out_is_called_blank():
    from eae.config import TrainConfig
    from eae.errors import ConfigError

    with pytest.raises(ConfigError, match=r"out is blank \(only white space\)"):
        TrainConfig(out=" ")


# --------------------------------------------------------------------------- trial 24
def test_a_report_or_plot_eae_cannot_show_it_wrote_is_never_replaced(tmp_path):
    from eae.outputs import SEALS, edited_documents, write_documents

    out = tmp_path / "b"
    out.mkdir()
    (out / "REPORT.md").write_text("my own summary\n")  # a user's file of that name: no seal
    (out / "curves.png").write_bytes(b"x")
    assert write_documents(out, {"REPORT.md": "# one\n", "curves.png": b"\x89PNG", "report.html": "<p/>"}) == [
        "REPORT.md", "curves.png"]
    assert (out / "REPORT.md").read_text() == "my own summary\n" and (out / "curves.png").read_bytes() == b"x"
    (out / "report.html").write_text("<p/>\nnotes\n")
    (out / SEALS).unlink()  # the seals lost: nothing can be shown to be eae's
    assert edited_documents(out, ["report.html"]) == ["report.html"]


def test_a_bench_report_renders_its_plots_and_seals_them(tmp_path):
    import json

    from eae.bench.report import REPORTS, write_report
    from eae.outputs import SEALS

    row = {"entry": "fgsm_rs", "method": "fgsm_rs", "seed": 0, "epochs": 2, "clean": 0.8, "fgsm": 0.5, "pgd20": 0.45,
           "cw20": 0.42, "aa": 0.4, "worst_case": 0.4, "train_seconds": 20.0, "x_standard": 2.0, "verdict": "ok",
           "evidence": ["[ok] fine"], "n": 10000, "aa_n": 2000, "test_size": 10000, "aa_label": "AutoAttack standard",
           "aa_suite": "aa", "config": {"method": "fgsm_rs"},
           "curve": [{"epoch": 1, "val_clean": 0.5, "val_robust": 0.3, "seconds": 10.0},
                     {"epoch": 2, "val_clean": 0.6, "val_robust": 0.35, "seconds": 10.0}]}
    meta = {"suite": "cifar10", "description": "d", "device": "cpu", "torch": "t", "eae": "v", "commit": "c",
            "date": "now", "command": "eae bench cifar10", "seeds": 1, "budget_k": None}
    assert write_report(tmp_path, {"meta": meta, "rows": [row], "speed": None}) == []
    seals = json.loads((tmp_path / SEALS).read_text())
    assert {"REPORT.md", "report.html", "eae_research.json", "pareto.png", "curves.png"} <= set(seals) <= set(REPORTS)
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "![pareto](pareto.png)" in (tmp_path / "REPORT.md").read_text()


def test_a_batch_larger_than_the_training_set_is_said_and_the_step_printed_as_it_is(tmp_path, capsys):
    argv = [a for a in SYN if a != "--quiet"]
    rc, text = _call(["train", *argv, "--epochs", "1", "--batch-size", "1000", "--out", str(tmp_path / "r")], capsys)
    assert rc == 0 and "note: batch_size 1,000 is more than the 128 training images" in text, text
    assert "1 epoch x 1 step of 128" in text and "step of 1000" not in text


def test_every_path_starting_with_tilde_is_read_alike_and_a_literal_one_said_in_full(tmp_path, monkeypatch):
    from pathlib import Path as P

    from eae.cli import build_parser
    from eae.config import home_path, load_toml

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    home = str(tmp_path / "home")
    assert home_path("~/x") == f"{home}/x" and home_path(P("~/x")) == P(home) / "x"
    assert home_path("./~/x") == str(tmp_path / "~" / "x")  # a folder named ~ here: said in full
    assert home_path("~nosuchuser_eae/x") == str(tmp_path / "~nosuchuser_eae" / "x")
    assert home_path("runs/x") == "runs/x" and home_path("/abs") == "/abs"
    p = build_parser()
    assert p.parse_args(["train", "--config", "~/p.toml"]).config == f"{home}/p.toml"
    assert p.parse_args(["eval", "--weights", "~/w.pt"]).weights == f"{home}/w.pt"
    assert p.parse_args(["eval", "r", "--weights", "best"]).weights == "best"
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "p.toml").write_text("epochs = 3\n")
    assert load_toml("~/p.toml") == {"epochs": 3}


def test_an_image_folder_is_never_looked_for_in_eae_data_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EAE_DATA_DIR", str(tmp_path / "cifar"))
    rc, text = _call(["train", "--dataset", "imagefolder", "--arch", "resnet_small", "--epochs", "1", "--device",
                      "cpu", "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and "--data-dir" in text and "cifar" not in text, text


def test_ctrl_c_pressed_again_while_eae_stops_prints_no_traceback(tmp_path):
    code = ("import os, signal, sys, time\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (`cmd &` ignores it)\n"
            "sys.argv = ['eae', 'list']\n"
            "from eae import cli\n"
            "def slow(args):\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(5)\n"
            "def second(e, args):\n"
            "    os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while the first is answered\n"
            "    time.sleep(0.2)\n"
            "    return 130\n"
            "cli.cmd_list = slow\n"
            "cli._interrupted = second\n"
            "p = cli.build_parser()\n"
            "p.commands['list'].set_defaults(func=slow)\n"
            "cli.build_parser = lambda: p\n"
            "from eae.launch import main\n"
            "status = main()\n"
            "os.kill(os.getpid(), signal.SIGINT)  # and once more as the process exits\n"
            "time.sleep(0.2)\n"
            "raise SystemExit(status)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 130 and "Traceback" not in r.stderr, r.stderr


# --------------------------------------------------------------------------- trial 25
def test_missing_seals_are_named_with_every_document_at_once(tmp_path):
    from eae.outputs import SEALS, documents_refused, write_documents

    out = tmp_path / "b"
    out.mkdir()
    write_documents(out, {"REPORT.md": "# r\n", "pareto.png": b"\x89PNG"})
    assert documents_refused(out, ["REPORT.md", "pareto.png"], "eae bench") is None
    (out / SEALS).unlink()
    said = documents_refused(out, ["REPORT.md", "pareto.png"], "eae bench")
    assert "REPORT.md, pareto.png cannot be shown to be as eae bench wrote them" in said and "is missing" in said
    (out / SEALS).mkdir()
    assert "is a folder, where eae bench keeps the SHA-256" in documents_refused(out, ["REPORT.md"], "eae bench")


def test_a_report_name_near_the_file_system_limit_is_written(tmp_path):
    from eae.utils import atomic_write_bytes

    target = tmp_path / ("d" * 250 + ".json")
    atomic_write_bytes(target, b"{}")
    assert target.read_bytes() == b"{}" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_bench_resume_on_a_run_folder_is_refused_without_announcing_a_start(run, capsys):
    rc, text = _call(["bench", "smoke", "--device", "cpu", "--out", str(run), "--only", "standard", "--resume"],
                     capsys)
    assert rc == 2 and "it is a run of `eae train`" in text and "starting one" not in text, text


def test_list_prints_whole_descriptions(capsys):
    rc, text = _call(["list"], capsys)
    line = next(t for t in text.splitlines() if t.strip().startswith("square "))
    assert rc == 0 and line.rstrip().endswith("L∞ or L2."), line


@pytest.mark.parametrize("eps", ["8/", "/255", "8//255", "8/255/2"])
def test_an_eps_that_is_neither_number_nor_fraction_is_said_so(eps, capsys):
    rc, text = _call(["eval", "r", "--eps", eps], capsys)
    assert rc == 2 and "is neither a number nor a fraction such as 8/255" in text, text


def test_a_signal_after_eae_stopped_on_another_is_ignored():
    code = ("import os, signal, sys\n"
            "from eae import launch, cli\n"
            "cli.main = lambda *a, **k: 130\n"
            "launch_status = launch.main()\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "raise SystemExit(launch_status)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 130, r.stderr  # not 143: the SIGTERM that came while it exited was ignored


# --------------------------------------------------------------------------- trial 26
@pytest.mark.parametrize("env,fragment", [
    ({"WORLD_SIZE": "0"}, "$WORLD_SIZE is 0, but a run has 1 to 2147483647 processes"),
    ({"WORLD_SIZE": "-3"}, "$WORLD_SIZE is -3, but a run has 1 to 2147483647 processes"),
    ({"WORLD_SIZE": "1", "RANK": "1"}, "$RANK is 1, outside 0..0 for $WORLD_SIZE 1"),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, "$RANK is -1, outside 0..1 for $WORLD_SIZE 2"),
    ({"WORLD_SIZE": "2", "RANK": "7"}, "$RANK is 7, outside 0..1 for $WORLD_SIZE 2"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "2"}, "$LOCAL_RANK is 2, outside 0..1"),
    ({"WORLD_SIZE": "2", "EAE_DIST_TIMEOUT_MIN": "soon"}, "$EAE_DIST_TIMEOUT_MIN is 'soon'"),
    ({"WORLD_SIZE": "2", "EAE_DIST_TIMEOUT_MIN": "-1"}, "$EAE_DIST_TIMEOUT_MIN is '-1'"),
    ({"WORLD_SIZE": "2", "EAE_DIST_TIMEOUT_MIN": "nan"}, "$EAE_DIST_TIMEOUT_MIN is 'nan'"),
])
def test_launcher_variables_out_of_range_are_refused_not_waited_on(tmp_path, monkeypatch, capsys, env, fragment):
    """A rank outside the world waited for ever for processes that cannot come; a world of 0 or
    fewer trained as one process without a word. Said by every process, rank 0 or not."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    monkeypatch.setenv("RANK", "0")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and fragment in text and "waiting" not in text and not (tmp_path / "r").exists(), text


@pytest.mark.parametrize("argv,fragment", [
    (["--method", "standard", "--eae-base", "fgsm_rs"], "eae_base is for method eae or eae_paper, not standard"),
    (["--method", "fgsm_rs", "--pgd-steps", "3"], "pgd_steps is read by method pgd, not by fgsm_rs"),
    (["--method", "pgd", "--nfgsm-noise", "1"], "nfgsm_noise is read by method n_fgsm or eae with eae_base n_fgsm"),
    (["--method", "eae", "--eae-base", "fgsm_rs", "--fgsm-init", "zero"],
     "fgsm_init is read by method fgsm_rs, not by eae with eae_base fgsm_rs"),
    (["--method", "eae", "--eae-seed-rule", "all", "--eae-q", "0.3"], "eae_q acts with eae_seed_rule quantile or "
                                                                         "mahalanobis only, not 'all'"),
    (["--method", "eae", "--eae-rel", "0.3"], "eae_rel acts with eae_budget relative only, not 'minimal'"),
    (["--head-scale", "4"], "head_scale acts with head cosine only, not 'linear'"),
    (["--lr-gamma", "0.5"], "lr_gamma acts with lr_schedule piecewise only, not 'onecycle'"),
    (["--val-size", "0", "--val-every", "2"], "val_every 2 acts with validation images, but val_size is 0"),
    (["--nesterov", "--momentum", "0"], "nesterov needs momentum > 0"),
])
def test_a_setting_the_run_never_reads_is_refused(tmp_path, capsys, argv, fragment):
    """`--eae-base fgsm_rs` with `--method standard` was recorded in config.json and never used."""
    rc, text = _call(["train", *SYN, "--epochs", "1", *argv, "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and fragment in text and not (tmp_path / "r").exists(), text


@pytest.mark.parametrize("kwargs", [{"method": "gradalign", "fgsm_alpha": 0.01},
                                    {"method": "eae", "eae_base": "fgsm_rs", "fgsm_alpha": 0.01},
                                    {"method": "eae", "eae_base": "free", "free_replays": 4},
                                    {"method": "eae", "eae_seed_rule": "mahalanobis", "eae_q": 0.3},
                                    {"method": "eae", "eae_budget": "relative", "eae_rel": 0.2},
                                    {"lr_schedule": "piecewise", "lr_gamma": 0.5, "lr_milestones": (0.3,)}])
def test_a_setting_the_run_reads_is_kept(kwargs):
    import eae

    cfg = eae.TrainConfig(**kwargs)
    assert all(getattr(cfg, k) == v for k, v in kwargs.items())


def test_changing_eps_derives_the_step_sizes_again():
    import eae

    cfg = eae.TrainConfig(method="pgd", norm="l2", eps=0.5)
    assert cfg.replace(eps=1.0).pgd_alpha == 0.25 and cfg.replace(eps=1.0, pgd_alpha=0.1).pgd_alpha == 0.1


def test_synthetic_sizes_for_a_dataset_read_from_disk_are_refused():
    import eae

    with pytest.raises(eae.ConfigError, match="synthetic_image_size is for dataset synthetic, not cifar10"):
        eae.TrainConfig(dataset="cifar10", synthetic_image_size=16)
    assert eae.TrainConfig(val_size=0, val_attack_steps=0).val_attack_steps == 0  # validation off: said twice, fine


def test_a_run_that_recorded_a_setting_it_never_read_still_resumes_and_loads(tmp_path, capsys):
    """Older versions accepted `--pgd-steps` with fgsm_rs: such a run's config.json must not make it
    unloadable (only a config asked for now is refused)."""
    import eae

    from eae.cli import build_parser, config_from_args
    from eae.trainer import train

    out = tmp_path / "old"
    asked = config_from_args(build_parser().parse_args(["train", *SYN, "--method", "fgsm_rs", "--epochs", "2",
                                                        "--out", str(out)])).to_dict()
    old = eae.TrainConfig.from_dict({**asked, "pgd_steps": 2}, strict=False)  # as an older version took it
    train(old, quiet=True, stop_after=1)
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["pgd_steps"] == 2
    rc, text = _call(["train", "--out", str(out), "--resume"], capsys)
    assert rc == 0 and (out / "model.safetensors").is_file(), text
    assert eae.TrainConfig.from_dict(json.loads((out / "config.json").read_text()), strict=False).pgd_steps == 2
    assert isinstance(eae.load(out), torch.nn.Module)
    with pytest.raises(eae.ConfigError, match="pgd_steps is read by method pgd"):
        eae.TrainConfig.from_dict(recorded)


# --------------------------------------------------------------------------- trial 27
@pytest.mark.parametrize("make,fragment", [
    (lambda A: A.Square(8 / 255, queries=-5), "Square: queries must be a whole number in 1..100,000, got -5"),
    (lambda A: A.Square(8 / 255, queries=0), "Square: queries must be a whole number in 1..100,000, got 0"),
    (lambda A: A.APGDT(8 / 255, steps=3, targets=-3), "APGD-T: targets must be a whole number in 1..100,000"),
    (lambda A: A.FABT(8 / 255, steps=3, targets=0), "FAB-T: targets must be a whole number in 1..100,000"),
    (lambda A: A.PGD(8 / 255, steps=3, alpha=-1.0), "PGD: alpha must be a finite number > 0, got -1.0"),
    (lambda A: A.CW(8 / 255, alpha=0.0), "CW: alpha must be a finite number > 0"),
    (lambda A: A.APGD(8 / 255, rho=float("nan")), "APGD: rho must be a finite number in (0, 1], got nan"),
    (lambda A: A.PGD(8 / 255, loss="foo"), "loss must be one of ce, cw, dlr, got 'foo'"),
    (lambda A: A.Square(8 / 255, queries=True), "Square: queries must be a whole number in 1..100,000, got True"),
])
def test_an_attack_built_with_settings_that_attack_nothing_is_refused(make, fragment):
    """Square(queries=-5), APGDT(targets=-3), PGD(alpha=-1) scored every point robust (100%, verdict ok)
    when passed to eae.evaluate as {"name": attack} (major)."""
    import eae
    from eae import attacks as A

    with pytest.raises(eae.ConfigError) as e:
        make(A)
    assert fragment in str(e.value)


def test_an_attack_called_directly_takes_int32_labels_and_names_one_out_of_range():
    import eae

    model, x, y = _tiny_model_and_points(4)
    pgd = eae.build_attack("pgd2", 8 / 255)
    assert pgd(model, x, y.int()).shape == x.shape
    with pytest.raises(eae.ConfigError, match="label 15 is out of range for a model with 10 classes"):
        pgd(model, x, torch.full((4,), 15))


@pytest.mark.parametrize("argv,fragment", [
    (["--method", "eae_paper", "--eae-base-every", "3"], "eae_base_every 3 shapes the input-space adversary, but "
                                                         "eae_base clean has none"),
    (["--method", "eae", "--eae-base", "clean", "--eae-base-downsample", "2"], "eae_base_downsample 2 shapes"),
    (["--method", "eae_paper", "--epochs", "2", "--eps-warmup-epochs", "2"], "eps_warmup_epochs 2 shapes"),
    (["--method", "standard", "--overfit-drop", "0.2"], "overfit_drop 0.2 acts where the guard watches"),
    (["--method", "fgsm_rs", "--val-attack-steps", "0", "--overfit-drop", "0.2"], "overfit_drop 0.2 acts where"),
    (["--method", "trades", "--overfit-action", "rollback_lower_step", "--overfit-step-factor", "0.25"],
     "overfit_step_factor 0.25 lowers the training attack's step of"),
])
def test_a_guard_or_eae_setting_that_cannot_act_is_refused(tmp_path, capsys, argv, fragment):
    rc, text = _call(["train", *SYN, "--epochs", "1", *argv, "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and fragment in text and not (tmp_path / "r").exists(), text


def test_the_methods_with_a_step_to_lower_are_the_configs_list():
    from eae.config import SCALABLE_STEP_METHODS
    from eae.methods import METHODS

    assert set(SCALABLE_STEP_METHODS) == {m for m in METHODS.names() if METHODS.get(m).scalable_step}


@pytest.mark.parametrize("env,fragment", [
    ({"WORLD_SIZE": "2147483648"}, "$WORLD_SIZE is 2147483648, but a run has 1 to 2147483647 processes"),
    ({"WORLD_SIZE": "2", "MASTER_PORT": "abc"}, "$MASTER_PORT is 'abc', not a whole number"),
    ({"WORLD_SIZE": "2", "MASTER_PORT": "99999"}, "$MASTER_PORT is 99999, not a TCP port (1 to 65535)"),
])
def test_launcher_variables_torch_cannot_take_are_said_in_one_line(tmp_path, monkeypatch, capsys, env, fragment):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29617")
    monkeypatch.setenv("RANK", "0")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rc, text = _call(["eval", "nowhere", "--n", "8"], capsys)
    assert rc == 2 and fragment in text and "waiting" not in text, text


@pytest.mark.parametrize("rank", ["0", "1"])
def test_processes_that_never_meet_are_said_so_not_called_a_lost_torchrun(tmp_path, rank):
    """Started by hand with no partner: it said "another process of this torchrun ended ... before its
    first epoch ended" (no torchrun, no epoch), and rank 1 printed torch's C++ retry stacks."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "EAE_DIST_TIMEOUT_MIN": "0.05", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("TORCHELASTIC_RUN_ID", None)
    r = subprocess.run([sys.executable, "-m", "eae", "train", *SYN, "--epochs", "1", "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "did not all meet at 127.0.0.1:" in r.stderr, r.stderr
    assert "another process" not in r.stderr and "frame #" not in r.stderr and len(r.stderr.splitlines()) == 2


@pytest.mark.parametrize("argv,fragment", [
    (["--diagnostics", "off", "--diag-n", "50"], "diag_n 50 sets the points of the diagnostics, but diagnostics is off"),
    (["--attacks", "clean", "--diagnostics", "off", "--eot", "4"], "eot 4 acts on attack gradients, but only clean"),
    (["--attacks", "clean", "--precision", "bf16"], "precision bf16 acts on attack gradients, but only clean"),
    (["--attacks", "clean,square10", "--diagnostics", "off", "--eot", "2"], "but no attack of eae's takes a gradient"),
    (["--attacks", "clean,pgd2", "--diagnostics", "cheap", "--diag-n", "0"], "--diagnostics cheap runs on the first "
                                                                              "--diag-n points, but --diag-n is 0"),
])
def test_evaluation_settings_nothing_reads_are_refused_before_any_attack(run, capsys, argv, fragment):
    before = sorted(p.name for p in run.iterdir())
    rc, text = _call(["eval", str(run), "--n", "16", *argv], capsys)
    assert rc == 2 and fragment in text and sorted(p.name for p in run.iterdir()) == before, text


def test_eot_given_at_the_suites_own_value_is_the_same_report(run, capsys):
    rc, text = _call(["eval", str(run), "--n", "16", "--diagnostics", "off", "--eot", "1"], capsys)
    assert rc == 0 and "eval-quick-n16-diagoff.json" in text and "eot" not in text.split("written:")[-1], text


def test_a_preset_field_in_an_error_names_the_preset(tmp_path, capsys):
    preset = tmp_path / "mine.toml"
    preset.write_text('method = "pgd"\npgd_steps = 5\n')
    rc, text = _call(["train", *SYN, "--config", str(preset), "--method", "fgsm_rs", "--out", str(tmp_path / "r")],
                     capsys)
    assert rc == 2 and f"(pgd_steps set in {preset})" in text, text


# --------------------------------------------------------------------------- trial 28
@pytest.mark.parametrize("eps", [float("nan"), -1.0, 5.0, float("inf"), True])
@pytest.mark.parametrize("name", ["FGSM", "PGD", "CW", "APGD", "APGDT", "Square", "FABT"])
def test_an_attack_built_with_an_impossible_eps_is_refused(name, eps):
    """FGSM(eps=nan) returned NaN images, FGSM(eps=-1) black ones, FABT(eps=nan) attacked nothing."""
    import eae
    from eae import attacks

    with pytest.raises(eae.ConfigError, match="eps must be"):
        getattr(attacks, name)(eps)


@pytest.mark.parametrize("make,fragment", [
    (lambda A: A.Square(8 / 255, queries=100, rescale="false"), "Square: rescale must be True or False, got 'false'"),
    (lambda A: A.PGD(8 / 255, random_start="no"), "PGD: random_start must be True or False, got 'no'"),
    (lambda A: A.APGD(8 / 255, steps=2**40), "APGD: steps must be a whole number in 1..100,000"),
])
def test_attack_switches_and_counts_out_of_reach_are_refused(make, fragment):
    import eae
    from eae import attacks as A

    with pytest.raises(eae.ConfigError) as e:
        make(A)
    assert fragment in str(e.value)


@pytest.mark.parametrize("classes,make,fragment", [
    (3, lambda A: A.APGDT(8 / 255, steps=2), "the targeted DLR loss (apgd-t) needs at least 4 classes; the model has 3"),
    (2, lambda A: A.APGD(8 / 255, steps=2, loss="dlr"), "the DLR loss (apgd-dlr) needs at least 3 classes"),
])
def test_an_attack_called_directly_on_too_few_classes_is_said(classes, make, fragment):
    import eae
    from eae import attacks as A

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, classes))
    with pytest.raises(eae.ModelError) as e:
        make(A)(model, torch.rand(4, 3, 8, 8), torch.arange(4) % classes)
    assert fragment in str(e.value)


@pytest.mark.parametrize("argv,fragment", [
    (["--method", "eae", "--eae-base", "clean", "--eae-base-downsample", "64"], "eae_base_downsample 64 shapes"),
    (["--method", "standard", "--eps-warmup-epochs", "2"], "eps_warmup_epochs applies to adversarial training"),
    (["--method", "standard", "--overfit-drop", "1.5"], "overfit_drop 1.5 acts where the guard watches"),
    (["--method", "trades", "--overfit-action", "rollback_lower_step", "--overfit-step-factor", "2"],
     "overfit_step_factor 2.0 lowers the training attack's step"),
])
def test_a_setting_that_cannot_act_is_said_so_even_out_of_range(tmp_path, capsys, argv, fragment):
    """The range error came first, and its fix, pasted, was then refused as unread."""
    rc, text = _call(["train", *SYN, "--epochs", "1", *argv, "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and fragment in text, text


@pytest.mark.parametrize("env,fragment", [
    ({"RANK": "zz"}, "$RANK is 'zz', not a whole number: torchrun sets it for each process it starts; give a whole "
                     "number, or unset WORLD_SIZE (and it) to run one process"),
    ({}, "$WORLD_SIZE is 2, but $RANK is not set"),
    ({"RANK": "0", "MASTER_PORT": "2956x"}, "unset WORLD_SIZE (and it) to run one process"),
])
def test_a_launcher_variables_fix_runs_one_process_when_followed(tmp_path, monkeypatch, capsys, env, fragment):
    monkeypatch.delenv("RANK", raising=False)
    for k, v in {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29561", **env}.items():
        monkeypatch.setenv(k, v)
    rc, text = _call(["eval", "nowhere", "--n", "8"], capsys)
    assert rc == 2 and fragment in text and "waiting" not in text, text


def test_the_diagnostics_pair_pgd_rows_by_their_loss_not_their_labels():
    """{"pgd-mine": CW, "cw-mine": PGD} was read as a cross-entropy PGD against a margin one."""
    import eae
    from eae.attacks import CW, PGD

    model, x, y = _tiny_model_and_points(16)
    r = eae.evaluate(model, x, y, attacks={"pgd-mine": CW(8 / 255, steps=2), "cw-mine": PGD(8 / 255, steps=2)},
                     diagnostics="cheap", diag_n=16)
    line = next(e for e in r.evidence if "cross-entropy PGD" in e)
    assert "(cw-mine vs pgd-mine" in line, line
    assert r.per_attack["pgd-mine"]["loss"] == "cw" and r.per_attack["cw-mine"]["attack"] == "PGD"


@pytest.mark.parametrize("label,make", [("apgd-ce", lambda A: A.APGD(8 / 255, steps=2, loss="dlr")),
                                        ("pgd", lambda A: A.PGD(8 / 255, steps=2, loss="cw"))])
def test_a_label_naming_a_loss_must_hold_an_attack_on_that_loss(label, make):
    import eae
    from eae import attacks as A

    model, x, y = _tiny_model_and_points(8)
    with pytest.raises(eae.ConfigError, match="reads as the built-in attack"):
        eae.evaluate(model, x, y, attacks={label: make(A)}, diagnostics="off")


def test_diag_n_with_the_diagnostics_off_does_not_name_another_report(run, capsys):
    rc, text = _call(["eval", str(run), "--n", "16", "--attacks", "clean", "--diagnostics", "off", "--diag-n", "0"],
                     capsys)
    assert rc == 0 and "eval-clean-n16-diagoff.json" in text, text


# --------------------------------------------------------------------------- trial 29
@pytest.mark.parametrize("argv,fragment", [
    (["--method", "fgsm_rs", "--overfit-step-factor", "5"], "overfit_step_factor 5.0 acts with overfit_action "
                                                            "rollback_lower_step only"),
    (["--method", "fgsm_rs", "--max-rollbacks", "-1"], "max_rollbacks -1 acts with overfit_action rollback"),
    (["--method", "standard", "--eps-warmup-epochs", "-1"], "eps_warmup_epochs applies to adversarial training"),
])
def test_a_guard_setting_that_cannot_act_is_said_before_its_range(tmp_path, capsys, argv, fragment):
    rc, text = _call(["train", *SYN, "--epochs", "1", *argv, "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and fragment in text, text


def test_an_attack_takes_a_fraction_eps_as_build_attack_does():
    from fractions import Fraction

    from eae.attacks import CW

    model, x, y = _tiny_model_and_points(4)
    attack = CW(Fraction(8, 255), steps=2)
    assert attack(model, x, y).shape == x.shape and "eps=0.0313725" in repr(attack)


@pytest.mark.parametrize("make,fragment", [
    (lambda A: A.Square("abc"), "Square: eps must be a number"),
    (lambda A: A.Square(None), "Square: eps must be a number"),
    (lambda A: A.Square(8 / 255, steps=100, queries=20), "steps is an alias of queries: give one of them"),
])
def test_square_names_its_eps_and_its_two_spellings_of_queries(make, fragment):
    import eae
    from eae import attacks as A

    with pytest.raises(eae.ConfigError) as e:
        make(A)
    assert fragment in str(e.value)


def test_fgsm_records_its_loss_and_a_label_naming_another_loss_is_refused():
    import eae
    from eae.attacks import FGSM

    model, x, y = _tiny_model_and_points(8)
    with pytest.raises(eae.ConfigError, match="reads as the built-in attack fgsm"):
        eae.evaluate(model, x, y, attacks={"fgsm": FGSM(8 / 255, loss="cw")}, diagnostics="off")
    r = eae.evaluate(model, x, y, attacks={"mine": FGSM(8 / 255, loss="cw")}, diagnostics="off")
    assert r.per_attack["mine"]["loss"] == "cw"


def test_cw_is_pgd_on_the_margin_loss_under_any_label():
    import eae
    from eae.attacks import CW, PGD

    model, x, y = _tiny_model_and_points(8)
    r = eae.evaluate(model, x, y, attacks={"cw2": PGD(8 / 255, steps=2, loss="cw")}, diagnostics="off")
    assert "cw2" in r.per_attack
    with pytest.raises(eae.ConfigError, match="are one attack"):
        eae.evaluate(model, x, y, attacks={"b": PGD(8 / 255, steps=2, loss="cw"), "c": CW(8 / 255, steps=2)},
                     diagnostics="off")


def test_precision_and_eot_for_a_users_function_alone_are_refused():
    import eae

    model, x, y = _tiny_model_and_points(8)
    with pytest.raises(eae.ConfigError, match="precision bf16 acts on attack gradients, but no attack of eae's"):
        eae.evaluate(model, x, y, attacks={"mine": lambda m, a, b: a}, precision="bf16", diagnostics="off")


def test_a_registered_factory_that_fails_is_named_not_a_traceback():
    import eae
    from eae.attacks import ATTACKS

    def flaky(eps, norm="linf", **kw):
        raise RuntimeError("boom")

    ATTACKS.register("flaky_x")(flaky)
    try:
        with pytest.raises(eae.ConfigError, match="the factory registered as 'flaky_x' failed: RuntimeError: boom"):
            eae.build_attack("flaky_x", 8 / 255)
    finally:
        ATTACKS._entries.pop("flaky_x")


def test_diag_n_0_is_the_diagnostics_off_evaluation_and_an_explicit_level_on_it_is_refused(run, capsys):
    rc, text = _call(["eval", str(run), "--n", "16", "--attacks", "clean,pgd2", "--diag-n", "0"], capsys)
    assert rc == 0 and "eval-clean+pgd2-n16-diagoff.json" in text, text
    rc, text = _call(["eval", str(run), "--n", "16", "--attacks", "clean,pgd2", "--diagnostics", "full", "--diag-n",
                      "0"], capsys)
    assert rc == 2 and "--diagnostics full runs on the first --diag-n points, but --diag-n is 0" in text, text


# --------------------------------------------------------------------------- trial 30
def test_eot_1_is_the_default_and_is_accepted_where_nothing_takes_a_gradient(run, capsys):
    rc, text = _call(["eval", str(run), "--n", "16", "--attacks", "clean", "--diagnostics", "off", "--eot", "1"],
                     capsys)
    assert rc == 0 and "the rest: loading)" in text, text


def test_restarts_without_a_random_start_are_refused():
    import eae
    from eae.attacks import PGD

    with pytest.raises(eae.ConfigError, match="restarts=3 without a random start repeats one run"):
        PGD(8 / 255, steps=2, restarts=3, random_start=False)
    assert PGD(8 / 255, steps=2, random_start=False).restarts == 1


def test_a_guard_action_on_a_run_that_validates_once_is_refused(tmp_path, capsys):
    """The guard compares a validation with the best before it: with one validation it never acts."""
    for extra, first_pass in ((["--epochs", "1"], "1 pass over the training data, val_every 1): train more epochs"),
                              (["--epochs", "3", "--val-every", "3"], "(3 passes over the training data, val_every "
                                                                      "3): give val_every below 3"),
                              (["--method", "free", "--free-replays", "4", "--epochs", "4"],
                               "train more epochs (above free_replays 4)")):
        argv = ["train", *SYN, "--method", "fgsm_rs", *extra, "--overfit-action", "stop", "--out",
                str(tmp_path / "r")]
        rc, text = _call(argv, capsys)
        assert rc == 2 and "overfit_action 'stop' compares each validation with the best before it" in text, text
        assert first_pass in text, text
        assert not (tmp_path / "r").exists()
    rc, text = _call(["train", *SYN, "--method", "fgsm_rs", "--epochs", "1", "--overfit-drop", "0.1", "--out",
                      str(tmp_path / "r")], capsys)
    assert rc == 2 and "overfit_drop 0.1 compares each validation" in text, text
    # two validations: the guard can act, and the run trains
    rc, text = _call(["train", *SYN, "--method", "fgsm_rs", "--epochs", "3", "--val-every", "2", "--overfit-action",
                      "stop", "--out", str(tmp_path / "r")], capsys)
    assert rc == 0, text


def test_a_recorded_config_with_a_guard_that_could_not_act_still_loads():
    from eae.config import TrainConfig

    d = TrainConfig(method="fgsm_rs", epochs=2, overfit_action="stop").to_dict()
    d["epochs"] = 1  # as an older version recorded it
    assert TrainConfig.from_dict(d, strict=False).overfit_action == "stop"
    with pytest.raises(Exception, match="validates only once"):
        TrainConfig.from_dict(d)


def test_targets_capped_by_the_class_count_are_said_in_the_row_without_diagnostics():
    from eae.attacks import APGDT, FABT

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 10, (16,))
    r = evaluate(model, x, y, {"clean": None, "apgd-t": APGDT(8 / 255, steps=2, targets=12),
                               "fab-t": FABT(8 / 255, steps=2, targets=9)}, diagnostics="off")
    assert r.per_attack["apgd-t"]["note"] == "runs 9 target classes, not 12: the model has 10 classes"
    assert "note" not in r.per_attack["fab-t"]  # 9 targets of 10 classes: all of them, as asked
    assert "- apgd-t: runs 9 target classes, not 12" in r.to_markdown()
    assert r.to_dict()["per_attack"]["apgd-t"]["note"].startswith("runs 9")


# --------------------------------------------------------------------------- trial 31
def test_a_run_the_guard_stopped_is_not_offered_a_resume_that_repeats_the_stop(tmp_path, capsys):
    out = tmp_path / "r"
    rc, text = _call(["train", *SYN, "--val-attack-steps", "10", "--method", "fgsm_rs", "--epochs", "6", "--seed", "3",
                      "--overfit-action", "stop", "--overfit-drop", "0.01", "--out", str(out)], capsys)
    assert rc == 4 and "stopped. The best epoch (1) is in model_best.safetensors" in text, text
    assert f"`eae eval {out} --weights best` scores it); a new run (another --out) can try" in text, text
    events = (out / "events.jsonl").read_bytes()
    rc, text = _call(["eval", str(out), "--n", "8", "--diagnostics", "off"], capsys)
    assert rc == 2 and "the overfitting guard stopped it at epoch 2" in text and "--resume" not in text, text
    rc, text = _call(["train", "--out", str(out), "--resume", "--quiet"], capsys)
    assert rc == 2 and f"cannot resume {out}: the overfitting guard stopped it at epoch 2" in text, text
    assert (out / "events.jsonl").read_bytes() == events  # refused before anything was written
    rc, text = _call(["eval", str(out), "--n", "8", "--diagnostics", "off", "--weights", "best"], capsys)
    assert rc == 0, text  # the advice works when followed
    import eae
    from eae.checkpoint import read_config

    with pytest.raises(eae.RunExists, match="weights='best'"):  # the Python API's words
        eae.train(read_config(out), resume=True, quiet=True)


def test_a_negative_zero_is_zero_in_the_config_and_the_report(tmp_path, capsys):
    from eae.config import TrainConfig
    from eae.evaluation.report import fmt_eps

    assert str(TrainConfig(method="pgd", eps=-0.0).to_dict()["eps"]) == "0.0"
    assert fmt_eps(-0.0) == "0" and fmt_eps(-0.0, "l2") == "0"
    out = tmp_path / "r"
    assert main(["train", *SYN, "--method", "pgd", "--epochs", "1", "--eps=-0", "--out", str(out)]) == 0
    assert '"eps": 0.0' in (out / "config.json").read_text()


@pytest.mark.parametrize("budget", ["0.001", "1e300", "604801"])
def test_the_headline_budget_is_a_second_to_a_week(budget, capsys):
    rc, text = _call(["bench", "headline", "--dry-run", "--budget", budget], capsys)
    assert rc == 2 and f"seconds in 1..604,800 (a week), got {budget}" in text, text
    rc, text = _call(["bench", "headline", "--dry-run", "--budget", "604800"], capsys)
    assert rc == 0 and "against a budget of 604800 s" in text, text


def test_too_few_classes_for_a_suite_says_which_attacks_to_give(tmp_path):
    from eae.attacks import APGDT

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 3
    with pytest.raises(ValueError) as e:
        evaluate(model, x, y, suite="aa-fast", diagnostics="off")
    assert "needs at least 4 classes; the model has 3: run other attacks, e.g. ['apgd-ce', 'fab-t', 'square']" \
        in str(e.value)
    assert "--attacks apgd-ce,fab-t,square" in e.value.cli
    with pytest.raises(ValueError, match="run other attacks"):
        APGDT(8 / 255, steps=2)(model, x, y)
    r = evaluate(model, x, y, ["clean", "apgd-ce", "fab-t", "square"], diagnostics="off")  # the advice, followed
    assert set(r.per_attack) == {"apgd-ce", "fab-t", "square"}


def test_a_field_a_preset_set_is_named_wherever_the_message_names_it(tmp_path, capsys):
    preset = tmp_path / "p.toml"
    preset.write_text("val_every = 5\n")
    rc, text = _call(["train", *SYN, "--method", "fgsm_rs", "--config", str(preset), "--epochs", "5",
                      "--overfit-action", "stop", "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and f"give val_every below 5, or leave overfit_action out (val_every set in {preset})" in text, text
    import re

    from eae.config import _named_at

    # a plain word stands for a field only where a clause begins
    assert not re.search(_named_at("out"), "a count out of range: leave it out")
    assert re.search(_named_at("val_every"), "give val_every below 5")
    assert not re.search(_named_at("val_every"), "give val_every_x below 5")


# --------------------------------------------------------------------------- trial 32
def _images_of_a_user(root: Path) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / split / c / "0.png")
    return root


@pytest.mark.parametrize("name", ["cifar10", "svhn", "tiny-imagenet"])
def test_a_dataset_is_never_fetched_into_a_folder_of_the_users(tmp_path, name, capsys):
    photos = _images_of_a_user(tmp_path / "photos")
    before = _tree_hash(photos)
    # the dataset's root, its split folder, the classes linked in or nested deeper, a loop of links beside them
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "cat").symlink_to(photos / "train" / "cat")
    (linked / "zz").symlink_to("zz")
    deep = tmp_path / "deep" / "cat" / "2023" / "jan"
    deep.mkdir(parents=True)
    (deep / "0.png").write_bytes((photos / "train" / "cat" / "0.png").read_bytes())
    for where, held in ((photos, "train, val"), (photos / "train", "cat, dog"), (photos / "train" / "cat", "0.png"),
                        (linked, "cat, zz"), (tmp_path / "deep", "cat")):
        rc, text = _call(["data", name, "--data-dir", str(where)], capsys)
        assert rc == 2 and f"{where} holds files of yours ({held}):" in text, text
        assert "eae fetches a dataset only into a folder of its own" in text, text
        assert f"`eae data {name} --data-dir NEW` fetches it there" in text and not list(where.glob(".eae-*")), text
        rc, text = _call(["data", name, "--data-dir", str(where), "--no-download"], capsys)
        assert rc == 2 and f"`eae data {name} --data-dir NEW` fetches it into a new folder" in text, text
    assert _tree_hash(photos) == before


def test_a_folder_of_eaes_datasets_or_the_default_cache_is_eaes_own(tmp_path, monkeypatch, capsys):
    from eae.data.cifar10 import foreign_entries

    for own in ("cifar-100-python", "svhn", "tiny-imagenet-200", ".DS_Store"):
        (tmp_path / own).mkdir()
    assert foreign_entries(tmp_path, "--data-dir") == [] and foreign_entries(tmp_path / "new", "--data-dir") == []
    (tmp_path / "pets" / "cat").mkdir(parents=True)
    assert foreign_entries(tmp_path, "--data-dir") == ["pets"]
    assert foreign_entries(tmp_path, "user cache") == []  # the default cache is eae's own folder
    monkeypatch.setenv("EAE_DATA_DIR", str(tmp_path))
    rc, text = _call(["data", "svhn"], capsys)
    assert rc == 2 and "set $EAE_DATA_DIR to a new folder (or unset it: the default cache)" in text, text


GUARD = ["--val-attack-steps", "10", "--method", "fgsm_rs", "--epochs", "6", "--seed", "3", "--overfit-drop", "0.01"]


def test_a_guard_stop_after_the_last_rollback_is_advised_otherwise_on_resume_and_eval(tmp_path, capsys):
    out = tmp_path / "r"
    rc, text = _call(["train", *SYN, *GUARD, "--overfit-action", "rollback_lower_step", "--out", str(out)], capsys)
    assert rc == 4, text
    for argv in (["train", "--out", str(out), "--resume"], ["eval", str(out), "--n", "8"]):
        rc, text = _call(argv, capsys)
        assert rc == 2 and "after its last rollback" in text and "a higher --max-rollbacks" in text, text
        assert "--overfit-action rollback_lower_step" not in text, text


def test_a_guard_stopped_run_stays_stopped_whatever_becomes_of_its_files(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["train", *SYN, *GUARD, "--overfit-action", "stop", "--out", str(out)]
    assert _call(argv, capsys)[0] == 4
    rc, text = _call(argv, capsys)  # the same command again, without --resume: not advised to resume
    assert rc == 2 and f"{out} already holds a run: the overfitting guard stopped it" in text, text
    assert "--resume" not in text
    (out / "events.jsonl").unlink()  # the checkpoint says it too
    rc, text = _call(["train", "--out", str(out), "--resume"], capsys)
    assert rc == 2 and "cannot resume" in text and "guard stopped it at epoch 2" in text, text
    (out / "model_best.safetensors").unlink()
    rc, text = _call(["train", "--out", str(out), "--resume"], capsys)
    assert rc == 2 and "was in model_best.safetensors, which was moved or deleted" in text, text
    assert "--weights best" not in text


def test_the_speed_suite_refuses_what_it_would_not_use(tmp_path, capsys):
    for extra, said in ((["--seeds", "3"], "--seeds 3: suite speed times one run of each method"),
                        (["--train-only"], "--train-only: suite speed has nothing to evaluate")):
        rc, text = _call(["bench", "speed", *extra, "--out", str(tmp_path / "b"), "--device", "cpu"], capsys)
        assert rc == 2 and said in text and not (tmp_path / "b").exists(), text


def test_a_resume_refusal_and_from_toml_name_the_presets_fields(tmp_path, capsys):
    import eae

    out = tmp_path / "z"
    assert main(["train", *SYN, "--method", "fgsm_rs", "--epochs", "1", "--out", str(out)]) == 0
    preset = tmp_path / "p.toml"
    preset.write_text('method = "pgd"\n')
    rc, text = _call(["train", "--config", str(preset), "--out", str(out), "--resume"], capsys)
    assert rc == 2 and f"method 'fgsm_rs' -> 'pgd'" in text and f"(method set in {preset})" in text, text
    preset.write_text('method = "fgsm_rs"\nepochs = 0\n')
    with pytest.raises(eae.ConfigError, match=rf"epochs must be >= 1, got 0 \(epochs set in {re.escape(str(preset))}\)"):
        eae.TrainConfig.from_toml(preset)


def test_paths_and_negative_zeros_in_python():
    import eae

    cfg = eae.TrainConfig(out=Path("runs/x"), data_dir=Path("/data/cifar"), dataset="cifar10")
    assert cfg.out == "runs/x" and cfg.data_dir == "/data/cifar" and cfg.to_dict()["out"] == "runs/x"
    assert repr(eae.build_attack("pgd5", eps=-0.0)).startswith("PGD(eps=0, steps=5, alpha=0,")


# --------------------------------------------------------------------------- trial 33
def test_grey_images_on_an_rgb_model_are_refused_not_attacked_as_grey():
    import eae

    model = eae.create_model("resnet_small", num_classes=10).eval()
    with pytest.raises(eae.ModelError, match="the model takes 3-channel images .* got 1-channel ones"):
        evaluate(model, torch.rand(8, 1, 16, 16), torch.zeros(8, dtype=torch.long), ["clean", "pgd2"],
                 diagnostics="off")


@pytest.mark.parametrize("specs,rows", [(["Clean", "pgd2"], ["pgd2"]), ([" clean", "PGD2"], ["pgd2"]),
                                        (["CLEAN"], []), (["clean", "pgd2 "], ["pgd2"]), (["clean", "pgd2\n"], ["pgd2"])])
def test_attack_specs_in_python_are_read_as_the_command_line_reads_them(specs, rows):
    import eae

    torch.manual_seed(0)
    model = eae.create_model("resnet_small", num_classes=10).eval()
    x = torch.rand(8, 3, 16, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
    r = evaluate(model, x, y, specs, diagnostics="off")
    assert list(r.per_attack) == rows and r.clean_accuracy == 1.0


def test_an_empty_class_folder_left_out_is_no_class(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (tmp_path / "d" / split / c).mkdir(parents=True)
            for i in range(8):
                Image.new("RGB", (16, 16), (30 * i, 0, 0)).save(tmp_path / "d" / split / c / f"{i}.png")
    (tmp_path / "d" / "train" / "notes").mkdir()
    (tmp_path / "d" / "train" / "notes" / "readme.txt").write_text("hi")
    argv = ["train", "--device", "cpu", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "d"), "--image-size",
            "16", "--arch", "resnet_small", "--epochs", "1", "--batch-size", "8", "--val-size", "4", "--out",
            str(tmp_path / "r"), "--bad-images", "skip"]
    rc, text = _call(argv, capsys)
    assert rc == 0 and "2 entries of the training folder (files or class folders) were left out" in text, text
    d = json.loads((tmp_path / "r" / "dataset.json").read_text())
    assert d["num_classes"] == 2 and d["classes"] == ["cat", "dog"]


def test_a_signal_after_the_command_finished_leaves_its_status(tmp_path):
    code = ("import os, signal, sys, time\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (`cmd &` ignores it)\n"
            "sys.argv = ['eae', 'list']\n"
            "from eae import cli\n"
            "def done(args):\n"
            "    cli._work_saved()  # as train and eval say once their files are written\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(0.2)\n"
            "    return 0\n"
            "p = cli.build_parser()\n"
            "p.commands['list'].set_defaults(func=done)\n"
            "cli.build_parser = lambda: p\n"
            "from eae.launch import main\n"
            "status = main()\n"
            "os.kill(os.getpid(), signal.SIGINT)  # and once more as the process exits\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(0.2)\n"
            "raise SystemExit(status)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0 and "Traceback" not in r.stderr and "interrupted" not in r.stderr, r.stderr


def test_a_fetch_interrupted_removes_the_folders_it_made(tmp_path, monkeypatch):
    import eae.data.cifar10 as c10

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(c10, "_fetch_into", interrupted)
    monkeypatch.setattr(c10, "locate", lambda data_dir: None)
    with pytest.raises(KeyboardInterrupt):
        c10.prepare_cifar10(tmp_path / "new" / "data", log=lambda *a: None)
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------------------- trial 34
def test_grey_images_are_refused_whichever_constant_has_three_channels():
    import eae

    model = eae.create_model("resnet_small", num_classes=10, mean=(0.5,), std=(0.2, 0.3, 0.4)).eval()
    with pytest.raises(eae.ModelError, match="takes 3-channel images"):
        evaluate(model, torch.rand(8, 1, 16, 16), torch.zeros(8, dtype=torch.long), ["clean", "pgd2"],
                 diagnostics="off")


def test_specs_in_python_are_named_as_typed_and_folded_as_the_command_line_folds_them():
    import eae

    model = eae.create_model("resnet_small", num_classes=10).eval()
    x, y = torch.rand(4, 3, 16, 16), torch.zeros(4, dtype=torch.long)
    with pytest.raises(eae.ConfigError, match=r"attacks 'PGD2' and 'pgd2' are one attack \(pgd2\): give it once"):
        evaluate(model, x, y, ["PGD2", "pgd2"], diagnostics="off")
    r = evaluate(model, x, y, ["pgd\uff12"], diagnostics="off")  # a full-width digit
    assert list(r.per_attack) == ["pgd2"] and r.label == "custom (pgd2)"


def _two_class_folder(root: Path, empty: str | None = None) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(root / split / c / f"{i}.png")
    if empty:
        (root / "train" / empty).mkdir()
    return root


IMAGEFOLDER = ["--device", "cpu", "--dataset", "imagefolder", "--image-size", "16", "--arch", "resnet_small",
               "--epochs", "1", "--batch-size", "4", "--val-size", "0", "--quiet"]


def test_a_run_that_left_an_empty_class_out_is_evaluated_on_its_classes(tmp_path, capsys):
    data = _two_class_folder(tmp_path / "d", empty="c")
    out = tmp_path / "r"
    rc, text = _call(["train", *IMAGEFOLDER, "--data-dir", str(data), "--bad-images", "skip", "--out", str(out)],
                     capsys)
    assert rc == 0, text
    rc, text = _call(["eval", str(out), "--attacks", "clean", "--diagnostics", "off"], capsys)
    assert rc == 0 and "8 test images" in text, text


def test_workers_beyond_the_cores_are_said_and_an_old_runs_unchecked_classes_too(tmp_path, capsys):
    data = _two_class_folder(tmp_path / "d")
    out = tmp_path / "r"
    rc, text = _call(["train", *IMAGEFOLDER, "--data-dir", str(data), "--workers", "256", "--out", str(out)], capsys)
    assert rc == 0 and "note: --workers 256: this process may use" in text, text
    (out / "dataset.json").unlink()  # as a run of an older version
    rc, text = _call(["eval", str(out), "--attacks", "clean", "--diagnostics", "off"], capsys)
    assert rc == 0 and "has no dataset.json (a run of an older version)" in text, text


# --------------------------------------------------------------------------- trial 35
def test_fetch_advice_with_eae_data_dir_set_never_says_leave_it_out(tmp_path, monkeypatch, capsys):
    (tmp_path / "U").mkdir()
    (tmp_path / "U" / "notes.txt").write_text("mine")
    monkeypatch.setenv("EAE_DATA_DIR", str(tmp_path / "elsewhere"))
    rc, text = _call(["data", "svhn", "--data-dir", str(tmp_path / "U")], capsys)
    assert rc == 2 and "`eae data svhn --data-dir NEW` fetches it there" in text and "leave it out" not in text, text


def test_a_partial_or_broken_cifar10_copy_is_advised_a_command_that_works(tmp_path, cifar_dir, capsys):
    import shutil

    src = cifar_dir
    p1 = tmp_path / "P1" / "cifar-10-batches-py"
    p1.mkdir(parents=True)
    shutil.copy(src / "batches.meta", p1)
    for flags in ([], ["--no-download"]):
        rc, text = _call(["data", "cifar10", "--data-dir", str(p1.parent), *flags], capsys)
        assert rc == 2 and f"{p1} exists but holds no data_batch_1" in text and "not found" not in text, text
        assert f"run `eae data cifar10 --data-dir {p1.parent}` to download a verified copy" in text, text
    for name in ("data_batch_1", "data_batch_2", "data_batch_4", "data_batch_5", "test_batch"):
        shutil.copy(src / name, p1)
    (tmp_path / "P1" / "readme.md").write_text("mine")  # the folder is theirs: a new one is advised
    rc, text = _call(["data", "cifar10", "--data-dir", str(p1.parent)], capsys)
    assert rc == 2 and "missing CIFAR-10 file" in text and "`eae data cifar10 --data-dir NEW`" in text, text


def test_an_old_image_folder_runs_caveat_is_in_its_saved_report(tmp_path, capsys):
    data = _two_class_folder(tmp_path / "d")
    out = tmp_path / "r"
    assert _call(["train", *IMAGEFOLDER, "--data-dir", str(data), "--out", str(out)], capsys)[0] == 0
    (out / "dataset.json").unlink()
    rc, text = _call(["eval", str(out), "--attacks", "clean", "--diagnostics", "off"], capsys)
    assert rc == 0
    saved = next(out.glob("eval-*.md")).read_text()
    assert "has no dataset.json (a run of an older version)" in saved
    assert "has no dataset.json" in json.loads(next(out.glob("eval-*.json")).read_text())["caveat"]


def test_an_edited_bench_results_json_is_kept_and_refused_like_the_other_documents(tmp_path):
    from eae.bench.runner import _claim, _results_edited
    from eae.errors import OutputRefused
    from eae.outputs import sealed

    out = tmp_path / "b"
    ask = {"suite": "smoke", "seeds": 1}
    _claim(out, ask, resume=False)
    (out / "results.json").write_text(json.dumps(sealed({"meta": {}, "rows": [], "speed": None})))
    assert not _results_edited(out)
    (out / "results.json").write_text(json.dumps({"meta": {}, "rows": []}))  # unsealed: edited, or an earlier version's
    assert _results_edited(out)
    (out / "results.json").write_text('{"edited": 1}')
    with pytest.raises(OutputRefused, match="results.json is not as eae bench wrote it"):
        _claim(out, json.loads(json.dumps(ask)), resume=True)


def test_an_edited_bench_json_is_not_advised_flags_that_cannot_set_it(tmp_path):
    from eae.bench.runner import _claim

    out = tmp_path / "b"
    ask = {"suite": "smoke", "seeds": 1, "base": {"epochs": 2}}
    _claim(out, ask, resume=False)
    with pytest.raises(ValueError, match="no flag of eae bench sets them: bench.json was edited"):
        _claim(out, {**ask, "base": {"epochs": 3}}, resume=True)


def test_an_unsealed_bench_row_of_a_sealing_version_is_refused(tmp_path):
    from eae.bench.runner import _read_row

    row = tmp_path / "bench_eval.json"
    row.write_text(json.dumps({"entry": "standard", "clean": 0.99, "weights_sha256": "0" * 64}))
    with pytest.raises(Exception, match="carries no seal"):
        _read_row(row, entry="standard")


def test_an_unsealed_bench_row_is_refused_even_without_its_weights_digest(tmp_path):
    import eae
    from eae.bench.runner import _read_row

    row = tmp_path / "bench_eval.json"  # both seal and digest removed by hand: read as an earlier version's before
    row.write_text(json.dumps({"entry": "standard", "seed": 0, "clean": 0.93, "aa": 0.58}))
    with pytest.raises(eae.ConfigError, match="carries no seal .* delete it to evaluate that run again"):
        _read_row(row, entry="standard", seed=0)


def test_a_run_being_started_is_said_so_and_clean_twice_is_named_as_typed(tmp_path):
    import eae
    from eae.checkpoint import RunLock, read_config

    out = tmp_path / "r"
    out.mkdir()
    lock = RunLock(out).acquire()
    try:
        with pytest.raises(eae.NotARun if hasattr(eae, "NotARun") else Exception, match="is being started by eae train"):
            read_config(out)
    finally:
        lock.release()
    model = eae.create_model("resnet_small", num_classes=10).eval()
    with pytest.raises(eae.ConfigError, match="attacks 'clean' and 'Clean' are both clean"):
        evaluate(model, torch.rand(4, 3, 16, 16), torch.zeros(4, dtype=torch.long), ["clean", "Clean"])
    with pytest.raises(eae.ModelError) as e:
        model(torch.rand(2, 2, 16, 16))
    assert "got 2-channel ones" in str(e.value) and "expand" not in str(e.value)


# --------------------------------------------------------------------------- trial 36
def test_a_broken_cifar10_copy_says_where_a_verified_one_comes_from(tmp_path, cifar_dir, capsys):
    import shutil

    copy = tmp_path / "d" / "cifar-10-batches-py"
    shutil.copytree(cifar_dir, copy)
    for p in copy.iterdir():
        p.chmod(0o644)
    (copy / "data_batch_3").write_bytes((copy / "data_batch_3").read_bytes()[:1000])
    rc, text = _call(["data", "cifar10", "--data-dir", str(copy.parent)], capsys)
    assert rc == 2 and f"move {copy} out of {copy.parent} (or delete it) and run `eae data cifar10 --data-dir" in text, text
    hidden_only = tmp_path / "h" / "cifar-10-batches-py"
    hidden_only.mkdir(parents=True)
    (hidden_only / ".DS_Store").write_bytes(b"x")
    rc, text = _call(["data", "cifar10", "--data-dir", str(hidden_only.parent), "--no-download"], capsys)
    assert rc == 2 and "not found" in text and "exists but holds no" not in text, text


def test_outputs_inside_an_image_folder_are_refused(tmp_path, capsys):
    data = _two_class_folder(tmp_path / "d")
    before = _tree_hash(data)
    rc, text = _call(["train", *IMAGEFOLDER, "--data-dir", str(data), "--out", str(data / "train" / "a" / "run")],
                     capsys)
    assert rc == 2 and "is inside the image folder data_dir" in text and _tree_hash(data) == before, text
    out = tmp_path / "r"
    assert _call(["train", *IMAGEFOLDER, "--data-dir", str(data), "--out", str(out)], capsys)[0] == 0
    rc, text = _call(["eval", str(out), "--attacks", "clean", "--diagnostics", "off", "--output",
                      str(data / "train" / "a" / "r.json")], capsys)
    assert rc == 2 and "is inside the image folder" in text and _tree_hash(data) == before, text


def test_a_runs_data_folder_gone_is_said_not_made_again(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "1", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    cfg = {k: v for k, v in cfg.items() if not k.startswith("synthetic_")}
    (out / "config.json").write_text(json.dumps({**cfg, "dataset": "cifar10", "data_dir": str(tmp_path / "gone")}))
    rc, text = _call(["eval", str(out), "--n", "8", "--attacks", "clean"], capsys)
    assert rc == 2 and "the run's data folder" in text and not (tmp_path / "gone").exists(), text


def test_an_unknown_spec_and_a_missing_run_are_named_as_typed(tmp_path, capsys):
    import eae

    model = eae.create_model("resnet_small", num_classes=10).eval()
    with pytest.raises(eae.ConfigError, match="unknown attack spec 'PGD2O'"):
        evaluate(model, torch.rand(4, 3, 16, 16), torch.zeros(4, dtype=torch.long), ["clean", "PGD2O"])
    rc, text = _call(["eval", str(tmp_path / "nosuchrun")], capsys)
    assert rc == 2 and "nosuchrun: no such folder" in text, text


# --------------------------------------------------------------------------- trial 37
def test_a_runs_data_folder_now_a_file_or_a_dead_link_is_named_as_the_runs(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "1", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    cfg = {k: v for k, v in cfg.items() if not k.startswith("synthetic_")}
    data = tmp_path / "c2"
    (out / "config.json").write_text(json.dumps({**cfg, "dataset": "cifar10", "data_dir": str(data)}))
    data.write_text("hi")
    rc, text = _call(["eval", str(out), "--n", "8", "--attacks", "clean"], capsys)
    assert rc == 2 and "the run's data folder" in text and "is a file now" in text and "--data-dir /" not in text, text
    data.unlink()
    data.symlink_to(tmp_path / "nowhere")
    rc, text = _call(["eval", str(out), "--n", "8", "--attacks", "clean"], capsys)
    assert rc == 2 and "is a link to nowhere now" in text and data.is_symlink(), text


def test_no_output_is_written_inside_a_dataset_copy(tmp_path, capsys):
    copy = tmp_path / "d1" / "cifar-10-batches-py"
    copy.mkdir(parents=True)
    (copy / "batches.meta").write_bytes(b"x")
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(copy / "myrun")], capsys)
    assert rc == 2 and "is inside the dataset copy" in text and sorted(p.name for p in copy.iterdir()) == \
        ["batches.meta"], text
    out = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "1", "--out", str(out)]) == 0
    (tmp_path / "link").symlink_to(copy)  # through a link: the same folder
    rc, text = _call(["eval", str(out), "--attacks", "clean", "--diagnostics", "off", "--output",
                      str(tmp_path / "link" / "rep.json")], capsys)
    assert rc == 2 and "is inside the dataset copy" in text and sorted(p.name for p in copy.iterdir()) == \
        ["batches.meta"], text
    lookalike = tmp_path / "svhn"  # a folder merely named as one, holding none of its files: the user's
    assert main(["train", *SYN, "--epochs", "1", "--out", str(lookalike / "run")]) == 0


def test_eval_of_a_benchmark_folder_names_its_runs(tmp_path, capsys):
    from eae.outputs import OutputFolder

    bench = tmp_path / "bb"
    OutputFolder(bench, "bench").claim()
    assert main(["train", *SYN, "--epochs", "1", "--out", str(bench / "runs" / "standard-s0")]) == 0
    for given in (bench, bench / "runs"):
        rc, text = _call(["eval", str(given), "--attacks", "clean"], capsys)
        assert rc == 2 and "give one of the runs it holds" in text and str(bench / "runs" / "standard-s0") in text, text
    rc, text = _call(["eval", str(bench), "--attacks", "clean"], capsys)
    assert "is a benchmark of `eae bench`" in text, text


def test_an_interrupted_eval_says_nothing_was_written_and_what_runs_it_again(run, tmp_path, monkeypatch, capsys):
    import eae.evaluation

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(eae.evaluation, "evaluate", interrupt)
    rc, text = _call(["eval", str(run), "--attacks", "clean", "--diagnostics", "off", "--output",
                      str(tmp_path / "e.json")], capsys)
    assert rc == 130 and "its report is not written: the same command runs it again" in text, text
    assert not (tmp_path / "e.json").exists()


# --------------------------------------------------------------------------- trial 38
@pytest.mark.parametrize("argv", [["list"], ["list", "--help"], ["--version"],
                                  ["bench", "headline", "--dry-run", "--out", "PLAN"]])
@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_a_command_that_only_prints_fails_when_nothing_could_be_shown(tmp_path, argv, stdout):
    if stdout == "full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    argv = [a.replace("PLAN", str(tmp_path / "plan")) for a in argv]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    with open("/dev/full" if stdout == "full" else os.devnull, "w") as sink:
        done = subprocess.run([sys.executable, "-m", "eae", *argv], stderr=subprocess.PIPE, env=env, timeout=120,
                              stdout=sink if stdout == "full" else None, close_fds=True,
                              preexec_fn=None if stdout == "full" else lambda: os.close(1))
    err = done.stderr.decode()
    assert done.returncode == 2 and "nothing was shown" in err and "Traceback" not in err, err
    assert "writes its files as usual" not in err
    with open(tmp_path / "out.txt", "w") as f:  # a file that takes it: done, status 0
        assert subprocess.run([sys.executable, "-m", "eae", *argv], stdout=f, env=env, timeout=120).returncode == 0
    assert (tmp_path / "out.txt").stat().st_size > 0


def test_a_path_the_terminal_cannot_show_is_advised_in_a_form_that_pastes(tmp_path, monkeypatch):
    import io

    from eae.utils import shell_quote

    path = str(tmp_path / "runs" / "int ü")
    assert shell_quote(path) == __import__("shlex").quote(path)  # a terminal that shows it: as it is
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    quoted = shell_quote(path)
    assert quoted.isascii() and quoted.startswith("$'") and "\\xc3\\xbc" in quoted, quoted
    pasted = subprocess.run(["bash", "-c", f"printf %s {quoted}"], capture_output=True, check=True).stdout
    assert pasted == os.fsencode(path)
    quoted = shell_quote("it's ü\\")  # the quote and backslash escaped too
    assert subprocess.run(["bash", "-c", f"printf %s {quoted}"], capture_output=True).stdout == "it's ü\\".encode()


# --------------------------------------------------------------------------- trial 39
def test_a_users_file_under_a_runs_name_in_a_marked_folder_is_kept(tmp_path, capsys):
    out = tmp_path / "R"
    assert main(["train", *SYN, "--epochs", "1", "--out", str(out)]) == 0
    for p in out.iterdir():  # `rm R/*`: the hidden marker stays
        if not p.name.startswith("."):
            p.unlink()
    (out / "config.json").write_text('{"note": "mine"}')
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(out)], capsys)
    assert rc == 2 and "is not a file of an eae run" in text and (out / "config.json").read_text() == '{"note": "mine"}'
    (out / "config.json").unlink()
    (out / "environment.json").write_text("my notes")
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(out)], capsys)
    assert rc == 2 and "environment.json is not a file of an eae run" in text, text
    assert (out / "environment.json").read_text() == "my notes"


def test_a_run_without_config_or_checkpoint_is_not_advised_resume(tmp_path, capsys):
    out = tmp_path / "S"
    assert main(["train", *SYN, "--epochs", "1", "--out", str(out)]) == 0
    for name in ("config.json", "checkpoint.pt", "checkpoint_best.pt", "model.safetensors", "model_best.safetensors"):
        (out / name).unlink(missing_ok=True)
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(out)], capsys)
    assert rc == 2 and "--resume" not in text and "choose another --out" in text, text


def test_a_bench_json_without_a_suite_is_not_advised_a_suite_named_none(tmp_path):
    from eae.bench.runner import _claim

    out = tmp_path / "b"
    _claim(out, {"suite": "smoke", "seeds": 1, "base": {}}, resume=False)
    (out / "bench.json").write_text('{"mine": 1}')
    with pytest.raises(ValueError) as e:
        _claim(out, {"suite": "smoke", "seeds": 1, "base": {}}, resume=True)
    assert "eae bench None" not in str(e.value) and "choose another --out" in str(e.value)


def test_a_run_inside_a_dataset_copy_is_not_advised_and_its_report_place_is_named(tmp_path, capsys):
    copy = tmp_path / "D" / "cifar-10-batches-py"
    run = copy / "r"
    assert main(["train", *SYN, "--epochs", "1", "--out", str(run)]) == 0  # before the copy was recognisable
    (copy / "batches.meta").write_bytes(b"x")
    rc, text = _call(["eval", str(tmp_path / "D"), "--attacks", "clean"], capsys)
    assert rc == 2 and "give one of the runs it holds" not in text, text
    rc, text = _call(["eval", str(run), "--attacks", "clean", "--diagnostics", "off"], capsys)
    assert rc == 2 and "is inside the dataset copy" in text and "--output /" not in text and "move the run" in text


def test_a_weights_file_given_as_a_run_is_advised_its_folder_in_a_form_that_pastes(tmp_path, monkeypatch):
    import io

    import eae
    from eae.checkpoint import read_config

    folder = tmp_path / "nö"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    with pytest.raises(eae.NotARun if hasattr(eae, "NotARun") else Exception, match=r"\$'.*n\\xc3\\xb6'"):
        read_config(folder / "model.safetensors")
