"""The parts of the training loop, one at a time: guards, validator, run folder, one
epoch, the data layer's explicit arguments, and the length of every function."""
from __future__ import annotations

import ast
import errno
import json
from pathlib import Path

import pytest
import torch

from eae.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from eae.data import DataSource, split_indices
from eae.evaluation.report import Report
from eae.training import NonFiniteGuard, OverfitGuard, Run, RunFolder, TrainingStopped, Validator, train_epoch

SRC = Path(__file__).resolve().parents[1] / "src" / "eae"


def _quiet(*args):
    pass


# --------------------------------------------------------------------------- non-finite guard
def _bn_net():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    net(torch.randn(4, 2))
    return net


def test_nonfinite_guard_in_stop_mode_counts_then_stops():
    guard, net = NonFiniteGuard("stop"), _bn_net()
    guard.begin_epoch(torch.device("cpu"))
    params = list(net.parameters())
    assert guard.step_ok(torch.tensor(1.0), params, net, None)
    assert not guard.should_break(24)
    assert guard.step_ok(torch.tensor(float("nan")), params, net, None)  # stop mode never skips a step...
    assert guard.should_break(24) and not guard.should_break(3)  # ...it leaves the epoch at the next check
    with pytest.raises(TrainingStopped, match="non-finite loss or gradient in epoch 3 \\(by step 25\\)"):
        guard.end_epoch(2, 25)


def test_nonfinite_guard_in_skip_mode_undoes_the_step_and_counts_it():
    guard, net = NonFiniteGuard("skip"), _bn_net()
    guard.begin_epoch(torch.device("cpu"))
    saved = guard.saved_buffers(net)
    before = [b.clone() for b in net.buffers()]
    net(torch.randn(8, 2) * 100)  # the bad batch moved the BatchNorm statistics
    assert not guard.step_ok(torch.tensor(float("inf")), list(net.parameters()), net, saved)
    assert all(torch.equal(a, b) for a, b in zip(before, net.buffers()))
    assert guard.step_ok(torch.tensor(0.5), list(net.parameters()), net, guard.saved_buffers(net))
    assert not guard.should_break(24)
    guard.end_epoch(0, 2)
    guard.begin_epoch(torch.device("cpu"))
    guard.end_epoch(1, 2)
    assert guard.skipped == 0 and guard.skipped_total == 1


@pytest.mark.parametrize("given, named", [
    ({"method": "trades", "trades_beta": 5000.0}, "--trades-beta (now 5000; default 6)"),
    ({"method": "eae", "eae_lambda": 50.0}, "--eae-lambda (now 50; default 0.1)"),
    ({"method": "eae_paper", "eae_eta": 90.0}, "--eae-eta (now 90; default 0.02)"),
    ({"head": "cosine", "head_scale": 9000.0}, "--head-scale (now 9000; default 16)"),
])
def test_nonfinite_advice_names_a_raised_loss_scale_the_run_uses(given, named):
    from eae.config import TrainConfig
    from eae.training.guards import nonfinite_advice

    assert named in nonfinite_advice(TrainConfig(**given), bf16=False)
    # the same values on a run that ignores them (refused now; recorded by older versions)
    unused = {**given, "method": "fgsm_rs", "head": "linear"}
    assert "smaller" not in nonfinite_advice(TrainConfig.from_dict(unused, strict=False), bf16=False)


def test_nonfinite_weights_stop_the_run():
    net = _bn_net()
    NonFiniteGuard("stop").check_weights(net, 0)
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    with pytest.raises(TrainingStopped, match="non-finite weights after epoch 4"):
        NonFiniteGuard("skip").check_weights(net, 3)


# --------------------------------------------------------------------------- overfitting guard
def test_overfit_guard_flags_a_collapse_of_validation_pgd(tiny_cfg):
    guard = OverfitGuard(tiny_cfg.replace(overfit_drop=0.05), adversarial=True)
    rows = [{"epoch": e, "val_pgd": p} for e, p in ((1, 0.30), (2, 0.40), (3, 0.25), (4, 0.10), (5, 0.42))]
    assert [guard.observe(r) for r in rows] == [False, False, False, True, False]
    assert rows[3]["overfit"] and "overfit" not in rows[2] and guard.best_pgd == 0.42
    standard = OverfitGuard(tiny_cfg, adversarial=False)
    assert not any(standard.observe(dict(r)) for r in rows)
    assert not guard.observe({"epoch": 6})  # an epoch without validation


@pytest.fixture
def tiny_run(tiny_cfg):
    cfg = tiny_cfg.replace(method="fgsm_rs", overfit_action="rollback_lower_step")
    folder = RunFolder(cfg, _quiet)
    assert folder.open(resume=False) is None
    yield cfg, Run(cfg, torch.device("cpu"), _quiet), folder
    folder.close()


