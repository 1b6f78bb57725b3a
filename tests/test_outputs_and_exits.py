"""The three mechanisms of docs/reliability.md, case by case: the one owner of output
folders (eae.outputs), the one validator (TrainConfig and the flags), the one exit path
(eae.cli.main). Each case asserts the status, the words, and that nothing of the user's
changed."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eae
from eae.cli import main
from eae.outputs import OutputFolder, check_folder

from test_hostile import SYN, _call, _external_argv, _tree_hash, external, user  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("owner") / "run"
    assert main(["train", *SYN, "--method", "standard", "--epochs", "1", "--out", str(out)]) == 0
    return out


def _copy(run: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(run, dst)
    return dst


# --------------------------------------------------------------------------- files
def test_a_lock_planted_as_a_link_is_refused_and_not_written_through(tmp_path, capsys):
    victim = tmp_path / "precious.txt"
    victim.write_text("the user's text")
    alone, in_run = tmp_path / "alone", tmp_path / "in_run"
    for out in (alone, in_run):
        out.mkdir()
        (out / ".lock").symlink_to(victim)
    (in_run / ".eae-run").write_text("a run")  # ours, but the lock inside is a planted link
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(alone)], capsys)
    assert rc == 2 and "was not made by eae (it holds .lock)" in text  # a link is not our empty lock file
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(in_run)], capsys)
    assert rc == 2 and ".lock is a symbolic link" in text and "Traceback" not in text
    assert victim.read_text() == "the user's text"


def test_another_programs_pidfile_named_lock_is_not_taken_for_ours(tmp_path, capsys):
    out = tmp_path / "daemon"
    out.mkdir()
    (out / ".lock").write_text("4242\n")
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(out)], capsys)
    assert rc == 2 and "was not made by eae (it holds .lock)" in text
    assert sorted(p.name for p in out.iterdir()) == [".lock"] and (out / ".lock").read_text() == "4242\n"


def test_a_refused_claim_leaves_an_empty_lock_it_found_in_place(tmp_path):
    out = tmp_path / "f"
    out.mkdir()
    (out / ".lock").write_text("")
    folder = OutputFolder(out, "run").claim()
    folder.abandon()
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the marker is gone, the lock it found is not
    fresh = OutputFolder(tmp_path / "new", "run").claim()
    (fresh.path / ".lock").write_text("123")  # as RunLock writes it
    fresh.abandon()
    assert not (tmp_path / "new").exists()


def test_a_marker_planted_as_a_link_is_refused(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("x")
    out = tmp_path / "b"
    out.mkdir()
    (out / ".eae-bench").symlink_to(victim)
    with pytest.raises(eae.OutputRefused):
        OutputFolder(out, "bench").claim()
    assert victim.read_text() == "x"


def test_a_refused_training_leaves_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "new" / "deeper"
    (tmp_path / "images").mkdir()  # an image folder without train/ and val/: refused after the folder was claimed
    rc, text = _call(["train", "--device", "cpu", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "images"),
                      "--arch", "resnet_small", "--epochs", "1", "--quiet", "--out", str(out)], capsys)
    assert rc == 2 and "Traceback" not in text
    assert not (tmp_path / "new").exists()  # both levels it made are gone again


def test_a_dangling_link_as_out_is_named(tmp_path, capsys):
    out = tmp_path / "link"
    out.symlink_to(tmp_path / "gone")
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(out)], capsys)
    assert rc == 2 and "symbolic link" in text and "does not exist" in text and "Errno" not in text
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "rel").symlink_to("nowhere")  # relative: to the link's folder, not the working one
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(tmp_path / "o" / "rel")], capsys)
    assert rc == 2 and f"create {tmp_path / 'o' / 'nowhere'}," in text
    (tmp_path / "o" / "a").symlink_to("b")
    (tmp_path / "o" / "b").symlink_to("a")
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(tmp_path / "o" / "a")], capsys)
    assert rc == 2 and "a loop of links" in text and "does not exist" not in text


@pytest.mark.parametrize("kind,other", [("bench", "run"), ("demo", "run"), ("run", "bench"), ("headline", "demo")])
def test_a_folder_of_one_kind_is_refused_to_another(tmp_path, kind, other):
    OutputFolder(tmp_path / "f", other).claim()
    (tmp_path / "f" / "something").write_text("x")
    with pytest.raises(eae.OutputRefused, match="it is "):
        check_folder(tmp_path / "f", kind)


def test_bench_refuses_a_users_folder_and_a_run(run, tmp_path, user, capsys):
    (user / "REPORT.md").write_text("my report")
    (user / "results.json").write_text("{}")
    before = _tree_hash(user)
    rc, text = _call(["bench", "smoke", "--out", str(user), "--quiet"], capsys)
    assert rc == 2 and "was not made by eae" in text and _tree_hash(user) == before
    before = _tree_hash(run)
    rc, text = _call(["bench", "smoke", "--out", str(run), "--quiet"], capsys)
    assert rc == 2 and "it is a run of `eae train`" in text and _tree_hash(run) == before


def test_each_evaluation_keeps_its_own_report_and_a_rerun_says_what_it_replaces(run, tmp_path, capsys):
    r = _copy(run, tmp_path / "r")
    for attacks in ("clean", "clean,pgd1"):
        assert main(["eval", str(r), "--attacks", attacks, "--diagnostics", "off", "--quiet"]) == 0
    assert main(["eval", str(r), "--attacks", "clean", "--n", "10", "--diagnostics", "off", "--quiet"]) == 0
    names = sorted(p.name for p in r.glob("eval-*.json"))
    assert names == ["eval-clean+pgd1-diagoff.json", "eval-clean-diagoff.json", "eval-clean-n10-diagoff.json"]
    capsys.readouterr()
    assert main(["eval", str(r), "--attacks", "clean", "--diagnostics", "off", "--quiet"]) == 0
    assert f"replaces {r / 'eval-clean-diagoff.json'}" in capsys.readouterr().out


def test_output_naming_another_evaluations_report_is_refused(run, tmp_path, capsys):
    r = _copy(run, tmp_path / "r")
    report = tmp_path / "report.json"
    assert main(["eval", str(r), "--attacks", "clean", "--diagnostics", "off", "--quiet", "--output", str(report)]) == 0
    before = report.read_bytes()
    capsys.readouterr()
    rc, text = _call(["eval", str(r), "--attacks", "clean,pgd1", "--diagnostics", "off", "--quiet",
                      "--output", str(report)], capsys)
    # what differs is named, and the advice is given once; said before the attacks ran (no numbers printed)
    assert rc == 2 and "another evaluation (its settings are 'clean-diagoff', this one 'clean+pgd1-diagoff')" in text
    assert text.count("--output") == 1 and "it scored" not in text and "| clean" not in text
    assert report.read_bytes() == before
    other = tmp_path / "other"  # the same evaluation of another run (other weights): another evaluation
    assert main(["train", *SYN, "--method", "standard", "--epochs", "1", "--seed", "7", "--out", str(other)]) == 0
    capsys.readouterr()
    rc, text = _call(["eval", str(other), "--attacks", "clean", "--diagnostics", "off", "--quiet",
                      "--output", str(report)], capsys)
    assert rc == 2 and f"it scored (in {r}) \"the run's weights sha256:" in text and "| clean" not in text
    assert "its settings" not in text and report.read_bytes() == before


def test_a_run_moved_or_copied_is_the_same_run_to_its_reports(run, tmp_path, capsys):
    r = _copy(run, tmp_path / "r")
    argv = ["--attacks", "clean", "--diagnostics", "off", "--quiet"]
    assert main(["eval", str(r), *argv]) == 0
    moved = tmp_path / "moved"
    r.rename(moved)  # its own report, in the folder moved: the same evaluation, replaced
    rc, text = _call(["eval", str(moved), *argv], capsys)
    assert rc == 0 and "an earlier report of the same evaluation" in text
    copy = _copy(moved, tmp_path / "copy")  # a copy, and a report shared by --output: the same run
    report = tmp_path / "shared.json"
    assert main(["eval", str(moved), *argv, "--output", str(report)]) == 0
    rc, text = _call(["eval", str(copy), *argv, "--output", str(report)], capsys)
    assert rc == 0 and "an earlier report of the same evaluation" in text


def test_a_model_trained_elsewhere_is_named_by_its_weights_not_their_path(run, cifar_dir, tmp_path, monkeypatch,
                                                                         capsys):
    other = tmp_path / "other"
    assert main(["train", *SYN, "--method", "standard", "--epochs", "1", "--seed", "7", "--out", str(other)]) == 0
    report = tmp_path / "ext.json"
    argv = ["eval", "--model", "resnet_small", "--data-dir", str(cifar_dir.parent), "--n", "8", "--attacks", "clean",
            "--diagnostics", "off", "--quiet", "--output", str(report), "--weights"]
    monkeypatch.chdir(run)
    assert main([*argv, "model.safetensors"]) == 0
    monkeypatch.chdir(tmp_path)  # the same file by another path: the same evaluation
    rc, text = _call([*argv, str(run / "model.safetensors")], capsys)
    assert rc == 0 and "an earlier report of the same evaluation" in text, text
    monkeypatch.chdir(other)  # the same name, other weights: another evaluation
    before = report.read_bytes()
    rc, text = _call([*argv, "model.safetensors"], capsys)
    assert rc == 2 and "another evaluation" in text and report.read_bytes() == before, text


def test_a_report_naming_its_run_by_path_is_still_this_runs(run, tmp_path, capsys):
    from eae.outputs import sealed

    r = _copy(run, tmp_path / "r")
    argv = ["eval", str(r), "--attacks", "clean", "--diagnostics", "off", "--quiet"]
    assert main(argv) == 0
    path = r / "eval-clean-diagoff.json"
    d = json.loads(path.read_text())  # as versions that named a run by its folder wrote it
    d["evaluation"]["of"] = str(r.resolve())
    d.pop("report_sha256")
    path.write_text(json.dumps(sealed(d)))
    rc, text = _call(argv, capsys)
    assert rc == 0 and "an earlier report of the same evaluation" in text
    assert json.loads(path.read_text())["evaluation"]["of"].startswith("the run's weights sha256:")


def test_eval_keeps_a_report_the_user_edited_in_the_run_folder(run, tmp_path, capsys):
    r = _copy(run, tmp_path / "r")
    assert main(["eval", str(r), "--attacks", "clean", "--diagnostics", "off", "--quiet"]) == 0
    (r / "eval-clean-diagoff.md").write_text("my notes on this run")
    rc, text = _call(["eval", str(r), "--attacks", "clean", "--diagnostics", "off", "--quiet"], capsys)
    assert rc == 2 and "was changed since eae eval wrote it" in text
    assert (r / "eval-clean-diagoff.md").read_text() == "my notes on this run"


def test_best_weights_say_which_epoch_they_are(run, tmp_path, capsys):
    rc, text = _call(["eval", str(run), "--weights", "best", "--attacks", "clean", "--diagnostics", "off", "--quiet",
                      "--output", str(tmp_path / "b.json")], capsys)
    assert rc == 0 and "epoch 1 of the run" in text


# --------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("toml,fragment", [
    ("epochs = true", "p.toml: epochs = true: give a whole number"),
    ("augment = 1", "augment: expected true or false"),
    ("seed = 99999999999999999999", "seed"),
    ("lr_max = nan", "lr_max must be a finite number"),
])
def test_toml_values_of_the_wrong_type_name_the_field(tmp_path, toml, fragment, capsys):
    preset = tmp_path / "p.toml"
    preset.write_text(toml + "\n")
    rc, text = _call(["train", *SYN, "--config", str(preset), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and fragment in text and "Traceback" not in text and "Overflow" not in text
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content,fragment", [
    ("epochs = 1\n".encode("utf-16"), "not UTF-8 text"),
    (bytes(range(256)), "not UTF-8 text"),
    (None, "is a folder"),
])
def test_config_files_that_are_not_toml_text_are_named(tmp_path, content, fragment, capsys):
    preset = tmp_path / "p.toml"
    preset.mkdir() if content is None else preset.write_bytes(content)
    rc, text = _call(["train", *SYN, "--config", str(preset), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and fragment in text and str(preset) in text


@pytest.mark.parametrize("argv,fragment", [
    (["train", *SYN, "--seed", str(2**64)], "seed must be in 0.."),
    (["train", *SYN, "--synthetic-image-size", "1"], "synthetic_image_size must be >= 8"),
    (["train", *SYN, "--device", "meta"], "device 'meta' is not supported"),
    (["bench", "smoke", "--budget-k", "nan"], "--budget-k: must be a finite number > 0"),
    (["bench", "smoke", "--budget-k", "inf"], "--budget-k: must be a finite number > 0"),
    (["bench", "headline", "--dry-run", "--device", "tpu"], "unknown device 'tpu'"),
    (["train", *SYN, "--method", "eae", "--eae-base-downsample", "17"], "eae_base_downsample 17 is larger"),
])
def test_impossible_values_are_one_line_naming_the_field(tmp_path, argv, fragment, capsys):
    rc, text = _call([*argv, "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and fragment in text and "Traceback" not in text, text
    assert not (tmp_path / "o").exists()


def test_eval_refuses_an_empty_attack_list_and_meta_device(run, capsys):
    rc, text = _call(["eval", str(run), "--attacks", ","], capsys)
    assert rc == 2 and "names no attack" in text
    rc, text = _call(["eval", str(run), "--device", "meta", "--attacks", "clean"], capsys)
    assert rc == 2 and "not supported" in text and "Traceback" not in text


# --------------------------------------------------------------------------- the API
def test_the_api_speaks_python(run, tmp_path):
    cfg = eae.TrainConfig(**{**json.loads((run / "config.json").read_text()), "out": str(tmp_path / "r")})
    _copy(run, tmp_path / "r")
    with pytest.raises(eae.RunExists) as e:
        eae.train(cfg, quiet=True)
    assert "resume=True" in str(e.value) and "--resume" not in str(e.value)
    assert isinstance(e.value, FileExistsError)
    with pytest.raises(eae.ConfigError) as c:
        eae.TrainConfig(epochs=True)
    assert c.value.field == "epochs" and isinstance(c.value, ValueError)


# --------------------------------------------------------------------------- exits
def _train_until_checkpoint(out: Path, argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "eae", "train", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    return proc


def test_sigterm_saves_and_gives_the_exact_quoted_command_with_the_presets_out(tmp_path):
    out = tmp_path / "my runs" / "r 1"  # a space: the hint must still paste
    preset = tmp_path / "p.toml"
    preset.write_text(f"out = {json.dumps(str(out))}\nepochs = 50\nsynthetic_train_size = 1024\n")
    proc = _train_until_checkpoint(out, [*SYN, "--config", str(preset)])
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err
    hint = err.split("`")[1]
    assert shlex.split(hint) == ["eae", "train", f"--out={out}", "--resume"]  # = : a path may start with -


@pytest.mark.parametrize("disposition", ["default", "ignored"])
def test_sighup_is_answered_like_sigterm_unless_ignored(monkeypatch, capsys, disposition):
    import eae.cli as cli

    def hang_up(args):  # the terminal closes while a command runs
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.5)  # the handler runs at the next bytecode
        return 0

    monkeypatch.setattr(cli, "cmd_list", hang_up)
    before = signal.signal(signal.SIGHUP, signal.SIG_DFL if disposition == "default" else signal.SIG_IGN)
    try:
        rc = main(["list"])
        assert signal.getsignal(signal.SIGHUP) is (signal.SIG_DFL if disposition == "default" else signal.SIG_IGN)
    finally:
        signal.signal(signal.SIGHUP, before)
    err = capsys.readouterr().err
    assert (rc, "hung up (SIGHUP" in err) == ((129, True) if disposition == "default" else (0, False))


def test_bench_ctrl_c_hint_keeps_the_settings_resume_needs(monkeypatch, tmp_path, capsys):
    import eae.bench as bench

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "run_bench", interrupted)
    out = tmp_path / "a b"
    out.mkdir()  # as if the bench had kept a finished run
    rc, text = _call(["bench", "smoke", "--out", str(out), "--seeds", "2", "--budget-k", "3"], capsys)
    assert rc == 130
    hint = shlex.split(text.split("`")[1])
    assert hint[:5] == ["eae", "bench", "smoke", f"--out={out}", "--resume"]
    assert "--seeds" in hint and "2" in hint and "--budget-k" in hint and "3.0" in hint


def test_a_model_that_calls_sys_exit_is_an_error_not_a_success(external, capsys):
    quitter = Path(external["ROOT"]) / "quitter.py"
    quitter.write_text(Path(external["MODELS"]).read_text()
                       + "\n\nclass Quitter(Tiny):\n    def forward(self, x):\n        import sys; sys.exit(0)\n")
    argv = _external_argv(external, f"{quitter}:Quitter", "{TINY}", [])
    rc, text = _call(argv, capsys)
    assert rc == 2 and "sys.exit(0)" in text and "nothing was scored" in text


def test_resumed_stop_after_counts_the_epochs_of_this_call(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "3", "--out", str(out), "--stop-after", "1"]) == 0
    capsys.readouterr()
    assert main(["train", *SYN, "--epochs", "3", "--out", str(out), "--stop-after", "1", "--resume"]) == 0
    text = capsys.readouterr().out
    assert "stopped after 1 epoch of this call" in text and "2 epochs done in all" in text


@pytest.mark.parametrize("body,fragment", [
    ("return torch.zeros(len(x), 3, device='meta')", "logits on meta for inputs on cpu"),
    ("return [0, 1]", "returned a list, not a tensor"),
    ("return torch.zeros(len(x))", "logits must be (2, classes)"),
])
def test_a_model_whose_outputs_are_not_logits_is_one_line(external, body, fragment, capsys):
    odd = Path(external["ROOT"]) / "odd.py"
    odd.write_text(Path(external["MODELS"]).read_text()
                   + f"\n\nclass Odd(Tiny):\n    def forward(self, x):\n        {body}\n")
    rc, text = _call(_external_argv(external, f"{odd}:Odd", "{TINY}", []), capsys)
    assert rc == 2 and fragment in text and "Traceback" not in text, text


# --------------------------------------------------------------------------- second trial's cases
def test_a_users_lock_file_is_not_taken_for_ours(tmp_path, capsys):
    out = tmp_path / "lockdir"
    out.mkdir()
    (out / ".lock").write_text("my precious lock notes")
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(out)], capsys)
    assert rc == 2 and "was not made by eae" in text
    assert (out / ".lock").read_text() == "my precious lock notes"


def test_an_appended_log_planted_as_a_link_is_not_written_through(tmp_path, capsys):
    victim = tmp_path / "userlog.txt"
    victim.write_text("mine\n")
    out = tmp_path / "planted"
    out.mkdir()
    (out / ".eae-run").write_text("a run")
    (out / "metrics.jsonl").symlink_to(victim)
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(out)], capsys)
    assert rc == 2 and victim.read_text() == "mine\n"


def test_demo_refuses_a_folder_holding_a_users_run(run, tmp_path, capsys):
    mine = tmp_path / "myruns"
    _copy(run, mine / "old")
    before = _tree_hash(mine)
    rc, text = _call(["demo", "--out", str(mine), "--data-dir", str(tmp_path / "nodata"), "--quiet"], capsys)
    assert rc == 2 and "was not made by eae" in text and _tree_hash(mine) == before


def test_an_out_that_cannot_be_created_names_the_flag(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(tmp_path / "file.txt" / "sub")], capsys)
    assert rc == 2 and text.startswith("error: --out") and "cannot create it" in text and "[Errno" not in text


def test_report_names_cover_everything_that_changes_the_numbers():
    from argparse import Namespace

    from eae.cli import eval_report_name

    src = {"norm": "linf", "eps": 8 / 255, "meta": {"weights": "final"}}
    plain = Namespace(seed=0, precision="fp32", eot=None, diagnostics="full", diag_n=1000, batch_size=500)
    name = lambda attacks, args=plain: eval_report_name(None, attacks, 100, 100, "linf", 8 / 255, src, args)  # noqa
    assert name(["clean"]) == "eval-clean.json"
    odd = Namespace(seed=3, precision="bf16", eot=2, diagnostics="cheap", diag_n=1000, batch_size=64)
    assert name(["clean"], odd) == "eval-clean-seed3-precisionbf16-eot2-diagcheap-bs64.json"
    # batches of 100 or more hold all 100 points: the same draws as the default's one batch
    assert name(["clean"], Namespace(**{**vars(plain), "batch_size": 100})) == "eval-clean.json"
    near = lambda eps: eval_report_name(None, ["fgsm"], 8, 8, "linf", eps, src, plain)  # noqa: E731
    assert near(0.03137252) != near(0.03137251) and near(4 / 255) == "eval-fgsm-linf-eps4-255.json"
    many = ["clean"] * 14
    assert name(many + ["fgsm"]) != name(many + ["cw2"]) and len(name(many + ["fgsm"])) < 90


def test_a_report_json_edited_by_hand_is_not_replaced(run, tmp_path, capsys):
    r = _copy(run, tmp_path / "r")
    assert main(["eval", str(r), "--attacks", "clean", "--diagnostics", "off", "--quiet"]) == 0
    report = json.loads((r / "eval-clean-diagoff.json").read_text())
    report["robust_accuracy"] = 0.99
    (r / "eval-clean-diagoff.json").write_text(json.dumps(report))
    rc, text = _call(["eval", str(r), "--attacks", "clean", "--diagnostics", "off", "--quiet"], capsys)
    assert rc == 2 and "was changed since eae eval wrote it" in text
    assert json.loads((r / "eval-clean-diagoff.json").read_text())["robust_accuracy"] == 0.99


@pytest.mark.parametrize("argv,fragment", [
    (["--attacks", "pgd99999999999999999999"], "steps must be in 1..100,000"),
    (["--attacks", "pgd0"], "attack spec 'pgd0'"),
])
def test_attack_specs_out_of_range_name_the_spec(run, argv, fragment, capsys):
    rc, text = _call(["eval", str(run), *argv, "--quiet"], capsys)
    assert rc == 2 and fragment in text, text


@pytest.mark.parametrize("argv,fragment", [
    (["bench", "smoke", "--only", ","], "names no entry"),
    (["train", *SYN, "--momentum", "5"], "momentum must be in [0, 1)"),
    (["train", *SYN, "--norm", "l2", "--eps", "0"], "eps 0 under l2"),
])
def test_second_trial_values_are_refused(tmp_path, argv, fragment, capsys):
    rc, text = _call([*argv, "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and fragment in text and not (tmp_path / "o").exists(), text


def test_presets_with_a_bom_are_read_and_devices_are_not_presets(tmp_path, capsys):
    from eae.config import load_toml

    preset = tmp_path / "bom.toml"
    preset.write_bytes("epochs = 3\n".encode("utf-8-sig"))
    assert load_toml(preset) == {"epochs": 3}
    rc, text = _call(["train", *SYN, "--config", "/dev/zero", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "not a regular file" in text


def test_a_named_data_dir_is_the_only_place_looked_at(tmp_path, capsys):
    rc, text = _call(["data", "cifar10", "--data-dir", str(tmp_path / "nodata"), "--no-download"], capsys)
    assert rc == 2 and str(tmp_path / "nodata") in text and ".cache" not in text


def test_the_api_checks_its_own_arguments(tiny_cfg):
    import torch

    for kwargs in ({"stop_after": 0}, {"stop_after": True}, {"resume": "no"}):
        with pytest.raises(eae.ConfigError):
            eae.train(tiny_cfg, **kwargs)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))
    x, y = torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 0])
    for kwargs, field in (({"seed": -1}, "seed"), ({"seed": 2**70}, "seed"), ({"attacks": "fgsm"}, "attacks")):
        with pytest.raises(eae.ConfigError) as e:
            eae.evaluate(model, x, y, **kwargs)
        assert e.value.field == field


def test_load_of_an_unfinished_run_speaks_python(tmp_path):
    out = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "3", "--out", str(out), "--stop-after", "1"]) == 0
    with pytest.raises(FileNotFoundError) as e:
        eae.load(out)
    assert "resume=True" in str(e.value) and "--resume" not in str(e.value) and "weights='best'" in str(e.value)


def test_files_left_out_are_said_even_with_quiet(tmp_path, capsys):
    from test_imagefolder import make_folder

    data = make_folder(tmp_path / "data", per_class=4)
    (data / "train" / "a" / "notes.jpg").write_text("not an image")
    rc = main(["train", "--device", "cpu", "--dataset", "imagefolder", "--data-dir", str(data), "--image-size", "16",
               "--arch", "resnet_small", "--val-size", "3", "--batch-size", "4", "--epochs", "1", "--val-attack-steps",
               "1", "--workers", "0", "--bad-images", "skip", "--quiet", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 0 and "1 entry of the training folder (files or class folders) was left out" in err


# --------------------------------------------------------------------------- third trial's cases
def test_run_files_without_a_config_are_never_replaced(tmp_path, capsys):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / ".eae-run").write_text("copied")
    (fake / "metrics.jsonl").write_text("the user's own log\n")
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(fake)], capsys)
    assert rc == 2 and "no checkpoint.pt" in text
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(fake), "--resume"], capsys)
    assert rc == 2 and "config.json is missing" in text
    assert (fake / "metrics.jsonl").read_text() == "the user's own log\n"


def test_a_resume_without_a_checkpoint_says_it_restarts(tmp_path, capsys):
    out, args = tmp_path / "r", [*SYN, "--epochs", "3", "--val-every", "5"]  # no validation yet: no best weights
    assert main(["train", *args, "--out", str(out), "--stop-after", "1"]) == 0
    (out / "checkpoint.pt").unlink()
    capsys.readouterr()
    assert main(["train", *args, "--out", str(out), "--resume", "--stop-after", "1"]) == 0
    assert "no checkpoint.pt: the run restarts from epoch 1" in capsys.readouterr().err


def test_a_missing_config_with_a_checkpoint_is_named_on_resume(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "3", "--out", str(out), "--stop-after", "1"]) == 0
    (out / "config.json").unlink()
    rc, text = _call(["train", "--out", str(out), "--resume"], capsys)
    assert rc == 2 and "config.json is missing" in text and "nothing to resume" not in text


def test_budget_k_belongs_to_budget_suites_and_a_changed_setting_is_named(tmp_path, capsys):
    rc, text = _call(["bench", "smoke", "--out", str(tmp_path / "b"), "--budget-k", "3"], capsys)
    assert rc == 2 and "budget suites" in text and not (tmp_path / "b").exists()
    from eae.bench.runner import _claim

    _claim(tmp_path / "c", {"suite": "smoke", "seeds": 2, "entries": {}}, resume=False)
    with pytest.raises(ValueError, match=r"seeds 2 \(now 1\)"):
        _claim(tmp_path / "c", {"suite": "smoke", "seeds": 1, "entries": {}}, resume=True)


def test_the_api_refuses_empty_and_inconsistent_evaluations(run):
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))
    x, y = torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 0])
    for kwargs, field in (({"attacks": []}, "attacks"), ({"test_size": 2}, "test_size"),
                          ({"test_size": -1}, "test_size")):
        with pytest.raises(eae.ConfigError) as e:
            eae.evaluate(model, x, y, **kwargs)
        assert e.value.field == field
    with pytest.raises(eae.ConfigError, match="no images"):
        eae.evaluate(model, x[:0], y[:0])
    with pytest.raises(eae.ConfigError) as e:
        eae.load(run, device="cuda:7" if torch.cuda.is_available() else "cuda")
    assert e.value.field == "device" and "--device" not in str(e.value)
    with pytest.raises(eae.ConfigError):
        eae.train(eae.TrainConfig(out="unused"), stop_after=10**30)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"method": "pgd", "pgd_steps": 0}, "pgd_steps must be >= 1"),
    ({"method": "trades", "trades_steps": 0}, "trades_steps must be >= 1"),
    ({"lr_schedule": "piecewise", "lr_milestones": ()}, "lr_milestones is empty"),
])
def test_values_that_would_train_on_nothing_are_refused(kwargs, fragment):
    with pytest.raises(eae.ConfigError, match=fragment):
        eae.TrainConfig(**kwargs)


def test_missing_best_weights_are_said_as_they_are(run, tmp_path, capsys):
    r = _copy(run, tmp_path / "r")
    (r / "model_best.safetensors").unlink()
    rc, text = _call(["eval", str(r), "--weights", "best", "--attacks", "clean"], capsys)
    assert rc == 2 and "moved or deleted" in text and "--weights final" in text


def test_a_set_eae_data_dir_is_the_only_place_looked_at(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EAE_DATA_DIR", str(tmp_path / "nonexistent"))
    rc, text = _call(["data", "cifar10", "--no-download"], capsys)
    assert rc == 2 and "nonexistent" in text and ".cache" not in text


# --------------------------------------------------------------------------- fourth trial's cases
def test_paths_that_go_up_are_refused_before_anything_is_made(tmp_path, capsys):
    proj = tmp_path / "userproj"
    proj.mkdir()
    (proj / "config.json").write_text("{}")
    before = _tree_hash(proj)
    rc, text = _call(["train", *SYN, "--epochs", "1", "--out", str(proj / "newrun" / "..")], capsys)
    assert rc == 2 and "goes up with '..'" in text and _tree_hash(proj) == before


def test_a_lock_hard_linked_to_a_users_file_is_not_written_into(run, tmp_path, capsys):
    r = _copy(run, tmp_path / "r")
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    (r / ".lock").unlink(missing_ok=True)
    os.link(precious, r / ".lock")
    rc, text = _call(["train", "--out", str(r), "--resume"], capsys)
    assert rc == 2 and "hard link" in text and precious.read_text() == "mine"


@pytest.mark.parametrize("argv,fragment", [
    (["train", *SYN, "--method", "pgd", "--pgd-steps", "2147483647"], "pgd_steps must be at most 100,000"),
    (["train", *SYN, "--synthetic-train-size", "100000000"], "synthetic_train_size must be at most"),
    (["train", *SYN, "--lr-max", "1e300"], "lr_max must be at most"),
    (["train", *SYN, "--config", ""], "the config file's path is empty"),
])
def test_values_that_would_run_for_days_or_exhaust_memory_are_refused(tmp_path, argv, fragment, capsys):
    rc, text = _call([*argv, "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and fragment in text and not (tmp_path / "o").exists(), text


def test_eval_refuses_an_empty_weights_name_and_a_huge_eot(run, capsys):
    rc, text = _call(["eval", str(run), "--weights", "", "--attacks", "clean"], capsys)
    assert rc == 2 and "final or best" in text
    rc, text = _call(["eval", str(run), "--eot", "2147483647", "--attacks", "fgsm"], capsys)
    assert rc == 2 and "--eot" in text


def test_eae_debug_0_means_off(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EAE_DEBUG", "0")
    rc, text = _call(["train", *SYN, "--epochs", "0", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "Traceback" not in text


def test_a_missing_tensorboard_is_one_line_and_claims_no_folder(tmp_path, capsys):
    pytest.importorskip("torch")
    try:
        import torch.utils.tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed here")
    except ImportError:
        pass
    rc, text = _call(["train", *SYN, "--epochs", "1", "--tensorboard", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "pip install tensorboard" in text and not (tmp_path / "o").exists()


def test_names_changed_by_cleaning_keep_apart():
    from argparse import Namespace

    from eae.cli import eval_report_name

    src = {"norm": "linf", "eps": 8 / 255, "meta": {"weights": "final"}}
    args = Namespace(seed=0, precision="fp32", eot=None, diagnostics="full", diag_n=1000, batch_size=500)
    assert (eval_report_name(None, ["pgd\u0661"], 8, 8, "linf", 8 / 255, src, args)
            != eval_report_name(None, ["pgd\u0663"], 8, 8, "linf", 8 / 255, src, args))


def test_the_api_names_device_in_python_words():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(eae.ConfigError) as e:
        eae.evaluate(torch.nn.Flatten(), torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), device="cuda")
    assert "device='cpu'" in str(e.value) and "--device" not in str(e.value)


def test_a_pipe_closed_early_is_not_reported_as_a_disk_error():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    eae_list = subprocess.Popen([sys.executable, "-m", "eae", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env)
    eae_list.stdout.close()  # the reader is gone before eae writes
    err = eae_list.stderr.read().decode()
    assert eae_list.wait(timeout=120) in (0, 141) and "check the path" not in err and "Traceback" not in err


def test_an_infinite_denominator_is_not_read_as_zero(tmp_path, capsys):
    rc, text = _call(["train", *SYN, "--eps", "1/3e400", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "--eps" in text


def test_resume_with_a_hand_edited_config_names_the_file(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "2", "--stop-after", "1", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "lr_max": cfg["lr_max"] * 2}))
    before = _tree_hash(out)
    rc, text = _call(["train", "--out", str(out), "--resume"], capsys)
    assert rc == 2 and "config.json and checkpoint.pt disagree" in text and "lr_max" in text
    assert "Traceback" not in text and _tree_hash(out) == before


@pytest.mark.parametrize("reader", ["closed pipe", "full disk"])
def test_training_goes_on_when_its_output_cannot_be_written(tmp_path, reader):
    # `eae train ... | head -1` and `eae train ... > /dev/full`: the printing stops, the run does not
    out = tmp_path / "r"
    args = [sys.executable, "-m", "eae", "train", *[a for a in SYN if a != "--quiet"], "--epochs", "2", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    if reader == "closed pipe":
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        proc.stdout.readline()
        proc.stdout.close()  # as `head -1` does after its line
        err, rc = proc.stderr.read().decode(), proc.wait(timeout=300)
        assert rc == 141
    else:
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full here")
        with open("/dev/full", "w") as full:
            done = subprocess.run(args, stdout=full, stderr=subprocess.PIPE, env=env, timeout=300)
        err, rc = done.stderr.decode(), done.returncode
        assert rc == 0
    assert "eae goes on without printing" in err and "Traceback" not in err
    assert (out / "model.safetensors").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_input_nested_too_deeply_is_one_line_not_an_internal_error(run, tmp_path, capsys):
    deep = tmp_path / "deep.toml"
    deep.write_text("lr_milestones = " + "[" * 3000 + "0.5" + "]" * 3000 + "\n")
    rc, text = _call(["train", *SYN, "--out", str(tmp_path / "x"), "--config", str(deep)], capsys)
    assert rc == 2 and "nested too deeply" in text and "internal error" not in text
    rc, text = _call(["eval", "--model", "preact_resnet18", "--weights", str(tmp_path / "w.pt"),
                      "--model-kwargs", "[" * 5000 + "]" * 5000], capsys)
    assert rc == 2 and "nested too deeply" in text and len(text) < 1000
    r = _copy(run, tmp_path / "r")
    (r / "dataset.json").write_text('{"a":' * 3000 + "1" + "}" * 3000)
    rc, text = _call(["eval", str(r), "--attacks", "clean", "--diagnostics", "off", "--quiet"], capsys)
    assert rc == 2 and "dataset.json" in text and "nested too deeply" in text


@pytest.mark.parametrize("damage", ["emptied", "deleted"])
def test_resume_refuses_a_metrics_file_without_the_checkpoints_epochs(tmp_path, capsys, damage):
    out = tmp_path / "r"
    assert main(["train", *SYN, "--epochs", "3", "--stop-after", "2", "--out", str(out)]) == 0
    if damage == "emptied":
        (out / "metrics.jsonl").write_text("")
    else:
        (out / "metrics.jsonl").unlink()
    before = _tree_hash(out)
    rc, text = _call(["train", "--out", str(out), "--resume"], capsys)
    assert rc == 2 and "metrics.jsonl has no row for epochs 1-2" in text and _tree_hash(out) == before


def test_the_api_refuses_impossible_attack_model_and_test_set_sizes():
    import torch

    for eps in (5.0, -1.0, float("nan")):
        with pytest.raises(eae.ConfigError, match="eps must be"):
            eae.build_attack("pgd5", eps=eps)
    for n in (0, -1, 2.5, True):
        with pytest.raises(eae.ConfigError, match="num_classes must be an integer in"):
            eae.create_model("resnet_small", num_classes=n)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
    with pytest.raises(eae.ConfigError, match="test_size must be"):
        eae.evaluate(net, torch.rand(8, 3, 4, 4), torch.zeros(8, dtype=torch.long), attacks=["clean"], test_size=10**20)
    for field, value in (("overfit_drop", 1.5), ("workers", 10**6)):
        with pytest.raises(eae.ConfigError, match=field):
            eae.TrainConfig(**{field: value})


def test_a_file_of_a_run_given_as_the_run_is_named(run, capsys):
    rc, text = _call(["eval", str(run / "model.safetensors"), "--attacks", "clean"], capsys)
    assert rc == 2 and "is a file, not a run folder" in text and str(run) in text and "config.json not found" not in text
    with pytest.raises(eae.NotARun, match="is a file, not a run folder"):
        eae.load(run / "model.safetensors")
    with pytest.raises(FileNotFoundError):  # NotARun is one: `except FileNotFoundError` keeps working
        eae.load(run / "nowhere")


@pytest.mark.parametrize("flag, value", [("--image-size", "32"), ("--dataset", "cifar10"), ("--normalize", "0,0,0:1,1,1")])
def test_eval_of_a_run_refuses_the_flags_of_a_model_from_elsewhere(run, capsys, flag, value):
    rc, text = _call(["eval", str(run), flag, value, "--attacks", "clean"], capsys)
    assert rc == 2 and f"{flag} is for --model; a run folder knows its own" in text


def test_data_locations_that_cannot_be_right_are_named(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("EAE_DATA_DIR", raising=False)
    (tmp_path / "cache").write_text("a file")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rc, text = _call(["data", "cifar10", "--no-download"], capsys)
    assert rc == 2 and "is a file, not a folder" in text and "Errno" not in text
    monkeypatch.setenv("EAE_DATA_DIR", str(tmp_path) + "\n")
    rc, text = _call(["data", "cifar10", "--no-download"], capsys)
    assert rc == 2 and "white space" in text and "\\n" in text


def test_a_suite_heading_says_the_eot_that_was_run():
    import torch

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
    x, y = torch.rand(4, 3, 4, 4), torch.zeros(4, dtype=torch.long)
    labels = {e: eae.evaluate(net, x, y, suite="aa-rand", eot=e, diagnostics="off").label for e in (1, 5, None)}
    assert "no EOT" in labels[1] and "with EOT 5" in labels[5] and "with EOT;" in labels[None]


def test_a_resumed_bench_of_another_suite_says_which_suite_to_resume_with(tmp_path):
    from eae.bench.runner import _claim

    _claim(tmp_path / "b", {"suite": "smoke", "seeds": 1, "budget_k": None}, resume=False)
    with pytest.raises(ValueError) as e:
        _claim(tmp_path / "b", {"suite": "speed", "seeds": 1, "budget_k": None}, resume=True)
    assert "`eae bench smoke`" in str(e.value) and "--seeds" not in str(e.value)
    with pytest.raises(ValueError, match="give the same --seeds as the first call"):
        _claim(tmp_path / "b", {"suite": "smoke", "seeds": 3, "budget_k": None}, resume=True)


def test_a_file_where_the_cifar_folder_goes_is_named(tmp_path, capsys):
    (tmp_path / "cifar-10-batches-py").write_text("not a folder")
    for extra in ([], ["--no-download"]):
        rc, text = _call(["data", "cifar10", "--data-dir", str(tmp_path), *extra], capsys)
        assert rc == 2 and "is a file where the CIFAR-10 folder goes" in text and "Errno" not in text


def test_a_full_stderr_does_not_turn_a_users_mistake_into_a_bug(run, tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "eae", "eval", str(run), "--attacks", "bogus"], stderr=full,
                              stdout=subprocess.DEVNULL, env=env, timeout=120)
    assert done.returncode == 2
