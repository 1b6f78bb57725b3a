"""Small shared helpers: devices, timing, progress bars, atomic writes."""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def git_commit() -> str:
    """Short commit hash of the checkout this code runs from ("-dirty" when tracked files
    differ from it); $EAE_COMMIT where the code runs from a copy without git history (a
    GPU machine that receives the working tree only); else "unknown"."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                                capture_output=True, text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return os.environ.get("EAE_COMMIT", "unknown")
    return commit + ("-dirty" if changed else "")


def parse_device(name: str) -> torch.device | None:
    """The device ``name`` names (None for auto), refused unless a CPU or a CUDA GPU;
    whether it is present is ``resolve_device``'s question."""
    if name == "auto":
        return None
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise _device_error(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):  # meta, mps, xpu...: eae trains and attacks on CPUs and CUDA GPUs
        raise _device_error(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return dev


def resolve_device(name: str = "auto") -> torch.device:
    dev = parse_device(name)
    if dev is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise _device_error(f"device {name!r} requested but CUDA is not available; use @CPU@")
    return dev


def as_device(device) -> torch.device:
    """A device given in Python as a name, a ``torch.device`` or a CUDA index, checked as
    ``--device`` is (ConfigError naming ``device``, never torch's assertion)."""
    if isinstance(device, torch.device):
        device = str(device)
    elif isinstance(device, int) and not isinstance(device, bool):
        device = f"cuda:{device}"
    if not isinstance(device, str):
        raise _device_error(f"device must be a name such as 'cpu' or 'cuda:0', or a torch.device, got "
                            f"{type(device).__name__} {device!r}")
    return resolve_device(device)


def _device_error(message: str):
    from .errors import ConfigError

    return ConfigError(message.replace("@CPU@", "device='cpu'"), cli=message.replace("@CPU@", "--device cpu"),
                       field="device")


def plural(n: int, word: str) -> str:
    """`word` for one, `word`s for any other count ("1 epoch", "2 epochs")."""
    return word if n == 1 else word + "s"


def threads_text() -> str:
    n = torch.get_num_threads()
    return f"{n} {plural(n, 'thread')}"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({threads_text()})"


class Timer:
    """Wall-clock seconds of a region; on CUDA measured with events, so the GPU's
    queued work is counted and nothing synchronises until ``seconds()`` is read."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self) -> "Timer":
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            self._end.record()
        else:
            self._t1 = time.perf_counter()

    def seconds(self) -> float:
        if self.cuda:
            self._end.synchronize()
            return self._start.elapsed_time(self._end) / 1000.0
        return self._t1 - self._t0


class _NoBar:
    def update(self, k: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "it"):
    """A tqdm bar on an interactive terminal, else a no-op."""
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temporary file, fsync, rename, fsync the folder: readers never see a
    partial file, a crash at any moment leaves the old or the new version, and a
    failed write (disk full, permissions) leaves the old one untouched and raises."""
    path = Path(path)
    try:
        # (a name near the file system's 255 bytes leaves no room for the temporary's additions: cut it)
        name = path.name if len(os.fsencode(path.name)) <= 200 else path.name[:40]
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.eae-tmp-")
    except OSError as e:  # the folder takes no new file (read-only, immutable): name it, not a temporary never made
        raise type(e)(e.errno, f"{e.strerror}: no file can be created in the folder", str(path.parent)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno is not None and tmp in (e.filename, e.filename2):  # name the file the user knows, not our temporary
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def loads_json(text: str | bytes, **kwargs: Any) -> Any:
    """``json.loads``, where input nested too deeply for Python's parser is a ValueError
    like any other bad JSON (not a RecursionError, which would read as a bug of ours)."""
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


def torch_seed(n: int) -> int:
    """A seed derived from the run's (seed + k * rank, seed * k + epoch, ...) in the range
    torch accepts, below 2^63, for every seed the config allows; unchanged when it fits."""
    return n % (1 << 63)


_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"


def spelled_plainly(text: str) -> str:
    """A label as it reads: compatibility forms folded (full-width ｐｇｄ２０ is pgd20), Unicode
    dashes as '-', lowercase, Markdown emphasis stripped."""
    import unicodedata

    text = unicodedata.normalize("NFKC", text)
    return "".join("-" if c in _DASHES else c for c in text).casefold().strip().strip("*_").strip()


def row_key(text: str) -> str:
    """What a report row's label says, without separators: 'Worst-Case', 'worst_case' and
    'worstcase' are one row."""
    import re

    return re.sub(r"[\s_.-]+", "", spelled_plainly(text))



def shell_quote(text: str | os.PathLike) -> str:
    """``text`` quoted for a command a message advises: as :func:`shlex.quote` does, except
    where the terminal cannot show a character of it (``PYTHONIOENCODING=ascii``: a path with
    "ü" would print as ``\\xfc``, which pasted names another folder): there, in the shell's
    ``$'...'`` form with the file-system bytes escaped, which pastes as the same path."""
    import shlex

    quoted = shlex.quote(str(text))
    try:
        quoted.encode(getattr(sys.stderr, "encoding", None) or "utf-8")
        return quoted
    except (UnicodeEncodeError, LookupError):
        pass
    raw = os.fsencode(text)
    return "$'" + "".join(chr(b) if 32 <= b < 127 and chr(b) not in "\\'" else f"\\x{b:02x}" for b in raw) + "'"
