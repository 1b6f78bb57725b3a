"""eae.data.matlab.read_mat: MAT-files written by scipy.io.savemat must read back exactly
as scipy.io.loadmat reads them; hand-crafted files cover what savemat never writes (the
big-endian "MI" order, MATLAB's narrowed storage types) and hostile or broken input, which
must always end in a DatasetError that names the file and the problem."""
from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from eae.data.cifar10 import DatasetError
from eae.data.matlab import read_mat

sio = pytest.importorskip("scipy.io")

MI_INT8, MI_UINT8, MI_INT16, MI_INT32, MI_UINT32, MI_DOUBLE, MI_MATRIX, MI_COMPRESSED = 1, 2, 3, 5, 6, 9, 14, 15
MX_CELL, MX_OBJECT, MX_DOUBLE, MX_UINT8 = 1, 3, 6, 9


# --- hand-crafted MAT-files ----------------------------------------------------------
def header(order="<", text=b"MATLAB 5.0 MAT-file, written by test_matlab.py", version=0x0100):
    return text.ljust(116, b" ") + bytes(8) + struct.pack(order + "H", version) + (b"IM" if order == "<" else b"MI")


def element(order, kind, data, small=False):
    if small:  # small data element: count in the upper 16 bits of the first word
        assert len(data) <= 4
        return struct.pack(order + "I", len(data) << 16 | kind) + data.ljust(4, b"\0")
    return struct.pack(order + "II", kind, len(data)) + data + bytes(-len(data) % 8)


def matrix(order, name, cls, dims, storage, data, flags=0, small_name=True):
    body = (element(order, MI_UINT32, struct.pack(order + "II", cls | flags << 8, 0))
            + element(order, MI_INT32, struct.pack(order + f"{len(dims)}i", *dims))
            + element(order, MI_INT8, name.encode(), small=small_name and len(name) <= 4)
            + element(order, storage, data))
    return element(order, MI_MATRIX, body)


def compressed(order, matrix_bytes):
    packed = zlib.compress(matrix_bytes)
    return struct.pack(order + "II", MI_COMPRESSED, len(packed)) + packed


def write(tmp_path, data, name="t.mat"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refused(path, names, *words):
    with pytest.raises(DatasetError) as e:
        read_mat(path, names)
    msg = str(e.value)
    assert path.name in msg
    for w in words:
        assert w in msg, msg
    return msg


# --- files written by scipy ----------------------------------------------------------
def saved_vars():
    rng = np.random.default_rng(0)
    out = {"X": rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8),
           "y": rng.integers(1, 11, (5, 1)).astype(np.float64),
           "f32": rng.standard_normal((3, 4)).astype(np.float32),
           "scalar": np.array([[2.5]]), "empty": np.zeros((0, 3)),
           "logical": np.array([[True, False, True]])}
    for t in ("int8", "int16", "uint16", "int32", "uint32", "int64", "uint64"):
        info = np.iinfo(t)
        out[t] = np.array([[info.min, 0, info.max], [1, 2, 3]], dtype=t)
    return out


@pytest.mark.parametrize("compress", [False, True])
def test_reads_what_scipy_writes_exactly_as_loadmat(tmp_path, compress):
    saved = saved_vars()
    path = tmp_path / "svhn_like.mat"
    sio.savemat(path, {**saved, "a_cell": np.array([1, "a"], dtype=object)}, do_compression=compress)
    got = read_mat(path, tuple(saved))
    ref = sio.loadmat(path)
    assert set(got) == set(saved)
    for name, want in saved.items():
        arr = got[name]
        assert arr.dtype == ref[name].dtype and arr.shape == ref[name].shape, name
        np.testing.assert_array_equal(arr, ref[name])
        np.testing.assert_array_equal(arr, want.astype(np.uint8) if name == "logical" else want)
        assert arr.flags.writeable
    assert got["X"].shape == (32, 32, 3, 5) and got["X"].dtype == np.uint8
    assert got["y"].shape == (5, 1) and got["y"].dtype == np.float64


def test_one_name_only_and_first_of_duplicate_names(tmp_path):
    path = tmp_path / "a.mat"
    sio.savemat(path, {"X": np.arange(6, dtype=np.uint8).reshape(2, 3), "y": np.ones((2, 1))})
    got = read_mat(str(path), ("y",))
    assert list(got) == ["y"] and got["y"].shape == (2, 1)
    assert read_mat(path, ()) == {}


# --- hand-crafted layouts ------------------------------------------------------------
def test_small_element_name_and_narrowed_storage(tmp_path):
    # MATLAB stores a double array of small integers as miUINT8 with a 1-char name inline
    m = matrix("<", "y", MX_DOUBLE, (5, 1), MI_UINT8, bytes([1, 10, 3, 7, 2]))
    assert struct.unpack("<I", m[40:44])[0] == (1 << 16 | MI_INT8)  # the name tag is small
    path = write(tmp_path, header() + m + compressed("<", matrix("<", "Xs", MX_UINT8, (1, 1), MI_UINT8, b"\x07")))
    got = read_mat(path, ("y", "Xs"))
    assert got["y"].dtype == np.float64 and got["y"].shape == (5, 1)
    np.testing.assert_array_equal(got["y"][:, 0], [1, 10, 3, 7, 2])
    assert got["Xs"].dtype == np.uint8 and got["Xs"].shape == (1, 1) and got["Xs"][0, 0] == 7
    ref = sio.loadmat(path)
    np.testing.assert_array_equal(got["y"], ref["y"])


