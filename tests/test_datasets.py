"""CIFAR-100, SVHN and Tiny-ImageNet: the real loading code on small files written in each
official format (pickles, MATLAB v5 .mat, the release's folder and annotation file),
including corrupt, truncated, tampered and mislabelled ones; the published-checksum rule
and its opt-out; fetching; the eps warm-up of the SVHN recipe."""
from __future__ import annotations

import io
import json
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import eae
from eae.cli import main
from eae.config import TrainConfig
from eae.data import DataSource, DeviceLoader, dataset_identity, official_arrays, read_splits
from eae.data import cifar100, official, svhn, tiny_imagenet
from eae.data.cifar10 import DatasetError
from eae.errors import ConfigError

from official_formats import py2_pickle, svhn_arrays, write_cifar100, write_svhn, write_tiny_imagenet

pytest.importorskip("scipy")  # writes the .mat files (a test dependency; eae reads them without it)


def src(name: str, root: Path, **kw) -> DataSource:
    return DataSource(dataset=name, data_dir=str(root), workers=0, **kw)


def published(monkeypatch, module, folder: Path) -> None:
    """Make the fixture's files the 'published' ones (what an official copy is)."""
    sums = {n: official.md5_of(folder / n) for n in module.FILE_MD5 if (folder / n).is_file()}
    monkeypatch.setattr(module, "FILE_MD5", {**module.FILE_MD5, **sums})


# --------------------------------------------------------------------------- CIFAR-100
def test_cifar100_fine_and_coarse_labels_pixels_and_names(tmp_path):
    folder = write_cifar100(tmp_path, n_train=200, n_test=100)
    raw = pickle.loads((folder / "train").read_bytes(), encoding="bytes")
    a, (mean, std) = official_arrays(src("cifar100", tmp_path, unverified_data=True))
    assert a.train_x.shape == (200, 3, 32, 32) and a.test_x.shape == (100, 3, 32, 32)
    assert np.array_equal(a.train_x.reshape(200, -1), raw[b"data"])  # R plane, G, B: row-major, unchanged
    assert a.train_y.tolist() == raw[b"fine_labels"] and a.classes[:2] == ("fine0", "fine1") and len(a.classes) == 100
    assert np.allclose(mean, raw[b"data"].reshape(200, 3, -1).mean(axis=(0, 2)) / 255)
    coarse, _ = official_arrays(src("cifar100", tmp_path, unverified_data=True, cifar100_labels="coarse"))
    assert coarse.train_y.tolist() == raw[b"coarse_labels"] and len(coarse.classes) == 20


def test_cifar100_copy_that_is_not_the_published_files_is_refused_unless_asked(tmp_path, monkeypatch):
    folder = write_cifar100(tmp_path)
    with pytest.raises(DatasetError, match=r"cifar-100-python/train: MD5 .* not the published .*unverified_data=True") as e:
        read_splits(src("cifar100", tmp_path), 10)
    assert "--unverified-data" in e.value.cli and isinstance(e.value, eae.EaeError)  # each door its own words
    ident = dataset_identity(src("cifar100", tmp_path, unverified_data=True))
    assert ident["verified"] is False and "train: MD5" in ident["unverified_data"]
    published(monkeypatch, cifar100, folder)
    ident = dataset_identity(src("cifar100", tmp_path))
    assert ident["verified"] is True and "unverified_data" not in ident and ident["num_classes"] == 100


def test_cifar100_tampered_pickle_does_not_run(tmp_path):
    folder = write_cifar100(tmp_path)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "train").write_bytes(pickle.dumps({"data": Evil(), "fine_labels": []}))
    with pytest.raises(DatasetError, match="refusing to load global"):
        official_arrays(src("cifar100", tmp_path, unverified_data=True))
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "labels", "shape", "not a dict"])
def test_cifar100_broken_files_are_named_even_when_unverified_copies_are_allowed(tmp_path, damage):
    folder = write_cifar100(tmp_path)
    path = folder / "test"
    d = pickle.loads(path.read_bytes(), encoding="bytes")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "labels":
        path.write_bytes(py2_pickle({**d, b"fine_labels": [100] * len(d[b"data"])}))
    elif damage == "shape":
        path.write_bytes(py2_pickle({**d, b"data": d[b"data"][:, :100]}))
    else:
        path.write_bytes(py2_pickle([1, 2, 3]))
    with pytest.raises(DatasetError, match=r"cifar-100-python/test"):
        official_arrays(src("cifar100", tmp_path, unverified_data=True))


def test_cifar100_pickled_by_python3_reads_and_codecs_is_guarded(tmp_path):
    folder = write_cifar100(tmp_path, n_train=20, n_test=10)
    for name in ("train", "test", "meta"):  # re-pickled by a user: Python 3, protocol 2 (bytes via _codecs.encode)
        obj = pickle.loads((folder / name).read_bytes(), encoding="bytes")
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    assert b"_codecs" in (folder / "meta").read_bytes()
    a, _ = official_arrays(src("cifar100", tmp_path, unverified_data=True))
    assert a.classes[0] == "fine0" and len(a.train_y) == 20
    evil = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00utf-7\x86R."  # another codec: refused
    (folder / "meta").write_bytes(evil)
    with pytest.raises(DatasetError, match="refusing _codecs.encode"):
        official_arrays(src("cifar100", tmp_path, unverified_data=True))


