"""ImageNet-style folders: scanning, decoding, bad input, training on real Tiny-ImageNet images."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eae.config import TrainConfig
from eae.data import DatasetError, load_test_set, num_test_images
from eae.data.imagefolder import FolderLoader, decode, scan_folder
from helpers import only_report

PIL = pytest.importorskip("PIL.Image")
REPO = Path(__file__).resolve().parents[1]
TINY_IMAGENET = REPO.parent / "shared" / "data" / "tiny-imagenet-200-val-subset"


def _jpeg(path: Path, seed: int, size=(48, 40)) -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    PIL.fromarray(arr).save(path, quality=90)


def make_folder(root: Path, classes=("a", "b", "c"), per_class=6) -> Path:
    for split in ("train", "val"):
        for i, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for j in range(per_class if split == "train" else 2):
                _jpeg(d / f"{c}{j}.jpg", seed=100 * i + j + (0 if split == "train" else 50))
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "data")


def test_scan_labels_classes_in_sorted_order(folder):
    idx = scan_folder(folder / "train")
    assert idx.classes == ("a", "b", "c") and len(idx.samples) == 18
    assert {Path(p).parent.name: y for p, y in idx.samples} == {"a": 0, "b": 1, "c": 2}


def test_decode_shapes_and_seeded_augmentation(folder):
    path = str(folder / "train" / "a" / "a0.jpg")
    a = decode(path, 32, train=True, rng=np.random.default_rng(1))
    b = decode(path, 32, train=True, rng=np.random.default_rng(1))
    c = decode(path, 32, train=True, rng=np.random.default_rng(2))
    assert a.shape == (3, 32, 32) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    centre = decode(path, 32, train=False)
    assert np.array_equal(centre, decode(path, 32, train=False))


@pytest.mark.parametrize("case", ["text_file", "empty_file", "empty_class", "renamed_text", "unknown_val_class"])
def test_bad_input_is_named_or_skipped_and_counted(folder, case):
    train = folder / "train"
    if case == "text_file":
        bad = train / "a" / "notes.txt"
        bad.write_text("not an image")
    elif case == "empty_file":
        bad = train / "b" / "zero.jpg"
        bad.write_bytes(b"")
    elif case == "renamed_text":
        bad = train / "b" / "fake.jpg"
        bad.write_text("<html>a web page saved as .jpg</html>")
    elif case == "empty_class":
        bad = train / "d"
        bad.mkdir()
    else:
        bad = folder / "val" / "zzz"
        bad.mkdir()
        _jpeg(bad / "z.jpg", 7)
    target = folder / "val" if case == "unknown_val_class" else train
    classes = ("a", "b", "c") if case == "unknown_val_class" else None
    with pytest.raises(DatasetError, match=str(bad.name)):
        scan_folder(target, classes=classes)
    idx = scan_folder(target, classes=classes, bad_images="skip")
    assert [Path(p).name for p, _ in idx.skipped] == [bad.name]
    assert all(Path(p) != bad for p, _ in idx.samples)


def test_undecodable_image_stops_or_is_substituted(folder, tmp_path):
    good = (folder / "train" / "c" / "c0.jpg").read_bytes()
    broken = folder / "train" / "c" / "truncated.jpg"
    broken.write_bytes(good[: len(good) // 3])  # a valid header: passes the scan, fails to decode
    idx = scan_folder(folder / "train")
    assert any(Path(p) == broken for p, _ in idx.samples)
    for workers in (0, 1):  # from a worker process too: one line, no worker traceback
        with pytest.raises(DatasetError, match="truncated.jpg") as e:
            list(FolderLoader(idx.samples, 64, 16, workers=workers))
        assert "\n" not in str(e.value) and "Traceback" not in str(e.value) and "--bad-images skip" in e.value.cli
        assert "bad_images skip" in str(e.value)  # the API's words
    lenient = FolderLoader(idx.samples, 64, 16, workers=0, bad_images="skip")
    (x, y), = list(lenient)
    assert x.shape == (19, 3, 16, 16) and lenient.skipped == 1


def test_folder_loader_shards_like_the_device_loader(folder):
    idx = scan_folder(folder / "train")
    one = FolderLoader(idx.samples, 7, 16, workers=0, seed=4)
    parts = [FolderLoader(idx.samples, 7, 16, workers=0, seed=4, rank=r, world_size=2) for r in range(2)]
    for (bx, by), *shards in zip(one, *parts):
        assert torch.equal(torch.cat([s[1] for s in shards]), by)
        assert torch.equal(torch.cat([s[0] for s in shards]), bx)  # crops depend on (seed, epoch, index) only
    assert one.epoch == 1
    again = FolderLoader(idx.samples, 7, 16, workers=0, seed=4)
    again.load_state_dict(one.state_dict())
    first_b = next(iter(FolderLoader(idx.samples, 7, 16, workers=0, seed=4)))[1]
    assert not torch.equal(next(iter(again))[1], first_b)  # epoch 2 is another permutation


def test_undecodable_test_image_names_the_file_without_a_training_flag(folder):
    good = (folder / "val" / "a" / "a0.jpg").read_bytes()
    (folder / "val" / "a" / "broken.jpg").write_bytes(good[: len(good) // 3])
    cfg = TrainConfig(dataset="imagefolder", data_dir=str(folder), image_size=24, workers=1)
    with pytest.raises(DatasetError, match="broken.jpg") as e:
        load_test_set(cfg, None)
    assert "\n" not in str(e.value) and "--bad-images" not in str(e.value) and "remove or replace" in str(e.value)


def test_test_set_is_val_folder(folder):
    cfg = TrainConfig(dataset="imagefolder", data_dir=str(folder), image_size=24, workers=0)
    assert num_test_images(cfg) == 6
    x, y = load_test_set(cfg, 4)
    assert x.shape == (4, 3, 24, 24) and x.dtype == torch.uint8 and y.dtype == torch.long


def test_missing_layout_is_a_clear_error(tmp_path):
    from eae.data import training_data

    with pytest.raises(ValueError, match="--data-dir"):
        training_data(TrainConfig(dataset="imagefolder"), "cpu")
    with pytest.raises(DatasetError, match="train"):
        training_data(TrainConfig(dataset="imagefolder", data_dir=str(tmp_path)), "cpu")


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory) -> Path:
    """The 2,000 real Tiny-ImageNet images of ../shared/data, as train/ (8 per class) and
    val/ (2 per class), by symbolic links."""
    if not TINY_IMAGENET.is_dir():
        if os.environ.get("EAE_REQUIRE_DATA") == "1":
            pytest.fail(f"{TINY_IMAGENET} not found")
        pytest.skip("Tiny-ImageNet subset not found")
    root = tmp_path_factory.mktemp("tin")
    for c in sorted(p for p in TINY_IMAGENET.iterdir() if p.is_dir()):
        files = sorted(c.iterdir())
        for split, part in (("train", files[:8]), ("val", files[8:])):
            (root / split / c.name).mkdir(parents=True)
            for f in part:
                (root / split / c.name / f.name).symlink_to(f)
    return root


@pytest.mark.slow
def test_train_and_eval_on_tiny_imagenet(tiny_imagenet, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    common = ["--device", "cpu"]
    subprocess.run([sys.executable, "-m", "eae", "train", *common, "--dataset", "imagefolder", "--data-dir",
                    str(tiny_imagenet), "--image-size", "64", "--arch", "resnet_small", "--method", "fgsm_rs",
                    "--eps", "2/255", "--epochs", "1", "--batch-size", "64", "--train-subset", "256",
                    "--val-size", "64", "--workers", "2", "--val-attack-steps", "2", "--out", str(out), "--quiet"],
                   env=env, check=True, timeout=600)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["images_skipped"] == 0 and np.isfinite(row["train_loss"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dataset"] == "imagefolder" and cfg["image_size"] == 64
    subprocess.run([sys.executable, "-m", "eae", "eval", str(out), *common, "--n", "100", "--attacks", "clean,pgd2",
                    "--diagnostics", "off", "--quiet"], env=env, check=True, timeout=600)
    report = json.loads(only_report(out).read_text())
    assert report["n"] == 100 and report["test_size"] == 400 and report["subset"]


def test_a_report_of_another_test_folder_is_another_evaluation(folder, tmp_path, capsys):
    import shutil

    from eae.cli import main

    run = tmp_path / "run"
    assert main(["train", "--device", "cpu", "--dataset", "imagefolder", "--data-dir", str(folder), "--image-size", "16",
                 "--arch", "resnet_small", "--epochs", "1", "--batch-size", "9", "--val-size", "3", "--workers", "0",
                 "--val-attack-steps", "1", "--out", str(run), "--quiet"]) == 0
    other = tmp_path / "copy"
    shutil.copytree(folder, other)
    report = tmp_path / "r.json"
    common = ["--attacks", "clean", "--diagnostics", "off", "--quiet", "--output", str(report)]
    assert main(["eval", str(run), *common]) == 0
    assert f"on {folder.resolve() / 'val'}, test images sha256:" in json.loads(report.read_text())["evaluation"]["of"]
    capsys.readouterr()
    assert main(["eval", str(run), "--data-dir", str(other), *common]) == 2
    assert "another evaluation" in capsys.readouterr().err


def test_runs_of_the_same_settings_on_other_images_are_other_evaluations(folder, tmp_path, capsys):
    from eae.cli import main

    other = make_folder(tmp_path / "data2", per_class=7)  # the same classes, other training images
    report = tmp_path / "r.json"
    common = ["--attacks", "clean", "--diagnostics", "off", "--quiet", "--output", str(report)]
    for data, out in ((folder, "r1"), (other, "r2")):
        assert main(["train", "--device", "cpu", "--dataset", "imagefolder", "--data-dir", str(data), "--image-size",
                     "16", "--arch", "resnet_small", "--epochs", "1", "--batch-size", "9", "--val-size", "3",
                     "--workers", "0", "--val-attack-steps", "1", "--out", str(tmp_path / out), "--quiet"]) == 0
    assert main(["eval", str(tmp_path / "r1"), *common]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r2"), "--data-dir", str(folder), *common]) == 2
    assert "another evaluation" in capsys.readouterr().err


def test_class_names_that_differ_only_in_unicode_form_are_refused(tmp_path):
    import unicodedata

    for name in (unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")):
        (tmp_path / "train" / name).mkdir(parents=True)
        _jpeg(tmp_path / "train" / name / "a.jpg", seed=1)
    with pytest.raises(DatasetError, match="two Unicode forms"):
        scan_folder(tmp_path / "train")


def test_a_runs_relative_image_folder_missing_from_here_asks_for_data_dir(folder, tmp_path, monkeypatch, capsys):
    from eae.cli import main

    monkeypatch.chdir(folder.parent)
    run = tmp_path / "run"
    assert main(["train", "--device", "cpu", "--dataset", "imagefolder", "--data-dir", folder.name, "--image-size",
                 "16", "--arch", "resnet_small", "--epochs", "1", "--batch-size", "9", "--val-size", "3",
                 "--workers", "0", "--val-attack-steps", "1", "--out", str(run), "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["data_dir"] == str(folder)  # recorded absolute
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the relative path would lead nowhere from here
    assert main(["eval", str(run), "--attacks", "clean", "--diagnostics", "off", "--quiet"]) == 0
    moved = folder.rename(tmp_path / "moved")  # the images moved away: the run says so, and how to go on
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # a usage error, as argparse's own
        main(["eval", str(run), "--attacks", "clean", "--diagnostics", "off", "--quiet"])
    assert e.value.code == 2
    assert "are not found from here" in capsys.readouterr().err
    assert main(["eval", str(run), "--data-dir", str(moved), "--attacks", "clean", "--diagnostics", "off",
                 "--quiet", "--output", str(tmp_path / "moved.json")]) == 0  # another folder: its own report


def test_one_class_is_not_a_classification(tmp_path):
    (tmp_path / "train" / "only").mkdir(parents=True)
    _jpeg(tmp_path / "train" / "only" / "a.jpg", seed=1)
    with pytest.raises(DatasetError, match="at least 2 classes"):
        scan_folder(tmp_path / "train")


def test_resuming_prior_guided_fgsm_on_changed_images_is_refused(folder, tmp_path, capsys):
    from eae.cli import main

    run = tmp_path / "run"
    args = ["train", "--device", "cpu", "--dataset", "imagefolder", "--data-dir", str(folder), "--image-size", "16",
            "--arch", "resnet_small", "--method", "fgsm_pgi", "--epochs", "2", "--batch-size", "9", "--val-size", "3",
            "--workers", "0", "--val-attack-steps", "1", "--out", str(run), "--quiet"]
    assert main([*args, "--stop-after", "1"]) == 0
    _jpeg(folder / "train" / "a" / "new.jpg", seed=99)  # one more training image
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "files added, removed, renamed or rewritten" in err and "Traceback" not in err  # before the method sees it


def test_a_model_trained_elsewhere_is_scored_on_val_alone_and_per_image_size(folder, tmp_path, capsys):
    """--model on an image folder: val/ alone is enough (docs/models.md), and another
    --image-size is another evaluation (other numbers), never a replacement."""
    import shutil

    from eae.cli import main

    run = tmp_path / "run"
    assert main(["train", "--device", "cpu", "--dataset", "imagefolder", "--data-dir", str(folder), "--image-size", "16",
                 "--arch", "resnet_small", "--epochs", "1", "--batch-size", "9", "--val-size", "3", "--workers", "0",
                 "--val-attack-steps", "1", "--out", str(run), "--quiet"]) == 0
    only_val = tmp_path / "only_val"
    shutil.copytree(folder / "val", only_val / "val")
    report = tmp_path / "r.json"
    argv = ["eval", "--model", "resnet_small", "--weights", str(run / "model.safetensors"), "--dataset", "imagefolder",
            "--data-dir", str(only_val), "--attacks", "clean", "--diagnostics", "off", "--quiet", "--output", str(report)]
    assert main([*argv, "--image-size", "16"]) == 0
    before = report.read_bytes()
    capsys.readouterr()
    assert main([*argv, "--image-size", "24"]) == 2
    assert "another evaluation" in capsys.readouterr().err and report.read_bytes() == before
    assert json.loads(before)["image_size"] == 16


def test_a_test_folder_whose_images_changed_is_another_evaluation(folder, tmp_path, capsys):
    from eae.cli import main

    run = tmp_path / "run"
    assert main(["train", "--device", "cpu", "--dataset", "imagefolder", "--data-dir", str(folder), "--image-size", "16",
                 "--arch", "resnet_small", "--epochs", "1", "--batch-size", "9", "--val-size", "3", "--workers", "0",
                 "--val-attack-steps", "1", "--out", str(run), "--quiet"]) == 0
    argv = ["eval", str(run), "--attacks", "clean", "--diagnostics", "off", "--quiet"]
    assert main(argv) == 0
    report = next(run.glob("eval-*.json"))
    before = report.read_bytes()
    _jpeg(folder / "val" / "a" / "a0.jpg", seed=999)  # the same names, other pixels
    capsys.readouterr()
    assert main(argv) == 2
    assert "another evaluation" in capsys.readouterr().err and report.read_bytes() == before
