"""End to end on real CIFAR-10 (from $EAE_DATA_DIR): the command line, a few
thousand images, the small network. Checks that the pipeline learns real data and
that evaluation reports what it should; not a benchmark."""
import json

import pytest

from eae.cli import main
from helpers import only_report


@pytest.mark.slow
def test_cifar10_subset_train_and_eval(cifar_dir, tmp_path):
    run = tmp_path / "std"
    rc = main(["train", "--data-dir", str(cifar_dir.parent), "--arch", "resnet_small", "--method", "standard",
               "--train-subset", "4000", "--val-size", "500", "--epochs", "2", "--batch-size", "128",
               "--val-attack-steps", "2", "--device", "cpu", "--out", str(run), "--quiet"])
    assert rc == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val_clean"] > 0.25  # chance: 0.10
    rc = main(["eval", str(run), "--data-dir", str(cifar_dir.parent), "--attacks", "clean,pgd5,cw5",
               "--n", "300", "--diag-n", "100", "--quiet"])
    assert rc == 0
    report = json.loads(only_report(run).read_text())
    assert report["test_size"] == 10000 and report["subset"]
    assert report["accuracy"]["clean"] > 0.25
    # a standard-trained net is not robust at 8/255
    assert report["accuracy"]["pgd5"] < report["accuracy"]["clean"] / 2
    assert report["verdict"] in ("ok", "suspicious", "masked") and report["diagnostics"]["n"] == 100


@pytest.mark.slow
def test_demo_pipeline_runs(cifar_dir, tmp_path):
    """The README's demo, shrunk: every method, side-by-side table."""
    from eae.demo import run_demo

    table = run_demo(out=str(tmp_path / "demo"), data_dir=str(cifar_dir.parent), device="cpu", quiet=True,
                     train_subset=600, epochs=1, n_test=100)
    assert [r["method"] for r in table] == ["standard", "fgsm_rs", "eae", "eae_paper"]
    for r in table:
        assert 0 <= r["cw20"] <= r["clean"] <= 1 and r["train_seconds"] > 0
    assert (tmp_path / "demo" / "demo.md").is_file()