# --------------------------------------------------------------------------- SVHN
@pytest.mark.parametrize("compress", [True, False])
def test_svhn_layout_labels_and_extra(tmp_path, compress):
    write_svhn(tmp_path, n_train=30, n_test=20, n_extra=10, compress=compress)
    X, y = svhn_arrays(30, seed=0)
    a, _ = official_arrays(src("svhn", tmp_path, unverified_data=True))
    assert a.train_x.shape == (30, 3, 32, 32) and a.test_x.shape == (20, 3, 32, 32)
    n, c, h, w = 7, 2, 5, 11
    assert a.train_x[n, c, h, w] == X[h, w, c, n]  # (32, 32, 3, N) -> (N, 3, 32, 32), as torchvision reads it
    assert a.train_y.tolist() == [int(v) % 10 for v in y[:, 0]] and 0 in a.train_y  # the files' 10 is the digit 0
    assert a.classes == tuple("0123456789")
    both, _ = official_arrays(src("svhn", tmp_path, unverified_data=True, svhn_extra=True))
    assert len(both.train_y) == 40 and np.array_equal(both.train_x[:30], a.train_x)


def test_svhn_refused_unless_asked_verified_when_published(tmp_path, monkeypatch):
    folder = write_svhn(tmp_path)
    with pytest.raises(DatasetError, match=r"svhn/train_32x32.mat: MD5 .*unverified_data=True"):
        official_arrays(src("svhn", tmp_path))
    published(monkeypatch, svhn, folder)
    assert dataset_identity(src("svhn", tmp_path))["verified"] is True


@pytest.mark.parametrize("damage", ["truncated", "label 0", "label 11", "count", "shape", "text"])
def test_svhn_broken_files_are_named(tmp_path, damage):
    from scipy.io import savemat

    folder = write_svhn(tmp_path, n_train=20, n_test=10)
    path = folder / "test_32x32.mat"
    X, y = svhn_arrays(10)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
    elif damage.startswith("label"):
        y[3] = int(damage.split()[1])
        savemat(path, {"X": X, "y": y})
    elif damage == "count":
        savemat(path, {"X": X, "y": y[:9]})
    elif damage == "shape":
        savemat(path, {"X": X[:16], "y": y})
    else:
        path.write_text("not a MAT file at all, just text " * 10)
    with pytest.raises(DatasetError, match="test_32x32.mat"):
        official_arrays(src("svhn", tmp_path, unverified_data=True))


def test_svhn_missing_extra_is_named_not_fetched_into_the_users_folder(tmp_path):
    folder = write_svhn(tmp_path)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(DatasetError, match=r"extra_32x32.mat: download http://ufldl.stanford.edu/housenumbers/extra"):
        official_arrays(src("svhn", tmp_path, unverified_data=True, svhn_extra=True))
    assert sorted(p.name for p in folder.iterdir()) == before


def test_svhn_trains_on_crops_without_flips():
    images = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).reshape(4, 3, 8, 8).to(torch.uint8)
    loader = DeviceLoader(images, torch.arange(4), 4, shuffle=True, augment=True, pad=0, flip=False)
    for _ in range(5):
        x, y = next(iter(loader))
        assert torch.equal((x * 255).round().to(torch.uint8), images[y])  # no pad, no flip: the images themselves
    flipping = DeviceLoader(images, torch.arange(4), 4, shuffle=True, augment=True, pad=0, seed=3)
    assert any(not torch.equal((x * 255).round().to(torch.uint8), images[y])
               for x, y in (next(iter(flipping)) for _ in range(5)))


# --------------------------------------------------------------------------- Tiny-ImageNet
def test_tiny_imagenet_layout_labels_and_greyscale(tmp_path):
    folder = write_tiny_imagenet(tmp_path, per_class=3, val_per_class=2)
    a, _ = official_arrays(src("tiny-imagenet", tmp_path, unverified_data=True))
    assert a.classes == ("n01443537", "n01629819", "n01641577")  # sorted ids, whatever wnids.txt's order
    assert a.train_x.shape == (9, 3, 64, 64) and a.test_x.shape == (6, 3, 64, 64)
    assert a.train_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    lines = (folder / "val" / "val_annotations.txt").read_text().splitlines()
    assert a.test_y.tolist() == [a.classes.index(line.split("\t")[1]) for line in lines]
    grey = a.train_x[0]  # <wnid>_0.JPEG is greyscale: three equal channels
    assert torch.equal(torch.from_numpy(grey[0]), torch.from_numpy(grey[1]))