@pytest.mark.parametrize("compress", [False, True])
def test_big_endian_file(tmp_path, compress):
    values = (np.arange(6).reshape((2, 3), order="F") - 3).astype(">i2")
    a = matrix(">", "a_long_name", 10, (2, 3), MI_INT16, values.tobytes(order="F"))
    b = matrix(">", "d", MX_DOUBLE, (1, 2), MI_DOUBLE, np.array([1.5, -2.0], ">f8").tobytes())
    body = b"".join(compressed(">", m) if compress else m for m in (a, b))
    path = write(tmp_path, header(">") + body)
    got = read_mat(path, ("a_long_name", "d"))
    assert got["a_long_name"].dtype == np.dtype(np.int16) and got["a_long_name"].dtype.isnative
    np.testing.assert_array_equal(got["a_long_name"], values)
    np.testing.assert_array_equal(got["d"], [[1.5, -2.0]])
    ref = sio.loadmat(path)
    np.testing.assert_array_equal(got["a_long_name"], ref["a_long_name"])
    np.testing.assert_array_equal(got["d"], ref["d"])


# --- files eae does not read ---------------------------------------------------------
def test_v73_hdf5_file_refused(tmp_path):
    head = header(text=b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan 1 HDF5 schema 1.00 .",
                  version=0x0200)
    path = write(tmp_path, head + b"\x89HDF\r\n\x1a\n" + bytes(64), "train_32x32.mat")
    refused(path, ("X",), "v7.3", "HDF5", "-v7")
    # the version word (0x0200) alone also marks v7.3
    refused(write(tmp_path, header(version=0x0200) + bytes(64)), ("X",), "v7.3", "HDF5", "-v7")


def test_v4_file_refused(tmp_path):
    path = tmp_path / "old.mat"
    sio.savemat(path, {"X": np.ones((3, 3))}, format="4")
    refused(path, ("X",), "v4")


@pytest.mark.parametrize("data", [b"", b"hello", b"x" * 300, header()[:-2] + b"XX", header(version=0x0300)])
def test_not_a_mat_file(tmp_path, data):
    refused(write(tmp_path, data), ("X",), "not a MATLAB")


@pytest.mark.parametrize("cls, words", [(MX_CELL, "cell"), (MX_OBJECT, "object"), (4, "char"), (5, "sparse"),
                                        (2, "struct"), (17, "unknown class")])
def test_non_numeric_class_refused_by_name(tmp_path, cls, words):
    path = write(tmp_path, header() + matrix("<", "c", cls, (1, 1), MI_UINT8, b"\x01"))
    refused(path, ("c",), "'c'", words)


def test_complex_refused_by_name(tmp_path):
    m = matrix("<", "z", MX_DOUBLE, (1, 1), MI_DOUBLE, struct.pack("<d", 1.0), flags=0x08)
    refused(write(tmp_path, header() + m), ("z",), "'z'", "complex")


@pytest.mark.parametrize("value, word", [(np.array([1, "a"], dtype=object), "cell"), ({"f": 1}, "struct"),
                                         ("text", "char"), (np.array([[1 + 2j]]), "complex")])
def test_refused_kinds_written_by_scipy(tmp_path, value, word):
    path = tmp_path / "k.mat"
    sio.savemat(path, {"v": value, "ok": np.ones((1, 2))}, do_compression=True)
    refused(path, ("v",), "'v'", word)
    np.testing.assert_array_equal(read_mat(path, ("ok",))["ok"], [[1, 1]])  # skipped, not refused


def test_sparse_written_by_scipy_refused(tmp_path):
    sparse = pytest.importorskip("scipy.sparse")
    path = tmp_path / "s.mat"
    sio.savemat(path, {"s": sparse.eye(3, format="csc")})
    refused(path, ("s",), "'s'", "sparse")


def flags_elem(cls=MX_UINT8):
    return element("<", MI_UINT32, struct.pack("<II", cls, 0))


@pytest.mark.parametrize("body", [
    flags_elem() + element("<", MI_INT32, struct.pack("<2i", -2, -3)) + element("<", MI_INT8, b"X", True)
    + element("<", MI_UINT8, bytes(6)),  # negative dims whose product matches the data
    flags_elem() + element("<", MI_INT32, b"\1\0\0") + element("<", MI_INT8, b"X", True),  # 3-byte dims
    element("<", MI_UINT32, struct.pack("<I", MX_UINT8)) + element("<", MI_INT32, struct.pack("<2i", 1, 1))
    + element("<", MI_INT8, b"X", True),  # 4-byte array flags
    flags_elem() + element("<", MI_INT32, struct.pack("<2i", 1, 1)) + element("<", MI_DOUBLE, b"X" * 8),  # name type
    flags_elem() + element("<", MI_INT32, struct.pack("<2i", 1, 1)) + element("<", MI_INT8, b"X", True)
    + element("<", 99, b"\1"),  # unknown storage type
    flags_elem() + struct.pack("<I", 5 << 16 | MI_INT32) + bytes(4),  # small element claiming 5 bytes
], ids=["negative-dims", "3-byte-dims", "short-flags", "name-type", "storage-type", "small-5-bytes"])
@pytest.mark.parametrize("compress", [False, True])
def test_malformed_array_headers(tmp_path, body, compress):
    m = element("<", MI_MATRIX, body)
    refused(write(tmp_path, header() + (compressed("<", m) if compress else m)), ("X",), "MAT-file")


