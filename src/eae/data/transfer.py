"""CIFAR-10 in few, small, lossless parts: for machines reached only by copying a working
tree of limited size (a remote GPU that receives at most 64 MiB a command).

``pack`` writes each batch as one lossless WebP image (a 100 x 100 grid of the 32 x 32
images: 4.47 bits per pixel value against 8 raw, so the 176 MiB of pixels fit in two
parts of about 50 MiB) plus its labels, grouped into as few parts as fit the size
limit. ``unpack`` decodes the batches of the parts it is given, verifies each against
the published SHA-256 of its pixels and labels before writing it, and, once all six are
there, verifies the whole dataset the way every load does. Parts may arrive in separate
commands; nothing unverified is ever written.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np

from .cifar10 import (LABEL_SHA256, META_FILE, PIXEL_SHA256, TEST_FILE, TRAIN_FILES, DatasetError, _sha256,
                      _write_batch, load_cifar10, locate, read_batch)

FORMAT = "eae-cifar10-transfer/1"
BATCHES = (*TRAIN_FILES, TEST_FILE)
GRID = 100  # 100 x 100 images of 32 x 32 per batch image
MEMBER_LIMIT = 40 << 20  # no member of a genuine part comes near this


def _pillow():
    try:
        from PIL import Image, features
    except ImportError as e:
        raise DatasetError("packing or unpacking CIFAR-10 needs Pillow: pip install pillow") from e
    if not features.check("webp"):
        raise DatasetError("this Pillow has no WebP support; install a Pillow wheel from PyPI")
    return Image


def to_grid(data: np.ndarray) -> np.ndarray:
    """(10000, 3072) CIFAR rows -> one (3200, 3200, 3) RGB image, tile (i, j) = image 100 i + j."""
    x = data.reshape(GRID, GRID, 3, 32, 32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 4, 2).reshape(GRID * 32, GRID * 32, 3))


def from_grid(img: np.ndarray) -> np.ndarray:
    x = img.reshape(GRID, 32, GRID, 32, 3).transpose(0, 2, 4, 1, 3)
    return np.ascontiguousarray(x.reshape(GRID * GRID, 3072))


def encode_batch(data: np.ndarray, effort: int = 4) -> bytes:
    """Lossless WebP of a batch (``effort``: WebP's method, 0 fast .. 6 smallest)."""
    buf = io.BytesIO()
    _pillow().fromarray(to_grid(data)).save(buf, "WEBP", lossless=True, quality=50, method=effort)
    return buf.getvalue()


def decode_batch(webp: bytes) -> np.ndarray:
    img = np.asarray(_pillow().open(io.BytesIO(webp)).convert("RGB"))
    if img.shape != (GRID * 32, GRID * 32, 3):
        raise DatasetError(f"a packed batch image has shape {img.shape}, expected (3200, 3200, 3)")
    return from_grid(img)


def pack(data_dir: str | os.PathLike | None, out: str | os.PathLike, *, max_mib: float = 60.0,
         effort: int = 4, log=print) -> list[Path]:
    """Write the parts into ``out`` (a new or empty folder); return their paths."""
    src = locate(data_dir)
    if src is None:
        raise DatasetError(f"no CIFAR-10 (cifar-10-batches-py) found in {data_dir or 'the default places'}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: pack writes its parts into a new or empty folder")
    members = {META_FILE: (src / META_FILE).read_bytes()}
    for name in BATCHES:
        data, labels = read_batch(src / name)
        members[f"{name}.webp"] = encode_batch(data, effort)
        members[f"{name}.labels"] = labels.astype(np.uint8).tobytes()
        log(f"packed {name}: {len(members[f'{name}.webp']) / 2**20:.1f} MiB")
    groups = _group(members, int(max_mib * 2**20))
    out.mkdir(parents=True, exist_ok=True)
    paths = [_write_part(out, i + 1, len(groups), g) for i, g in enumerate(groups)]
    return paths


def _group(members: dict[str, bytes], limit: int) -> list[dict[str, bytes]]:
    """Consecutive members into as few parts under ``limit`` bytes as fit (a batch's image and
    labels stay together)."""
    groups: list[dict[str, bytes]] = [{}]
    for key in [META_FILE] + [n for n in BATCHES]:
        items = {key: members[key]} if key == META_FILE else {f"{key}.webp": members[f"{key}.webp"],
                                                               f"{key}.labels": members[f"{key}.labels"]}
        size = sum(map(len, items.values())) + 4096
        if sum(map(len, groups[-1].values())) + size > limit and groups[-1]:
            groups.append({})
        if size > limit:
            raise DatasetError(f"--max-mib {limit / 2**20:g} is smaller than one packed batch ({size / 2**20:.1f} MiB)")
        groups[-1].update(items)
    return groups


def _write_part(out: Path, index: int, total: int, members: dict[str, bytes]) -> Path:
    manifest = {"format": FORMAT, "part": index, "parts": total,
                "members": {k: _sha256(v) for k, v in members.items()}}
    path = out / f"cifar10-part{index}of{total}.tar"
    with tarfile.open(path, "w") as tar:
        for name, blob in [("manifest.json", json.dumps(manifest).encode()), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def _read_part(path: Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest and members of a part, each member checked against the manifest.
    Nothing is extracted to disk: only the expected names, as regular files, are read."""
    allowed = {"manifest.json", META_FILE} | {f"{b}.{e}" for b in BATCHES for e in ("webp", "labels")}
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar.getmembers():
                if m.name not in allowed or not m.isfile() or m.size > MEMBER_LIMIT:
                    raise DatasetError(f"{path}: unexpected member {m.name!r}: not a CIFAR-10 transfer part")
                blobs[m.name] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError) as e:
        raise DatasetError(f"{path}: cannot read the part ({e})") from e
    manifest = json.loads(blobs.pop("manifest.json", b"{}"))
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a CIFAR-10 transfer part (format {manifest.get('format')!r})")
    for name, digest in manifest["members"].items():
        if _sha256(blobs.get(name, b"")) != digest:
            raise DatasetError(f"{path}: {name} is damaged (SHA-256 mismatch); copy the part again")
    return manifest, blobs


def unpack(parts: list[str | os.PathLike], to: str | os.PathLike, log=print) -> bool:
    """Write the verified batches of ``parts`` into ``to``/cifar-10-batches-py; return
    True once the folder holds the whole dataset, verified."""
    dest = Path(to) / "cifar-10-batches-py"
    dest.mkdir(parents=True, exist_ok=True)
    for part in map(Path, parts):
        manifest, blobs = _read_part(part)
        if META_FILE in blobs and not (dest / META_FILE).exists():
            (dest / META_FILE).write_bytes(blobs[META_FILE])
        for name in BATCHES:
            if f"{name}.webp" in blobs:
                _unpack_batch(name, blobs, dest)
        log(f"unpacked part {manifest['part']} of {manifest['parts']} ({part.name})")
    missing = [n for n in (*BATCHES, META_FILE) if not (dest / n).is_file()]
    if missing:
        log(f"{dest}: still missing {', '.join(missing)}: unpack the other part(s)")
        return False
    load_cifar10(dest)  # the same verification as every load: counts, hashes, classes
    log(f"{dest}: complete and verified (50,000 train / 10,000 test; SHA-256 of pixels and labels match)")
    return True


def _unpack_batch(name: str, blobs: dict[str, bytes], dest: Path) -> None:
    data = decode_batch(blobs[f"{name}.webp"])
    labels = np.frombuffer(blobs[f"{name}.labels"], dtype=np.uint8).astype(np.int64)
    if _sha256(data.tobytes()) != PIXEL_SHA256[name] or _sha256(labels.astype(np.uint8).tobytes()) != LABEL_SHA256[name]:
        raise DatasetError(f"{name}: decoded pixels or labels do not match the published SHA-256 (not lossless?)")
    target = dest / name
    if target.exists():
        try:
            have, have_labels = read_batch(target)
            if _sha256(have.tobytes()) == PIXEL_SHA256[name] and np.array_equal(have_labels, labels):
                return  # already there and correct
        except DatasetError:
            pass
        raise FileExistsError(f"{target} exists and is not the verified batch: move it away first")
    tmp = dest / f".{name}.tmp"
    _write_batch(tmp, _batch_label(name), labels, data)
    os.replace(tmp, target)


def _batch_label(name: str) -> str:
    return "testing batch 1 of 1" if name == TEST_FILE else f"training batch {name[-1]} of 5"