def test_tiny_imagenet_not_the_release_is_refused_unless_asked(tmp_path, monkeypatch):
    write_tiny_imagenet(tmp_path, per_class=2, val_per_class=1)
    with pytest.raises(DatasetError, match=r"not the Tiny-ImageNet release \(wnids.txt: 3 class ids .*unverified_data=True"):
        official_arrays(src("tiny-imagenet", tmp_path))
    import hashlib

    monkeypatch.setattr(tiny_imagenet, "WNIDS_SHA256",
                        hashlib.sha256("n01443537\nn01629819\nn01641577".encode()).hexdigest())
    monkeypatch.setattr(tiny_imagenet, "TRAIN_PER_CLASS", 2)
    monkeypatch.setattr(tiny_imagenet, "VAL_PER_CLASS", 1)
    assert dataset_identity(src("tiny-imagenet", tmp_path))["verified"] is True


def test_tiny_imagenet_official_class_ids_are_the_shared_subsets():
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "tiny-imagenet-200-val-subset" / "wnids.txt"
    if not shared.is_file():
        pytest.skip("../shared/data/tiny-imagenet-200-val-subset not beside the checkout")
    import hashlib

    wnids = sorted(shared.read_text().split())
    assert len(wnids) == 200
    assert hashlib.sha256("\n".join(wnids).encode()).hexdigest() == tiny_imagenet.WNIDS_SHA256


@pytest.mark.parametrize("damage", ["small image", "corrupt", "unknown class", "missing file", "no annotations",
                                    "empty class"])
def test_tiny_imagenet_broken_folders_are_named(tmp_path, damage):
    from PIL import Image

    folder = write_tiny_imagenet(tmp_path, per_class=2, val_per_class=1)
    val = folder / "val" / "images" / "val_0.JPEG"
    ann = folder / "val" / "val_annotations.txt"
    if damage == "small image":
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(val, "JPEG")
        want = r"val_0.JPEG: 32x32 pixels, Tiny-ImageNet's are 64x64"
    elif damage == "corrupt":
        val.write_bytes(val.read_bytes()[:40])
        want = r"val_0.JPEG: cannot decode"
    elif damage == "unknown class":
        ann.write_text(ann.read_text().replace("n01443537", "n99999999", 1))
        want = r"val_annotations.txt, line 1: .*a class of wnids.txt"
    elif damage == "missing file":
        val.unlink()
        want = r"line 1: .*val_0.JPEG is not there"
    elif damage == "no annotations":
        ann.unlink()
        want = r"missing Tiny-ImageNet file: .*val_annotations.txt"
    else:
        for p in (folder / "train" / "n01629819" / "images").iterdir():
            p.unlink()
        want = r"no training images for class n01629819"
    with pytest.raises(DatasetError, match=want):
        official_arrays(src("tiny-imagenet", tmp_path, unverified_data=True))


# --------------------------------------------------------------------------- where, and fetching
def test_found_as_the_folder_itself_through_eae_data_dir(tmp_path, monkeypatch):
    folder = write_cifar100(tmp_path / "d")
    monkeypatch.setenv("EAE_DATA_DIR", str(folder))  # the dataset's folder itself
    a, _ = official_arrays(DataSource(dataset="cifar100", unverified_data=True))
    assert a.root == folder
    monkeypatch.setenv("EAE_DATA_DIR", str(tmp_path / "nothing"))
    with pytest.raises(DatasetError, match="CIFAR-100 not found"):
        official_arrays(DataSource(dataset="cifar100"), download=False)


def test_fetch_checks_the_archive_and_leaves_nothing_half_made(tmp_path, monkeypatch):
    made = write_cifar100(tmp_path / "src", n_train=20, n_test=10)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("train", "test", "meta"):
            tar.add(made / name, arcname=f"cifar-100-python/{name}")
    archive = buf.getvalue()

    def fake_download(url, dest, md5, log=print):  # the official site, offline
        dest.write_bytes(archive)
        if official.hashlib.md5(archive).hexdigest() != md5:
            raise DatasetError(f"{url}: MD5 mismatch")

    monkeypatch.setattr(official, "download", fake_download)
    root = tmp_path / "cache"
    with pytest.raises(DatasetError, match="MD5 mismatch"):  # not the published archive: nothing kept
        cifar100.locate_cifar100(root)
    assert not root.exists()  # not even the folder made for it
    monkeypatch.setattr(cifar100, "ARCHIVE_MD5", official.hashlib.md5(archive).hexdigest())
    folder = cifar100.locate_cifar100(root)
    assert folder == root / "cifar-100-python" and sorted(p.name for p in folder.iterdir()) == ["meta", "test", "train"]
    assert [p.name for p in root.iterdir()] == ["cifar-100-python"]  # no staging left


def test_fetch_refuses_links_and_paths_out_of_the_tiny_imagenet_archive(tmp_path, monkeypatch):
    import zipfile

    def fake_download(url, dest, md5, log=print):
        with zipfile.ZipFile(dest, "w") as z:
            z.writestr("tiny-imagenet-200/wnids.txt", "n01443537\n")
            z.writestr("tiny-imagenet-200/../../escaped.txt", "x")

    monkeypatch.setattr(official, "download", fake_download)
    with pytest.raises(DatasetError, match="unexpected member"):
        tiny_imagenet.locate_tiny_imagenet(tmp_path / "cache")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- eps warm-up (the SVHN recipe)
