"""Hostile and careless input, as a new user would give it, table-driven.

Every case asserts the exit status, that the message names the problem, that no
traceback is printed, and that no file outside the run's own changed (a user folder is
hashed before and after). Classes: wrong numbers, lost results, tracebacks for user
errors, misleading messages, data loss."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

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
    (["--weights", "bogus"], 2, "invalid choice"),
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
    (["--head-scale", "nan"], "head_scale must be a finite number"),
    (["--eae-eta", "nan"], "eae_eta must be a finite number"),
    (["--nfgsm-noise", "nan"], "nfgsm_noise must be a finite number"),
    (["--trades-beta", "nan"], "trades_beta must be a finite number"),
    (["--lr-gamma", "nan"], "lr_gamma must be a finite number"),
    (["--fgsm-alpha", "-0.1"], "fgsm_alpha must be > 0"),
    (["--pgd-alpha", "0"], "pgd_alpha must be > 0"),
    (["--trades-beta", "-1"], "trades_beta must be >= 0"),
    (["--eae-q", "0"], "eae_q must be in (0, 1]"),
    (["--val-size", "-1"], "val_size must be >= 0"),
    (["--stop-after", "-1"], "--stop-after: must be >= 1"),
    (["--stop-after", "0"], "--stop-after: must be >= 1"),
    (["--method", "bogus"], "invalid choice"),
    (["--arch", "bogus"], "invalid choice"),
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
    ("config.json", None, lambda p: _edit_json(p, arch="preact_resnet18"), "do not fit a 'preact_resnet18' network"),
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
    assert rc == 2 and "config.json not found" in text
    rc, text = _call(["eval", str(run), "--weights", "best", "--attacks", "clean", "--quiet"], capsys)
    assert rc in (0, 2) and ("model_best" in text or "clean" in text)


def test_eval_prints_the_numbers_even_when_it_cannot_save_them(run, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    rc, text = _call(["eval", str(run), "--attacks", "clean,pgd2", "--diagnostics", "off", "--quiet",
                      "--output", str(blocker / "eval.json")], capsys)
    assert rc == 2 and "could not save the report" in text and "pgd2" in text  # the table came first


def test_eval_of_a_model_with_nan_outputs_is_an_error_not_a_score(run, tmp_path, capsys):
    from eae.checkpoint import load, save_weights

    model = load(run)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    bad = _tamper(run, tmp_path, "model.safetensors", edit=lambda p: save_weights(model, p, {"arch": "resnet_small"}))
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
    (dict(batch_size=-3), "batch_size must be an integer >= 1"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(eps=8), "eps must be a number in [0, 1]"),
    (dict(eps=float("nan")), "eps must be a number in [0, 1]"),
    (dict(diag_n=-5), "diag_n must be an integer >= 0"),
    (dict(eot=0), "eot must be an integer >= 1"),
    (dict(eot=2.5), "eot must be an integer >= 1"),
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


def test_data_and_bench_refuse_with_one_line(tmp_path, user, capsys):
    rc, text = _call(["data", "cifar10", "--data-dir", str(tmp_path / "none"), "--no-download"], capsys)
    assert rc == 2 and "CIFAR-10 not found" in text
    before = _tree_hash(user)
    for argv, fragment in [(["bench", "headline", "--out", str(user), "--tiny"], "not empty"),
                           (["bench", "headline", "--out", str(tmp_path / "h"), "--budget", "-1"], "--budget"),
                           (["bench", "headline", "--out", str(tmp_path / "h"), "--budget", "nan"], "--budget"),
                           (["bench", "smoke", "--out", str(tmp_path / "s"), "--tiny"], "headline` only"),
                           (["bench", "smoke", "--out", str(tmp_path / "s"), "--seeds", "0"], "--seeds"),
                           (["bench", "smoke", "--out", str(tmp_path / "s"), "--only", "bogus"], "unknown entries"),
                           (["bench", "bogus", "--out", str(tmp_path / "s")], "invalid choice")]:
        rc, text = _call(argv, capsys)
        assert rc == 2 and fragment in text, (argv, text)
    assert _tree_hash(user) == before
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bench.json").write_text("{ torn")
    rc, text = _call(["bench", "smoke", "--out", str(tmp_path / "b"), "--resume"], capsys)
    assert rc == 2 and "bench.json: not valid JSON" in text


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
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert f"eae train --out {out} --resume" in err
