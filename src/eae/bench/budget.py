"""Work under a wall-clock budget, most valuable first.

A plan is a list of :class:`Task` in order of value. Before a task starts, its
estimate (which may use what the earlier tasks measured) is compared with the time
left; a task that would not fit, or whose prerequisite did not run, is skipped with
a note saying why, never silently lost. A task that fails is recorded with its error
and the plan goes on: one broken part must not cost the rest of a scarce GPU window.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Task:
    name: str
    estimate: Callable[[], float]  # seconds, asked just before the task would start
    run: Callable[[], Any]
    needs: tuple[str, ...] = ()  # tasks that must have finished ("done") first
    what: str = ""


@dataclass
class Outcome:
    name: str
    status: str  # done | skipped | failed
    estimate: float
    seconds: float = 0.0
    note: str = ""
    value: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "estimate_s": round(self.estimate, 1),
                "seconds": round(self.seconds, 1), "note": self.note}


def run_tasks(tasks: list[Task], budget: float | None, *, clock: Callable[[], float] = time.perf_counter,
              log: Callable[[str], None] = lambda s: None, start: float | None = None) -> list[Outcome]:
    """Run ``tasks`` in order within ``budget`` seconds (None: no limit) counted from
    ``start`` (default: now)."""
    t0 = clock() if start is None else start
    done: dict[str, Outcome] = {}
    for task in tasks:
        missing = [n for n in task.needs if n not in done or done[n].status != "done"]
        if missing:
            out = Outcome(task.name, "skipped", 0.0, note=f"needs {', '.join(missing)}, which did not run")
        else:
            est = float(task.estimate())
            left = float("inf") if budget is None else budget - (clock() - t0)
            if est > left:
                out = Outcome(task.name, "skipped", est,
                              note=f"needs about {est:.0f} s, {max(left, 0):.0f} s of the budget left")
            else:
                out = _run_one(task, est, clock, log)
        if out.status != "done":
            log(f"[{task.name}] {out.status}: {out.note}")
        done[task.name] = out
    return list(done.values())


def _run_one(task: Task, est: float, clock, log) -> Outcome:
    log(f"[{task.name}] start (about {est:.0f} s){': ' + task.what if task.what else ''}")
    t = clock()
    try:
        value = task.run()
    except KeyboardInterrupt:
        raise
    except Exception as e:  # recorded, loudly, and the plan goes on
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        return Outcome(task.name, "failed", est, clock() - t, note=last)
    out = Outcome(task.name, "done", est, clock() - t, value=value)
    log(f"[{task.name}] done in {out.seconds:.1f} s (estimated {est:.0f} s)")
    return out
