"""Small helpers shared by tests."""
from __future__ import annotations

from pathlib import Path


def only_report(run: Path) -> Path:
    """The one evaluation report (eval-WHAT.json) in a run folder."""
    reports = sorted(Path(run).glob("eval-*.json"))
    assert len(reports) == 1, reports
    return reports[0]
