"""A restricted unpickler for CIFAR batch files.

``pickle.load`` runs whatever callables a file names, so a tampered batch file
could execute code on load. CIFAR batches only ever hold dicts, lists, ints,
strings and uint8 numpy arrays, which pickle rebuilds with exactly three
globals: ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
``numpy.dtype`` (and ``_codecs.encode`` for bytes in files written by Python 3 at
protocol 2). Those are admitted, each through a guard (plain, non-object arrays;
latin-1 text); every other global is refused before anything runs.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2 moved the implementation; the old path still pickles as numpy.core
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


class UnsafePickleError(pickle.UnpicklingError):
    """The file names a global that a CIFAR batch never contains."""


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refusing to rebuild array of type {subtype!r}")
    return _np_reconstruct(np.ndarray, shape, dtype)


def _safe_dtype(*args: Any) -> np.dtype:
    dt = np.dtype(*args)
    if dt.hasobject:  # object arrays would unpickle arbitrary Python objects
        raise UnsafePickleError(f"refusing object dtype {dt!r}")
    return dt


def _safe_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # how Python 3 writes bytes at protocol 2 (a copy re-pickled by a user): latin-1 text only
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


_ALLOWED = {
    ("_codecs", "encode"): _safe_encode,
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, *, source: str = "<stream>", **kwargs: Any):
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to load global {module}.{name}; a CIFAR batch "
                "holds only numpy arrays, lists, ints and strings (file tampered with or "
                "not a CIFAR batch)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: persistent ids are not allowed")


def safe_load(path: str | Path) -> Any:
    """Load a CIFAR pickle with the restricted unpickler. Dict keys come back as
    ``str`` whether the file was written by Python 2 (bytes keys) or 3."""
    path = Path(path)
    with path.open("rb") as fh:
        data = fh.read()
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), source=str(path), encoding="bytes").load()
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated or garbage file
        raise pickle.UnpicklingError(f"{path}: not a readable CIFAR batch ({e})") from e
    if isinstance(obj, dict):
        obj = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    return obj