def test_eps_warmup_rises_per_step_and_scales_the_step():
    from eae.methods import METHODS

    cfg = TrainConfig(method="fgsm_rs", dataset="synthetic", eps=8 / 255, eps_warmup_epochs=2, epochs=3)
    m = METHODS.get("fgsm_rs")(cfg)
    m.set_eps_scale(0.0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    from eae.methods.fgsm_rs import fgsm_rs_example

    assert torch.equal(fgsm_rs_example(model, x, y, m.threat, m.alpha * m.alpha_scale), x)  # eps 0: the clean batch
    m.set_eps_scale(0.5)
    adv = fgsm_rs_example(model, x, y, m.threat, m.alpha * m.alpha_scale)
    assert (adv - x).abs().max() <= 4 / 255 + 1e-6 and m.eps == pytest.approx(4 / 255)
    with pytest.raises(ConfigError, match="eps_warmup_epochs 4 is longer than training"):
        TrainConfig(method="fgsm_rs", eps_warmup_epochs=4, epochs=3)


def test_eps_warmup_in_a_run_is_recorded_per_epoch(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "run"), dataset="synthetic", arch="resnet_small", device="cpu",
                      synthetic_train_size=128, synthetic_test_size=32, synthetic_image_size=16, val_size=32,
                      batch_size=32, epochs=3, method="n_fgsm", eps_warmup_epochs=2, val_attack_steps=1,
                      precision="fp32")
    from eae import train

    train(cfg, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    eps = [r["train_eps"] for r in rows]  # at each epoch's last step: 3 of 3 steps -> (0 + 2) / 6, 5 / 6, 1
    assert eps == pytest.approx([8 / 255 * 2 / 6, 8 / 255 * 5 / 6, 8 / 255])


# --------------------------------------------------------------------------- the commands
@pytest.mark.parametrize("dataset", ["cifar100", "svhn", "tiny-imagenet"])
def test_train_eval_and_data_commands_on_each_dataset(tmp_path, dataset, capsys):
    write = {"cifar100": write_cifar100, "svhn": write_svhn, "tiny-imagenet": write_tiny_imagenet}[dataset]
    write(tmp_path / "data", **({"per_class": 8, "val_per_class": 4} if dataset == "tiny-imagenet" else {}))
    run = tmp_path / "run"
    common = ["--dataset", dataset, "--data-dir", str(tmp_path / "data"), "--device", "cpu",
              *(["--workers", "0"] if dataset == "tiny-imagenet" else [])]  # (the only one of them that decodes)
    args = ["train", *common, "--arch", "resnet_small", "--method", "n_fgsm", "--epochs", "1", "--batch-size", "16",
            "--val-size", "8", "--val-attack-steps", "1", "--out", str(run), "--quiet"]
    assert main(args) == 2 and not run.exists()  # not the published files: refused, nothing made
    assert "--unverified-data" in capsys.readouterr().err
    assert main(args + ["--unverified-data"]) == 0
    record = json.loads((run / "dataset.json").read_text())
    assert record["dataset"] == dataset and record["verified"] is False and record["unverified_data"]
    assert main(["eval", str(run), "--attacks", "clean,pgd2", "--n", "8", "--diagnostics", "off", "--quiet"]) == 0
    report = json.loads((run / "eval-clean+pgd2-n8-diagoff.json").read_text())
    assert f"on {dataset} (unverified copy: {(tmp_path / 'data').resolve()}" in report["evaluation"]["of"]
    assert report["robustbench"]["dataset"].startswith(f"{dataset} (unverified copy: ")  # names the copy
    assert main(["data", dataset, "--data-dir", str(tmp_path / "data"), "--no-download", "--unverified-data"]) == 0
    assert "NOT verified" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["cifar100", "svhn", "tiny-imagenet"])
def test_bench_smoke_and_the_python_api_on_each_dataset(tmp_path, dataset):
    """`eae bench smoke --dataset D` (its standard entry: 1,000 training images, 2 epochs, quick
    and aa-fast evaluations), then the Python API: train, load, evaluate on the test set."""
    import eae
    from eae.bench.runner import run_bench
    from eae.data import load_test_set

    data = tmp_path / "data"
    if dataset == "cifar100":
        write_cifar100(data, n_train=1250, n_test=120)
    elif dataset == "svhn":
        write_svhn(data, n_train=1250, n_test=120)
    else:
        # 4 classes: aa-fast's targeted APGD needs at least 4
        write_tiny_imagenet(data, wnids=("n01443537", "n01629819", "n01641577", "n01644900"), per_class=310,
                            val_per_class=30)
    res = run_bench("smoke", tmp_path / "bench", device="cpu", data_dir=str(data), dataset=dataset,
                    unverified_data=True, only=["standard"], quiet=True)
    (row,) = res["rows"]
    assert row["method"] == "standard" and 0 <= row["clean"] <= 1
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert bench["base"]["dataset"] == dataset and bench["base"]["unverified_data"] is True
    assert f"here on {dataset}" in (tmp_path / "bench" / "REPORT.md").read_text()

    cfg = eae.TrainConfig(out=str(tmp_path / "api"), dataset=dataset, data_dir=str(data), unverified_data=True,
                          arch="resnet_small", device="cpu", epochs=1, batch_size=64, val_size=32, train_subset=128,
                          val_attack_steps=1, workers=0 if dataset == "tiny-imagenet" else 8)
    eae.train(cfg, quiet=True)
    model = eae.load(tmp_path / "api")
    x, y = load_test_set(cfg, 16)
    result = eae.evaluate(model, x.float() / 255, y, attacks=["clean", "pgd2"], eps=8 / 255)
    assert result.n == 16 and 0 <= result.robust_accuracy <= result.clean_accuracy <= 1


