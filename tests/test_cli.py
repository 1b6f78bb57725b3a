import json
import subprocess
import sys

import pytest

from eae.cli import main
from helpers import only_report


def test_train_then_eval_round_trip(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--dataset", "synthetic", "--arch", "resnet_small", "--method", "fgsm_rs",
               "--synthetic-train-size", "160", "--synthetic-test-size", "96", "--synthetic-image-size", "16",
               "--val-size", "32", "--epochs", "1", "--batch-size", "64", "--val-attack-steps", "1",
               "--device", "cpu", "--eps", "4/255", "--out", str(run), "--quiet"])
    assert rc == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == "fgsm_rs" and cfg["eps"] == pytest.approx(4 / 255)
    rc = main(["eval", str(run), "--attacks", "clean,fgsm,pgd3,cw3", "--n", "40", "--eps", "4/255", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "SUBSET" in out and "worst case" in out
    report = json.loads(only_report(run).read_text())
    assert report["n"] == 40 and report["subset"] is True and report["test_size"] == 96
    assert set(report["accuracy"]) == {"clean", "fgsm", "pgd3", "cw3"}
    assert report["worst_case"] <= min(report["accuracy"].values())
    assert report["eps_text"] == "4/255" and report["seed"] == 0

    rc = main(["eval", str(run), "--attacks", "clean", "--quiet", "--diagnostics", "off",
               "--output", str(tmp_path / "full.json")])
    full = json.loads((tmp_path / "full.json").read_text())
    assert rc == 0 and full["subset"] is False and full["n"] == 96
    assert (tmp_path / "full.md").is_file()


def test_eval_suite_and_strict(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--arch", "resnet_small", "--synthetic-train-size", "160",
                 "--synthetic-test-size", "100", "--synthetic-image-size", "16", "--val-size", "32", "--epochs", "1",
                 "--batch-size", "64", "--val-attack-steps", "0", "--device", "cpu", "--out", str(run),
                 "--quiet"]) == 0
    with pytest.raises(SystemExit):  # a verdict on 32 points says little: --strict does not pass on it
        main(["eval", str(run), "--suite", "aa-fast", "--eps", "2/255", "--diag-n", "32", "--strict", "--quiet"])
    assert "--strict passes only on a gradient-masking verdict of 100+ points" in capsys.readouterr().err
    rc = main(["eval", str(run), "--suite", "aa-fast", "--eps", "2/255", "--diag-n", "100", "--strict", "--quiet"])
    report = json.loads(only_report(run).read_text())
    assert report["suite"] == "aa-fast" and "NOT full AutoAttack" in report["label"]
    assert report["verdict"] in ("ok", "suspicious", "masked") and report["evidence"]
    assert rc == (0 if report["verdict"] == "ok" else 3)
    assert "verdict" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not both"):
        main(["eval", str(run), "--suite", "quick", "--attacks", "pgd5"])


def test_user_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "nothing: no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--method", "no_such_method"])


def test_list_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "eae", "list"], capture_output=True, text=True, check=True).stdout
    for name in ("preact_resnet18", "wide_resnet34_10", "resnet_small", "standard", "fgsm_rs", "pgd", "eae",
                 "fgsm", "cw"):
        assert name in out


def test_data_command_verifies_real_cifar(cifar_dir, capsys):
    assert main(["data", "cifar10", "--data-dir", str(cifar_dir.parent), "--no-download"]) == 0
    assert "verified" in capsys.readouterr().out