def test_overfit_guard_rolls_back_to_the_best_checkpoint(tiny_run):
    cfg, run, folder = tiny_run
    guard = OverfitGuard(cfg, adversarial=True)
    folder.start({}, {})
    best_weights = {k: v.clone() for k, v in run.net.state_dict().items()}
    folder.offer_best(run.net, 1, 0.4)
    folder.save_epoch(run.snapshot(1, best=folder.best, guard=guard.state_dict()), 1)
    train_epoch(run, 1, NonFiniteGuard("stop"))  # epoch 2 moves the weights on
    guard.observe({"epoch": 1, "val_pgd": 0.4})
    row = {"epoch": 2, "val_pgd": 0.0}
    assert guard.observe(row)
    assert guard.respond(row, run, folder, _quiet) == 1
    assert all(torch.equal(best_weights[k], v) for k, v in run.net.state_dict().items())
    assert run.method.step_scale == 0.5 and guard.rollbacks == 1 and folder.best["epoch"] == 1
    event = json.loads((folder.path / "events.jsonl").read_text())
    assert event["action"] == "rollback_lower_step" and event["to_epoch"] == 1 and event["epoch"] == 2


def test_overfit_guard_stops_without_a_checkpoint_to_roll_back_to(tiny_run):
    cfg, run, folder = tiny_run
    guard = OverfitGuard(cfg, adversarial=True)
    folder.start({}, {})
    guard.observe({"epoch": 1, "val_pgd": 0.4})
    row = {"epoch": 2, "val_pgd": 0.0}
    assert guard.observe(row)
    with pytest.raises(TrainingStopped, match="catastrophic overfitting at epoch 2"):
        guard.respond(row, run, folder, _quiet)
    assert "checkpoint_best.pt to roll back to" in (folder.path / "events.jsonl").read_text()


# --------------------------------------------------------------------------- one epoch, validation
def test_train_epoch_returns_the_epochs_row(tiny_run):
    cfg, run, _ = tiny_run
    guard = NonFiniteGuard("skip")
    row = train_epoch(run, 0, guard)
    assert list(row)[:6] == ["epoch", "lr", "train_loss", "train_acc", "seconds", "skipped_steps"]
    assert row["epoch"] == 1 and row["skipped_steps"] == 0 and 0 <= row["train_acc"] <= 1
    assert run.scheduler.last_epoch == len(run.loader)


def test_validator_schedule_and_row(tiny_cfg):
    calls = []

    def suite(model, x, y, attacks=None, eps=8 / 255, *, seed=0, **kw):
        calls.append((len(y), sorted(attacks or {}), seed, kw.get("suite")))
        per = {k: {"accuracy": a, "mode": "standalone", "seconds": 0.0, "n_attacked": round(0.75 * len(y))}
               for k, a in (("pgd", 0.25), ("cw", 0.5))}
        return Report(suite="custom", label="", n=len(y), eps=eps, norm="linf", seed=seed, precision="fp32",
                      clean_accuracy=0.75, per_attack=per, robust_accuracy=0.25, seconds=1.5)

    cfg = tiny_cfg.replace(val_every=3, val_aa_n=4)
    v = Validator(cfg, torch.zeros(8, 3, 4, 4, dtype=torch.uint8), torch.zeros(8, dtype=torch.long),
                  torch.device("cpu"), passes=7, suite=suite)
    assert [e + 1 for e in range(7) if v.due(e)] == [3, 6, 7]
    row = v(torch.nn.Identity(), epoch=2)
    assert row == {"val_clean": 0.75, "val_pgd": 0.25, "val_cw": 0.5, "val_robust": 0.25, "val_seconds": 3.0,
                   "val_aa_fast": 0.25}
    assert calls == [(8, ["clean", "cw", "pgd"], cfg.seed + 2, None), (4, [], cfg.seed + 2, "aa-fast")]


# --------------------------------------------------------------------------- run folder
def test_run_folder_writes_and_reads_its_files(tiny_cfg):
    folder = RunFolder(tiny_cfg, _quiet)
    assert folder.open(resume=False) is None
    assert folder.start({"device": "cpu"}, {"dataset": "synthetic"}) == []
    rows = [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.5}]
    for r in rows:
        folder.record(r)
    folder.event(2, "note", detail="x")
    folder.close()
    path = folder.path
    assert json.loads((path / "config.json").read_text()) == tiny_cfg.to_dict()
    assert json.loads((path / "environment.json").read_text()) == {"device": "cpu"}
    assert json.loads((path / "events.jsonl").read_text()) == {"epoch": 2, "event": "note", "detail": "x"}
    assert json.loads((path / "dataset.json").read_text()) == {"dataset": "synthetic"}
    save_checkpoint(path / "checkpoint.pt", {"epoch": 1, "config": tiny_cfg.to_dict()})
    again = RunFolder(tiny_cfg, _quiet)
    assert again.open(resume=True)["epoch"] == 1 and again.saved_epoch == 1
    assert again.start({}, {}) == rows[:1]  # rows past the checkpoint are redone
    again.close()
    assert (path / "metrics.jsonl").read_text() == json.dumps(rows[0]) + "\n"
    with pytest.raises(FileExistsError, match="already holds a run"):
        RunFolder(tiny_cfg, _quiet).open(resume=False)