def test_eps_warmup_counts_epoch_equivalents_under_free(tmp_path):
    """Free-AT makes epochs / replays passes: its warm-up ends after the same epochs of data."""
    from eae.training.epoch import _warmup

    assert _warmup(4, 0, 0, 10, 4) == 0 and _warmup(4, 0, 5, 10, 4) == pytest.approx(0.5)
    assert _warmup(4, 1, 0, 10, 4) == 1.0  # the second pass of 4 replays starts at epoch 4
    cfg = TrainConfig(out=str(tmp_path / "run"), dataset="synthetic", arch="resnet_small", device="cpu",
                      synthetic_train_size=96, synthetic_test_size=32, synthetic_image_size=16, val_size=32,
                      batch_size=32, epochs=4, method="free", free_replays=2, eps_warmup_epochs=2,
                      val_attack_steps=1, precision="fp32")
    eae.train(cfg, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # 2 passes of 2 steps; a pass of 2 replays is 2 epochs: its last step starts at epoch 1 of the 2
    assert [r["train_eps"] for r in rows] == pytest.approx([8 / 255 / 2, 8 / 255])


# --------------------------------------------------------------------------- trial 7: hostile copies and doors
def _pickled(folder: Path, name: str, **changes) -> None:
    d = pickle.loads((folder / name).read_bytes(), encoding="bytes")
    d.update({k.encode(): v for k, v in changes.items()})
    (folder / name).write_bytes(py2_pickle(d))


def test_a_failed_fetch_leaves_no_folder_it_made(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(official, "download", offline)
    target = tmp_path / "new dir" / "deep" / "x"
    for dataset in ("cifar100", "svhn", "tiny-imagenet"):
        with pytest.raises(DatasetError, match="could not download"):
            official_arrays(src(dataset, target))
        assert not (tmp_path / "new dir").exists()  # the three folders it made are gone again


@pytest.mark.parametrize("dataset,place", [("cifar100", "cifar-100-python/test"), ("svhn", "svhn/test_32x32.mat"),
                                           ("tiny-imagenet", "tiny-imagenet-200/wnids.txt")])
def test_a_folder_where_a_dataset_file_goes_is_named_as_such(tmp_path, dataset, place):
    {"cifar100": write_cifar100, "svhn": write_svhn, "tiny-imagenet": write_tiny_imagenet}[dataset](tmp_path)
    (tmp_path / place).unlink()
    (tmp_path / place).mkdir()
    with pytest.raises(DatasetError, match="is not a regular file"):
        official_arrays(src(dataset, tmp_path, unverified_data=True), download=False)


def test_not_found_names_where_it_looked_and_what_fetches_it(tmp_path, monkeypatch):
    with pytest.raises(DatasetError) as e:
        official_arrays(src("svhn", tmp_path), download=False)
    assert f"no svhn/train_32x32.mat in {tmp_path} (--data-dir); `eae data svhn` (with the same --data-dir)" in e.value.cli
    monkeypatch.setenv("EAE_DATA_DIR", str(tmp_path / "a file"))
    (tmp_path / "a file").write_text("x")
    with pytest.raises(DatasetError, match=r"\$EAE_DATA_DIR .*a file is a file, not a folder"):
        official_arrays(DataSource(dataset="cifar100", workers=0))
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(DatasetError, match="loop of links"):
        official_arrays(src("cifar100", loop))
    with pytest.raises(DatasetError, match="^data_dir is empty") as e:
        official_arrays(src("cifar100", ""))
    assert e.value.cli.startswith("--data-dir is empty")  # the API's words in str(), the flags' in .cli
    with pytest.raises(ConfigError, match=r"data_dir is blank \(only white space\)"):
        TrainConfig(data_dir=" ")


@pytest.mark.parametrize("labels", [[0.5] * 200, [True] * 200, [float("nan")] * 200])
def test_cifar100_labels_that_are_not_whole_numbers_are_refused(tmp_path, labels, recwarn):
    folder = write_cifar100(tmp_path)
    _pickled(folder, "train", fine_labels=labels)
    with pytest.raises(DatasetError, match="fine_labels' must be 200 whole numbers"):
        official_arrays(src("cifar100", tmp_path, unverified_data=True))
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_control_characters_in_class_names_are_refused(tmp_path):
    folder = write_cifar100(tmp_path)
    _pickled(folder, "meta", fine_label_names=[b"\x1b[2J\x1b[31mred"] + [f"f{i}".encode() for i in range(99)])
    with pytest.raises(DatasetError, match="control characters"):
        official_arrays(src("cifar100", tmp_path, unverified_data=True))
    tiny = write_tiny_imagenet(tmp_path / "t")
    (tiny / "wnids.txt").write_bytes(b"\x00\x01\xff\n")
    with pytest.raises(DatasetError, match="is not a list of class ids"):
        official_arrays(src("tiny-imagenet", tmp_path / "t", unverified_data=True))


def test_one_class_or_an_empty_split_is_refused_at_load(tmp_path):
    write_tiny_imagenet(tmp_path / "one", wnids=("n01443537",))
    with pytest.raises(DatasetError, match="has 1 class; a classifier needs at least 2"):
        official_arrays(src("tiny-imagenet", tmp_path / "one", unverified_data=True))
    write_svhn(tmp_path / "empty", n_test=0)
    (tmp_path / "empty" / "svhn" / "test_32x32.mat").write_bytes(
        (tmp_path / "empty" / "svhn" / "train_32x32.mat").read_bytes())
    from scipy.io import savemat

    savemat(tmp_path / "empty" / "svhn" / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 0), np.uint8),
                                                             "y": np.zeros((0, 1))})
    with pytest.raises(DatasetError, match="the test set is empty"):
        official_arrays(src("svhn", tmp_path / "empty", unverified_data=True))