def test_compressed_element_holding_no_matrix(tmp_path):
    refused(write(tmp_path, header() + compressed("<", element("<", MI_DOUBLE, bytes(8)))), ("X",), "matrix element")


def test_missing_name_lists_present_ones(tmp_path):
    path = tmp_path / "m.mat"
    sio.savemat(path, {"X": np.ones((2, 2)), "labels": np.ones((2, 1))}, do_compression=True)
    msg = refused(path, ("X", "y"), "'y'", "'X'", "'labels'", "present")
    assert "'X'," not in msg.split("present")[0]  # only y is reported missing


# --- broken and hostile files --------------------------------------------------------
def small_file(compress):
    buf = io.BytesIO()
    sio.savemat(buf, {"X": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "y": np.array([[1.0], [10.0]]),
                      "a_longer_name": np.arange(5, dtype=np.int32)}, do_compression=compress)
    return buf.getvalue()


@pytest.mark.parametrize("compress", [False, True])
def test_every_truncation_raises_dataset_error(tmp_path, compress):
    data = small_file(compress)
    names = ("X", "y", "a_longer_name")
    assert set(read_mat(write(tmp_path, data), names)) == set(names)
    for cut in range(len(data)):
        with pytest.raises(DatasetError) as e:
            read_mat(write(tmp_path, data[:cut]), names)
        assert "t.mat" in str(e.value)


def test_corrupt_zlib_data(tmp_path):
    bad = struct.pack("<II", MI_COMPRESSED, 16) + b"\xff" * 16
    refused(write(tmp_path, header() + bad), ("X",), "corrupt")
    data = bytearray(small_file(True))
    start = 128 + 8 + 10  # inside the first variable's deflate stream
    for pos in (start, start + 5, start + 20):
        broken = data.copy()
        broken[pos] ^= 0x55
        with pytest.raises(DatasetError):
            read_mat(write(tmp_path, bytes(broken)), ("X", "y", "a_longer_name"))


def test_skipped_compressed_variable_is_only_partly_decompressed(tmp_path):
    rng = np.random.default_rng(1)
    big = matrix("<", "big", MX_UINT8, (4000, 1), MI_UINT8, rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    bad = bytearray(compressed("<", big))
    bad[-6] ^= 0xFF  # corrupt the end of the stream: only a full decompression sees it
    good = compressed("<", matrix("<", "y", MX_DOUBLE, (1, 1), MI_DOUBLE, struct.pack("<d", 3.0)))
    path = write(tmp_path, header() + bytes(bad) + good)
    assert read_mat(path, ("y",))["y"][0, 0] == 3.0
    refused(path, ("big",), "corrupt")


@pytest.mark.parametrize("compress", [False, True])
def test_dims_disagree_with_data(tmp_path, compress):
    m = matrix("<", "X", MX_UINT8, (2, 3), MI_UINT8, bytes(5))
    refused(write(tmp_path, header() + (compressed("<", m) if compress else m)), ("X",), "'X'", "(2, 3)", "disagree")
    m = matrix("<", "y", MX_DOUBLE, (2, 1), MI_DOUBLE, bytes(24))
    refused(write(tmp_path, header() + (compressed("<", m) if compress else m)), ("y",), "'y'", "disagree")


def test_more_compressed_output_than_declared(tmp_path):
    m = matrix("<", "X", MX_UINT8, (2, 2), MI_UINT8, bytes(4))
    refused(write(tmp_path, header() + compressed("<", m + bytes(64))), ("X",), "more compressed data")


def test_declared_byte_counts_beyond_the_file(tmp_path):
    top = struct.pack("<II", MI_MATRIX, 2**31) + bytes(64)
    refused(write(tmp_path, header() + top), ("X",), "truncated", str(2**31))
    # an inner count larger than its element, uncompressed and compressed (dims agree with it)
    huge = 2**30
    inner = (flags_elem() + element("<", MI_INT32, struct.pack("<ii", huge, 1)) + element("<", MI_INT8, b"X", small=True) + struct.pack("<II", MI_UINT8, huge) + bytes(64))
    m = struct.pack("<II", MI_MATRIX, len(inner)) + inner
    tracemalloc.start()
    try:
        refused(write(tmp_path, header() + m), ("X",), "truncated")
        refused(write(tmp_path, header() + compressed("<", m)), ("X",), "truncated")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # nothing near the 2 GiB the file claims was allocated