def test_run_folder_keeps_the_previous_checkpoint_when_a_save_fails(tiny_cfg):
    def full_disk(path, state):
        if state["epoch"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        save_checkpoint(path, state)

    folder = RunFolder(tiny_cfg, _quiet, write_checkpoint=full_disk)
    folder.open(resume=False)
    folder.start({}, {})
    assert folder.save_checkpoint({"epoch": 1}, 1) and not folder.save_checkpoint({"epoch": 2}, 2)
    folder.close()
    assert load_checkpoint(folder.path / CHECKPOINT)["epoch"] == 1
    event = json.loads((folder.path / "events.jsonl").read_text())
    assert event["event"] == "save_failed" and event["file"] == CHECKPOINT


def test_a_failed_first_checkpoint_does_not_claim_a_previous_one(tiny_cfg, capsys):
    def full_disk(path, state):
        raise OSError(errno.ENOSPC, "No space left on device")

    folder = RunFolder(tiny_cfg, _quiet, write_checkpoint=full_disk)
    folder.open(resume=False)
    folder.start({}, {})
    assert not folder.save_checkpoint({"epoch": 1}, 1)
    folder.close()
    err = capsys.readouterr().err
    assert "there is no checkpoint.pt yet" in err and "previous" not in err


def test_run_folder_keeps_the_best_epoch(tiny_cfg):
    folder = RunFolder(tiny_cfg, _quiet)
    folder.open(resume=False)
    net = torch.nn.Linear(2, 2)
    folder.offer_best(net, 1, 0.3)
    folder.offer_best(net, 2, 0.2)
    assert folder.best == {"epoch": 1, "val_robust": 0.3} and (folder.path / "model_best.safetensors").is_file()
    folder.save_epoch({"epoch": 1}, 1)
    assert folder.has_best_checkpoint() and folder.load_best_checkpoint() == {"epoch": 1}
    folder.close()


def test_run_folder_reads_metrics_with_a_torn_last_line(tmp_path):
    from eae.training.folder import read_metrics

    path, notes = tmp_path / "metrics.jsonl", []
    path.write_text('{"epoch": 1, "a": 1.0}\n{"epoch": 2, "a": 2.0}\n{"epoch": 3, "a"')
    assert read_metrics(path, 5, notes.append) == [{"epoch": 1, "a": 1.0}, {"epoch": 2, "a": 2.0}]
    assert "line 3" in notes[0] and "dropped" in notes[0]
    path.write_text('{"epoch": 1}\n{"epo\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match="metrics.jsonl, line 2: not a metrics row"):
        read_metrics(path, 5, notes.append)


def test_run_folder_writes_strict_json(tiny_cfg):
    folder = RunFolder(tiny_cfg, _quiet)
    folder.open(resume=False)
    folder.record({"epoch": 1, "val_clean": float("nan"), "x": float("inf")})
    folder.close()
    assert json.loads((folder.path / "metrics.jsonl").read_text()) == {"epoch": 1, "val_clean": None, "x": None}


def test_only_new_empty_or_run_folders_are_written(tmp_path):
    from eae.training.folder import check_run_folder

    check_run_folder(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_run_folder(tmp_path / "empty")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="was not made by eae \\(it holds notes.txt\\)"):
        check_run_folder(mine)
    (mine / ".eae-run").write_text("")
    check_run_folder(mine)
    with pytest.raises(FileExistsError, match="is a file"):
        check_run_folder(mine / "notes.txt")


# --------------------------------------------------------------------------- data layer
def test_split_indices_and_data_source(tiny_cfg):
    val, train = split_indices(100, 10, val_seed=3, train_subset=20)
    assert len(val) == 10 and len(train) == 20 and not set(val) & set(train)
    assert (val == split_indices(100, 10, val_seed=3)[0]).all()
    with pytest.raises(ValueError, match="leaves no training images"):
        split_indices(10, 10)
    src = DataSource.of(tiny_cfg)
    assert src.dataset == "synthetic" and src.synthetic_image_size == 16


# --------------------------------------------------------------------------- size of the parts
def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_training_function_is_longer_than_a_screen():
    files = [SRC / "trainer.py", *sorted((SRC / "training").glob("*.py"))]
    long = [(f.name, name, n) for f in files for name, n in _functions(f) if n > 60]
    assert not long, long