def test_a_huge_image_is_refused_by_its_size_before_it_is_decoded(tmp_path, recwarn):
    from PIL import Image

    folder = write_tiny_imagenet(tmp_path)
    Image.new("L", (9000, 11000)).save(folder / "val" / "images" / "val_0.JPEG", "PNG")  # 99M pixels: Pillow warns
    with pytest.raises(DatasetError, match="9000x11000 pixels, Tiny-ImageNet's are 64x64"):
        official_arrays(src("tiny-imagenet", tmp_path, unverified_data=True))
    assert not [w for w in recwarn if "DecompressionBomb" in w.category.__name__]


def test_a_resume_on_another_copy_of_the_data_is_refused(tmp_path, capsys):
    write_cifar100(tmp_path / "a")
    write_cifar100(tmp_path / "b", seed=1)  # other pixels: another copy, with other checksums
    run = tmp_path / "run"
    args = ["train", "--dataset", "cifar100", "--unverified-data", "--device", "cpu",
            "--arch", "resnet_small", "--epochs", "2", "--batch-size", "50", "--val-size", "50",
            "--val-attack-steps", "1", "--out", str(run), "--quiet"]
    assert main(args + ["--data-dir", str(tmp_path / "a"), "--stop-after", "1"]) == 0
    before = (run / "dataset.json").read_text()
    assert main(["train", "--out", str(run), "--resume", "--data-dir", str(tmp_path / "b"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "resume it on the data it was trained on (--data-dir)" in err and "Traceback" not in err
    assert (run / "dataset.json").read_text() == before
    assert json.loads((run / "config.json").read_text())["data_dir"] == str(tmp_path / "a")  # recorded absolute


def test_free_with_a_warm_up_and_unverified_reports_say_so(tmp_path, capsys, monkeypatch):
    """An evaluation of a run trained on an unverified copy says so in its printed report,
    its Markdown and its RobustBench entry; coarse CIFAR-100 models have their flag."""
    write_cifar100(tmp_path / "data")
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "cifar100", "--unverified-data", "--data-dir", "data", "--device", "cpu",
                 "--arch", "resnet_small", "--epochs", "1", "--batch-size", "50", "--val-size",
                 "50", "--val-attack-steps", "1", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path / "data")  # elsewhere: the run's data folder is found all the same
    assert main(["eval", str(run), "--attacks", "clean", "--n", "10", "--diagnostics", "off"]) == 0
    out = capsys.readouterr().out
    assert "unverified copy" in out.splitlines()[0]
    report = json.loads((run / "eval-clean-n10-diagoff.json").read_text())
    assert report["robustbench"]["dataset"].startswith("cifar100 (unverified copy")
    assert "unverified copy" in (run / "eval-clean-n10-diagoff.md").read_text().splitlines()[0]


def test_a_bench_resumed_on_another_dataset_names_the_setting(tmp_path):
    from eae.bench.runner import _claim

    ask = {"suite": "smoke", "seeds": 1, "base": {"dataset": "svhn", "arch": "resnet_small"}}
    _claim(tmp_path / "b", ask, resume=False)
    with pytest.raises(ValueError, match=r"other settings \(dataset 'svhn' \(now 'cifar100'\);.*give the same --dataset"):
        _claim(tmp_path / "b", {**ask, "base": {**ask["base"], "dataset": "cifar100"}}, resume=True)


def test_a_coarse_cifar100_model_from_elsewhere_is_evaluated_with_its_flag(tmp_path, capsys):
    from safetensors.torch import save_file

    write_cifar100(tmp_path / "data")
    (tmp_path / "net.py").write_text("import torch.nn as nn\n\n\nclass Net(nn.Module):\n"
                                     "    def __init__(self, num_classes=10):\n        super().__init__()\n"
                                     "        self.f = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))\n\n"
                                     "    def forward(self, x):\n        return self.f(x)\n")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 20))
    save_file({f"f.{k}": v for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    argv = ["eval", "--model", f"{tmp_path / 'net.py'}:Net", "--weights", str(tmp_path / "w.safetensors"),
            "--model-kwargs", '{"num_classes": 20}', "--dataset", "cifar100", "--data-dir", str(tmp_path / "data"),
            "--unverified-data", "--attacks", "clean", "--n", "10", "--diagnostics", "off", "--device", "cpu",
            "--output", str(tmp_path / "r.json"), "--quiet"]
    with pytest.raises(SystemExit) as e:  # a usage error: status 2, one line
        main(argv)
    assert e.value.code == 2 and "--cifar100-labels coarse" in capsys.readouterr().err
    assert main(argv + ["--cifar100-labels", "coarse"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["robustbench"]["dataset"].startswith("cifar100-coarse")


def test_decoding_uses_no_more_workers_than_cores(tmp_path, monkeypatch):
    from eae import system

    seen = []
    real = torch.utils.data.DataLoader

    def counting(*a, **k):
        seen.append(k.get("num_workers"))
        return real(*a, **{**k, "num_workers": 0})

    monkeypatch.setattr(system, "available_cores", lambda: 2)
    monkeypatch.setattr(torch.utils.data, "DataLoader", counting)
    write_tiny_imagenet(tmp_path)
    official_arrays(DataSource(dataset="tiny-imagenet", data_dir=str(tmp_path), workers=8, unverified_data=True))
    assert seen and set(seen) == {2}  # torch warns beyond the cores, and they would only wait for each other
    with pytest.raises(ConfigError, match="val_size=5000 leaves no training images") as e:
        eae.train(TrainConfig(dataset="tiny-imagenet", data_dir=str(tmp_path), unverified_data=True, val_size=5000,
                              workers=0, device="cpu", out=str(tmp_path / "run")), quiet=True)
    assert "give a smaller --val-size" in e.value.cli and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- trial 8
def test_eae_input_adversary_takes_the_base_methods_step_size():
    from eae.methods import METHODS

    from eae.models import create_model

    x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 4
    model = create_model("resnet_small", num_classes=4)
    steps = {}
    for base, field in (("n_fgsm", "nfgsm_alpha"), ("fgsm_rs", "fgsm_alpha")):
        for alpha in (1 / 255, 16 / 255):
            cfg = TrainConfig(method="eae", eae_base=base, dataset="synthetic", **{field: alpha})
            torch.manual_seed(0)
            steps[base, alpha] = METHODS.get("eae")(cfg).base_input(model, x, y)
        assert not torch.equal(steps[base, 1 / 255], steps[base, 16 / 255]), base  # the field is used


@pytest.mark.parametrize("kw,fragment", [
    ({"method": "eae", "epochs": 2, "eae_warmup_epochs": 2}, "the EAE term would never start"),
    ({"method": "standard", "eps_warmup_epochs": 1}, "standard training has no eps"),
    ({"epochs": -1, "eps_warmup_epochs": 0}, "epochs must be >= 1, got -1"),
    ({"dataset": "cifar10", "svhn_extra": True}, "svhn_extra is for dataset svhn, not cifar10"),
    ({"dataset": "svhn", "cifar100_labels": "coarse"}, "cifar100_labels is for dataset cifar100, not svhn"),
    ({"dataset": "cifar10", "unverified_data": True}, "unverified_data is for dataset cifar100 or svhn"),
])
def test_settings_that_would_do_nothing_are_refused(kw, fragment):
    with pytest.raises(ConfigError, match=fragment) as e:
        TrainConfig(**kw)
    assert "longer than training" not in str(e.value) or "eps_warmup" in fragment


def test_the_eae_warm_up_counts_epoch_equivalents_under_free():
    from eae.methods import METHODS

    cfg = TrainConfig(method="eae", eae_base="free", free_replays=4, epochs=8, eae_warmup_epochs=4,
                      dataset="synthetic")
    m = METHODS.get("eae")(cfg)
    assert m.replays == 4 and 0 * m.replays < 4 <= 1 * m.replays  # pass 1 (epochs 4..7) has the term


@pytest.mark.parametrize("text,fragment", [
    ('epochs = "3"\n', 'epochs = \'3\': give a whole number'),
    ("val_size = 64.0\n", "val_size = 64.0: give a whole number"),
    ('[svhn]\nextra = "yes"\n', "svhn_extra = 'yes': give true or false"),
    ("eps_warmup_epochs = 1\n[eps.warmup]\nepochs = 2\n", "eps_warmup_epochs is set twice"),
])
def test_presets_say_what_they_mean(tmp_path, text, fragment):
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        TrainConfig.from_toml(tmp_path / "p.toml")
    assert TrainConfig.from_toml(_preset(tmp_path, 'eps = "8/255"\n')).eps == pytest.approx(8 / 255)  # fractions stay
    with pytest.raises(eae.MissingFile):
        TrainConfig.from_toml(tmp_path / "nope.toml")


def _preset(tmp_path: Path, text: str) -> Path:
    (tmp_path / "ok.toml").write_text(text)
    return tmp_path / "ok.toml"


def test_tiny_imagenet_files_that_are_not_regular_are_named_and_never_block(tmp_path):
    import os

    folder = write_tiny_imagenet(tmp_path)
    os.mkfifo(folder / "train" / "n01443537" / "images" / "zz.JPEG")  # reading it would wait forever
    with pytest.raises(DatasetError, match="zz.JPEG is not a regular file"):
        official_arrays(src("tiny-imagenet", tmp_path, unverified_data=True))
    (folder / "train" / "n01443537" / "images" / "zz.JPEG").unlink()
    (folder / "val" / "val_annotations.txt").rename(tmp_path / "ann.txt")
    (folder / "val" / "val_annotations.txt").mkdir()
    with pytest.raises(DatasetError, match="val_annotations.txt is not a regular file"):
        official_arrays(src("tiny-imagenet", tmp_path, unverified_data=True))
    (folder / "val" / "val_annotations.txt").rmdir()
    (tmp_path / "ann.txt").rename(folder / "val" / "val_annotations.txt")
    (folder / "wnids.txt").write_bytes(b"\xef\xbb\xbf" + (folder / "wnids.txt").read_bytes())  # Notepad's BOM
    assert len(official_arrays(src("tiny-imagenet", tmp_path, unverified_data=True))[0].classes) == 3


def test_a_tiny_imagenet_resume_on_other_pixels_is_refused(tmp_path, capsys):
    write_tiny_imagenet(tmp_path / "a", per_class=6)
    write_tiny_imagenet(tmp_path / "b", per_class=6, seed=1)  # same classes and counts, other images
    run = tmp_path / "run"
    assert main(["train", "--dataset", "tiny-imagenet", "--unverified-data", "--data-dir", str(tmp_path / "a"),
                 "--device", "cpu", "--workers", "0", "--arch", "resnet_small", "--epochs", "2", "--batch-size", "6",
                 "--val-size", "6", "--val-attack-steps", "1", "--out", str(run), "--quiet", "--stop-after", "1"]) == 0
    assert main(["train", "--out", str(run), "--resume", "--data-dir", str(tmp_path / "b"), "--quiet"]) == 2
    assert "pixels and labels SHA-256" in capsys.readouterr().err


def test_a_run_found_through_a_relative_eae_data_dir_records_it_absolute(tmp_path, monkeypatch):
    write_cifar100(tmp_path / "d")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EAE_DATA_DIR", "d")
    cfg = TrainConfig(out=str(tmp_path / "run"), dataset="cifar100", unverified_data=True, arch="resnet_small",
                      device="cpu", epochs=1, batch_size=50, val_size=50, val_attack_steps=1)
    eae.train(cfg, quiet=True)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data_dir"] == str(tmp_path / "d")


def test_a_dataset_folder_that_is_a_link_is_not_fetched_through(tmp_path, monkeypatch):
    monkeypatch.setattr(official, "download", lambda *a, **k: pytest.fail("downloaded"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "svhn").symlink_to(tmp_path / "mine")
    with pytest.raises(DatasetError, match="is a link where SVHN goes; eae does not write through links"):
        official_arrays(src("svhn", tmp_path / "root"))
    monkeypatch.setenv("EAE_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DatasetError) as e:
        official_arrays(DataSource(dataset="svhn", workers=0), download=False)
    assert "(with the same $EAE_DATA_DIR)" in e.value.cli


@pytest.mark.parametrize("call,error", [
    (lambda: eae.build_attack("pgd0", 8 / 255), eae.ConfigError),
    (lambda: eae.build_attack(None, 8 / 255), eae.ConfigError),
    (lambda: eae.create_model("resnet18"), eae.UnknownName),
    (lambda: eae.load(b"run"), eae.ConfigError),
    (lambda: eae.evaluate(torch.nn.Flatten(), torch.rand(2, 3, 4, 4), torch.zeros(2, 1, dtype=torch.long),
                          attacks=["clean"], eps=8 / 255), eae.ConfigError),
    (lambda: eae.evaluate(lambda x: x, torch.rand(2, 3, 4, 4), torch.zeros(2, dtype=torch.long), attacks=["clean"],
                          eps=8 / 255), eae.EaeError),
])
def test_the_python_api_raises_eaes_own_errors(call, error):
    with pytest.raises(error) as e:
        call()
    assert isinstance(e.value, eae.EaeError) and not str(e.value).startswith("'")
