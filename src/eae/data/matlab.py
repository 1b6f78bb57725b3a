"""A small, safe reader for MATLAB Level 5 MAT-files (v5/v6/v7, the format of SVHN).

Why it exists: the official SVHN files (``train_32x32.mat`` ...) are MAT-files, and eae
should not need scipy at run time to read them. What it supports: the 128-byte header in
either byte order ("IM" little-endian, "MI" big-endian), uncompressed miMATRIX elements and
zlib-compressed ones (miCOMPRESSED, v7), the small data element format, and real numeric
arrays of every numeric class (logical arrays come back as uint8, as scipy.io.loadmat gives
them). A stored type narrower than the class (MATLAB keeps a double array of small integers
as miUINT8) is widened to the class's dtype. Arrays keep their MATLAB shape (order="F").

What it refuses, with a ``DatasetError`` naming the file: v4 and v7.3 (HDF5) files, cell,
struct, object, sparse, char and complex arrays, truncated or corrupt data, data whose
byte count disagrees with its dimensions. It only ever builds numeric arrays, so a hostile
file cannot make it run code, and every byte count is checked against what the file holds
(or, compressed, against what actually comes out of zlib) before anything is allocated.
"""
from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .cifar10 import DatasetError

MI_INT8, MI_UINT32, MI_INT32, MI_MATRIX, MI_COMPRESSED, MI_UTF8 = 1, 6, 5, 14, 15, 16
STORAGE = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
REFUSED = {1: "a cell array", 2: "a struct", 3: "an object", 4: "a char array", 5: "a sparse array"}
CHUNK = 1 << 20


class _Plain:
    """Reads an uncompressed element straight from the file, never past ``end``."""

    def __init__(self, f, end: int, path: Path):
        self.f, self.end, self.path = f, end, path

    def read(self, n: int, exact: bool = True) -> bytearray:
        if not exact:
            n = min(n, self.end - self.f.tell())
        if n > self.end - self.f.tell():
            raise DatasetError(f"{self.path}: truncated or corrupt MAT-file: an element at byte "
                               f"{self.f.tell()} needs {n} bytes, its enclosing element has fewer")
        buf = bytearray(n)
        if self.f.readinto(buf) != n:
            raise DatasetError(f"{self.path}: truncated MAT-file (ends inside an element)")
        return buf


class _Inflate:
    """Decompresses an miCOMPRESSED element on demand, only as far as it is read."""

    def __init__(self, f, size: int, path: Path):
        self.f, self.left, self.path, self.z = f, size, path, zlib.decompressobj()

    def read(self, n: int, exact: bool = True) -> bytearray:
        out = bytearray()
        while len(out) < n:
            data = self.z.unconsumed_tail
            if not data:
                if self.z.eof or not self.left:
                    if not exact:
                        break
                    raise DatasetError(f"{self.path}: truncated or corrupt MAT-file: compressed data ends "
                                       "before the element it holds does")
                data = self.f.read(min(CHUNK, self.left))
                if not data:
                    raise DatasetError(f"{self.path}: truncated MAT-file (ends inside compressed data)")
                self.left -= len(data)
            try:
                out += self.z.decompress(data, min(n - len(out), 16 * CHUNK))
            except zlib.error as e:
                raise DatasetError(f"{self.path}: corrupt compressed data in MAT-file ({e})") from None
        return out


def _header(head: bytes, path: Path) -> str:
    """Checks the 128-byte header; returns the struct byte order of the file."""
    order = {b"IM": "<", b"MI": ">"}.get(head[126:128]) if len(head) == 128 else None
    version = struct.unpack(order + "H", head[124:126])[0] if order else None
    if head.startswith(b"MATLAB 7.3") or version == 0x0200:
        raise DatasetError(f"{path} is an HDF5-based MATLAB v7.3 file; eae reads v5/v7 MAT-files such as "
                           "the official SVHN ones: re-save it in MATLAB with save(..., '-v7')")
    if version != 0x0100:
        if len(head) >= 20 and 0 in head[:4]:
            raise DatasetError(f"{path} looks like a MATLAB v4 MAT-file; eae reads v5/v7 MAT-files: "
                               "re-save it in MATLAB with save(..., '-v7')")
        raise DatasetError(f"{path} is not a MATLAB v5/v7 MAT-file (no valid 128-byte header)")
    return order


