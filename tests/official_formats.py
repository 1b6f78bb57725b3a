"""Small files in the official formats of CIFAR-100 (pickles), SVHN (MATLAB v5 .mat) and
Tiny-ImageNet (the release's folder layout with JPEGs and val_annotations.txt), written the
way the originals are, for the real loading code to read."""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np


class Py2Pickler(pickle._Pickler):
    """Protocol 2 with bytes as Python 2 'str' (SHORT_BINSTRING / BINSTRING), as Python 2's
    cPickle wrote the official CIFAR files (Python 3 would write ``_codecs.encode`` calls)."""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    import io

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """``root/cifar-100-python`` with train, test and meta: Python-2-style pickles (bytes keys)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = np.arange(n) % 100
        d = {b"filenames": [f"img{i}.png".encode() for i in range(n)], b"batch_label": name.encode(),
             b"fine_labels": [int(v) for v in fine], b"coarse_labels": [int(v) // 5 for v in fine],
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(py2_pickle(d))
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(py2_pickle(meta))
    return folder


def svhn_arrays(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X (32, 32, 3, n) uint8 and y (n, 1) float64 in 1..10, as in the official files."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), (np.arange(n) % 10 + 1).astype(np.float64)[:, None]


def write_svhn(root: Path, n_train: int = 60, n_test: int = 30, n_extra: int = 0, compress: bool = True) -> Path:
    from scipy.io import savemat

    folder = Path(root) / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", n_train, 0), ("test", n_test, 1), ("extra", n_extra, 2)):
        if n:
            x, y = svhn_arrays(n, seed)
            savemat(folder / f"{name}_32x32.mat", {"X": x, "y": y}, do_compression=compress)
    return folder


def write_tiny_imagenet(root: Path, wnids=("n01443537", "n01629819", "n01641577"), per_class: int = 4,
                        val_per_class: int = 2, side: int = 64, seed: int = 0) -> Path:
    """``root/tiny-imagenet-200`` in the release's layout (JPEGs, one greyscale per class)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = Path(root) / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in reversed(wnids)))  # the release's order is not sorted

    def image(path: Path, grey: bool) -> None:
        a = rng.integers(0, 256, (side, side) if grey else (side, side, 3), dtype=np.uint8)
        Image.fromarray(a).save(path, "JPEG", quality=95)

    for w in wnids:
        d = folder / "train" / w / "images"
        d.mkdir(parents=True)
        for k in range(per_class):
            image(d / f"{w}_{k}.JPEG", grey=k == 0)
        (folder / "train" / w / f"{w}_boxes.txt").write_text("".join(f"{w}_{k}.JPEG\t0\t0\t63\t63\n"
                                                                     for k in range(per_class)))
    lines = []
    for i in range(val_per_class * len(wnids)):
        w = wnids[i % len(wnids)]
        image(folder / "val" / "images" / f"val_{i}.JPEG", grey=False)
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    return folder
