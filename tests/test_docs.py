"""The user-facing docs stay true: README.md and docs/*.md.

Offline, CPU, a few seconds: the README's size, no words about how the project was
made, every ``eae`` command of a ```bash block accepted by the real parser (and, for
``eae train``, resolved into a valid config), every relative link and anchor pointing
at something that exists, the files named in commands present, and the cheap commands
actually run.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from eae import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
IDS = [str(p.relative_to(ROOT)) for p in DOCS]

# Words about how the project was made (work items, who had which machine, notes the user
# does not have). The README and docs say what the tool is and what was measured, on what.
FORBIDDEN = re.compile(r"issue [0-9]|lent to|shared/|session|RESEARCH\.md|earlier round", re.IGNORECASE)
# The same in every other file of the repository (code, scripts, committed results), where
# "session" is also pytest's fixture scope and "shared/" a data path in a recorded command.
FORBIDDEN_ANYWHERE = re.compile(r"\bissues? #?[0-9]|lent to|RESEARCH\.md|earlier round|"
                                r"\b(first|second|third|fourth|earlier|this|next|previous|last|working) session",
                                re.IGNORECASE)

# Tokens that stand for a value the user supplies; a command holding one is not parsed.
PLACEHOLDERS = {"FLAGS", "ENTRIES", "RUN", "DIR", "SUITE"}


def _fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def _bash_lines(path: Path) -> list[str]:
    """Logical lines (continuations joined) of every ```bash block of ``path``."""
    lines = []
    for block in _fenced(path.read_text(), "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line.strip())
    return lines


def _eae_argv(line: str) -> list[str] | None:
    """The arguments given to ``eae`` on a shell line, or None if it runs something else.
    ``torchrun ... -m eae ARGS`` and ``torchrun ... -m -- eae ARGS`` give ARGS."""
    tokens = shlex.split(line, comments=True)
    if not tokens:
        return None
    if tokens[0] == "eae":
        return tokens[1:]
    if tokens[0] == "torchrun" and "-m" in tokens:
        rest = tokens[tokens.index("-m") + 1:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        assert rest[:1] == ["eae"], f"torchrun line does not run eae: {line}"
        return rest[1:]
    return None


def _commands() -> list[tuple[str, str]]:
    out = []
    for path, name in zip(DOCS, IDS):
        for line in _bash_lines(path):
            if _eae_argv(line) is not None:
                out.append((name, line))
    return out


COMMANDS = _commands()


def test_readme_is_under_10_kb():
    assert README.stat().st_size < 10_000, f"README.md is {README.stat().st_size} bytes"


def test_the_docs_exist():
    names = {p.name for p in DOCS}
    assert {"eae.md", "evaluation.md", "benchmarks.md", "reliability.md", "imagenet.md"} <= names


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_no_words_about_how_the_project_was_made(path):
    hits = [f"{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
            if FORBIDDEN.search(line)]
    assert not hits, "\n".join(hits)


def _tracked_text_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    paths = [ROOT / n for n in names.splitlines() if Path(n).suffix in {".py", ".md", ".json", ".toml", ".sh", ".txt", ""}]
    return [p for p in paths if p.is_file() and p.name != Path(__file__).name]


def test_no_file_speaks_of_how_the_project_was_made():
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()[:120]}" for p in _tracked_text_files()
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if FORBIDDEN_ANYWHERE.search(line)]
    assert not hits, "\n".join(hits)


def test_the_docs_hold_eae_commands():
    assert len(COMMANDS) >= 20
    assert any(name == "README.md" for name, _ in COMMANDS)


@pytest.mark.parametrize("name,line", COMMANDS, ids=[f"{n}:{i}" for i, (n, _) in enumerate(COMMANDS)])
def test_every_documented_eae_command_parses(name, line, monkeypatch):
    argv = _eae_argv(line)
    if PLACEHOLDERS & set(argv):
        pytest.skip(f"placeholder in {line}")
    parser = cli.build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse's way of refusing
        pytest.fail(f"{name}: `{line}` is refused by the parser (exit {e.code})")
    monkeypatch.chdir(ROOT)  # presets are named relative to the repository root
    if args.command == "train" and hasattr(cli, "config_from_args"):
        cli.config_from_args(args)  # the TOML preset and the flags make a valid TrainConfig


def test_files_named_in_commands_exist():
    missing = []
    for path, name in zip(DOCS, IDS):
        for line in _bash_lines(path):
            for ref in re.findall(r"(?:configs|benchmarks|scripts)/[\w./-]+\.(?:toml|py)", line):
                if not (ROOT / ref).is_file():
                    missing.append(f"{name}: {ref}")
    assert not missing, "\n".join(missing)


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_]{2,}|`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {_slug(m) for m in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)}


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_every_relative_link_points_to_something_that_exists(path):
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading with that anchor in {dest.name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", [*DOCS, *sorted((ROOT / "benchmarks").rglob("*.md"))])
def test_code_fences_close_on_a_line_of_their_own(path):
    """A closing fence with text after it does not close the block on GitHub: the rest of
    the page would render as code."""
    open_at = None
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            if open_at is None:
                open_at = i
            else:
                assert line.strip() == "```", f"{path.name}:{i}: text after the closing fence of line {open_at}"
                open_at = None
    assert open_at is None, f"{path.name}:{open_at}: a code block that never closes"


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_python_blocks_compile(path):
    for i, block in enumerate(_fenced(path.read_text(), "python")):
        compile(block, f"{path.name}[python block {i}]", "exec")


CHEAP = {"help": ["--help"], "list": ["list"], "headline-dry-run": ["bench", "headline", "--dry-run", "--out", "x"]}


def test_cheap_documented_commands_run(tmp_path):
    """`eae --help`, `eae list` and `eae bench headline --dry-run` exit 0 (started together:
    three interpreter start-ups cost less side by side)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {}
    for name, argv in CHEAP.items():
        (tmp_path / name).mkdir()
        procs[name] = subprocess.Popen([sys.executable, "-m", "eae", *argv], cwd=tmp_path / name, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = {}
    for name, proc in procs.items():
        outs[name], err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"eae {' '.join(CHEAP[name])}: exit {proc.returncode}\n{err}"
    assert "usage: eae" in outs["help"]
    assert "preact_resnet18" in outs["list"] and "fgsm_rs" in outs["list"]
    assert "total" in outs["headline-dry-run"]
    assert not (tmp_path / "headline-dry-run" / "x").exists()  # a dry run writes nothing