def _element(src, order: str, path: Path) -> tuple[int, bytearray]:
    """One data element (type, data), in the normal or the small (<= 4 bytes) format."""
    tag = src.read(8)
    word, n = struct.unpack(order + "II", tag)
    if word >> 16:  # small data element: count in the upper 16 bits, data in the tag itself
        kind, n = word & 0xFFFF, word >> 16
        if n > 4:
            raise DatasetError(f"{path}: corrupt MAT-file (small data element of {n} bytes)")
        return kind, tag[4:4 + n]
    data = src.read(n)
    src.read(-n % 8, exact=False)  # padding to 8 bytes, tolerated if the writer left it out
    return word, data


def _matrix(src, order: str, names, path: Path):
    """Reads one miMATRIX element: returns (name, array or None if not asked for)."""
    kind, n = struct.unpack(order + "II", src.read(8))
    if kind != MI_MATRIX:
        raise DatasetError(f"{path}: corrupt MAT-file (expected a matrix element, found type {kind})")
    if n == 0:
        return None, None  # an empty placeholder with no name
    (fkind, flags), (dkind, dims), (nkind, name) = (_element(src, order, path) for _ in range(3))
    if (fkind, len(flags), dkind) != (MI_UINT32, 8, MI_INT32) or nkind not in (MI_INT8, MI_UTF8) \
            or not dims or len(dims) % 4:
        raise DatasetError(f"{path}: corrupt MAT-file (malformed array header)")
    name = bytes(name).decode("latin-1")
    if name not in names:
        return name, None
    word = struct.unpack(order + "I", flags[:4])[0]
    cls = word & 0xFF
    if cls in REFUSED or cls not in CLASSES or word & 0x800:
        what = REFUSED.get(cls) or ("a complex array" if cls in CLASSES else f"of unknown class {cls}")
        raise DatasetError(f"{path}: variable {name!r} is {what}; eae reads only real numeric arrays")
    shape = tuple(int(d) for d in np.frombuffer(dims, order + "i4"))
    skind, data = _element(src, order, path)
    if skind not in STORAGE or min(shape) < 0:
        raise DatasetError(f"{path}: corrupt MAT-file: variable {name!r} has data type {skind}, dimensions {shape}")
    if len(data) != math.prod(shape) * int(STORAGE[skind][1]):
        raise DatasetError(f"{path}: variable {name!r}: {len(data)} bytes of data (type {skind}) "
                           f"disagree with its dimensions {shape}")
    if isinstance(src, _Inflate) and len(src.read(8, exact=False)) == 8:
        raise DatasetError(f"{path}: variable {name!r}: more compressed data than its dimensions declare")
    arr = np.frombuffer(data, order + STORAGE[skind]).astype(CLASSES[cls], copy=False)
    return name, arr.reshape(shape, order="F")


def read_mat(path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The variables ``names`` of the MAT-file at ``path``, as numpy arrays (see module doc)."""
    path, wanted, found, seen = Path(path), set(names), {}, []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        order = _header(f.read(128), path)
        while wanted - found.keys() and f.tell() < size:
            start = f.tell()
            if size - start < 8:
                raise DatasetError(f"{path}: truncated MAT-file (ends inside an element tag at byte {start})")
            kind, n = struct.unpack(order + "II", f.read(8))
            if n > size - start - 8:
                raise DatasetError(f"{path}: truncated MAT-file: the element at byte {start} declares "
                                   f"{n} bytes, only {size - start - 8} remain")
            if kind in (MI_MATRIX, MI_COMPRESSED):  # anything else at the top level is skipped
                src = _Inflate(f, n, path) if kind == MI_COMPRESSED else _Plain(f, start + 8 + n, path)
                if kind == MI_MATRIX:
                    f.seek(start)  # _matrix reads the tag again, from a reader bounded by the element
                name, arr = _matrix(src, order, wanted - found.keys(), path)
                seen += [name] if name is not None else []
                if arr is not None:
                    found[name] = arr
            f.seek(start + 8 + n)  # compressed data is not padded: the count is exact
    missing = [n for n in names if n not in found]
    if missing:
        raise DatasetError(f"{path}: no variable {', '.join(map(repr, missing))} in this MAT-file "
                           f"(present: {', '.join(map(repr, seen)) or 'none'})")
    return {n: found[n] for n in names}
