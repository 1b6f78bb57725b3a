"""The evaluation report: what was run, on how many points, what it found."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..utils import row_key


def fmt_eps(eps: float, norm: str = "linf") -> str:
    """8/255 for an L-inf radius that is a whole number of grey levels; else the number."""
    eps = eps + 0.0  # -0.0 is 0
    if norm == "l2":
        return f"{eps:.6g}"
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 and round(k) > 0 else f"{eps:.6g}"


def _count(v: Any, n: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= n


_ROW = {"accuracy", "mode", "seconds", "n_attacked"}


def _label(v: Any) -> bool:
    """Text that is one cell of a Markdown table."""
    return isinstance(v, str) and v.isprintable() and "|" not in v and v == v.strip()


def _seconds(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and v == v and v != float("inf")


@dataclass
class Report:
    suite: str
    label: str
    n: int
    eps: float
    norm: str
    seed: int
    precision: str
    clean_accuracy: float
    per_attack: dict[str, dict[str, Any]]  # spec -> {accuracy, mode, seconds, n_attacked}
    robust_accuracy: float  # per-example worst case over everything run
    seconds: float
    verdict: str = "not run"  # ok | suspicious | masked | not run
    evidence: list[str] = field(default_factory=list)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    test_size: int | None = None
    eot: int = 1  # forward passes averaged per gradient
    correct: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # per-example bools
    notes: list[tuple[str, str]] = field(default_factory=list, repr=False)  # (level, text) for the verdict

    def __post_init__(self) -> None:
        if isinstance(self.eps, float) and self.eps == 0:
            self.eps = 0.0  # -0.0 is 0 (else recorded and printed as "-0")
        self.check()

    def check(self) -> None:
        """Values a report of ours could hold, else ConfigError naming the field: a report
        built or edited by hand must not print 150% or -5 images (checked again on output)."""
        from ..config import eps_errors
        from ..errors import ConfigError

        def bad(name: str, why: str):
            return ConfigError(f"report field {name}: {why}", field=name)

        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise bad("n", f"a number of images >= 0, got {self.n!r}")
        if self.test_size is not None and (isinstance(self.test_size, bool) or not isinstance(self.test_size, int)
                                           or self.test_size < self.n):
            raise bad("test_size", f"the size of the set the {self.n} images come from (>= n), got {self.test_size!r}")
        if self.norm not in ("linf", "l2") or eps_errors(self.eps, self.norm):
            raise bad("eps", f"{self.eps!r} is not a radius for norm {self.norm!r}")
        if self.verdict not in ("ok", "suspicious", "masked", "not run"):
            raise bad("verdict", f"ok, suspicious, masked or not run, got {self.verdict!r}")
        self._check_settings(bad)
        self._check_rows(bad)
        self._check_accuracies(bad)

    def _check_rows(self, bad) -> None:
        """Every row of the table: a label, a mode, its time and the points it attacked."""
        if not isinstance(self.per_attack, dict) or not all(
                isinstance(a, dict) and set(a) >= _ROW and a["mode"] in ("standalone", "cascade")
                for a in self.per_attack.values()):
            raise bad("per_attack", "a dict of attack -> {accuracy, mode (standalone or cascade), seconds, n_attacked}")
        for k, a in self.per_attack.items():
            if not _label(k) or row_key(k) in ("clean", "worstcase"):
                raise bad("per_attack", f"the rows are named by printable text without '|', other than clean and "
                                        f"worst case (every report has those), got {k!r}")
            if not _count(a["n_attacked"], self.n) or not _seconds(a["seconds"]):
                raise bad(f"per_attack[{k!r}]", f"n_attacked in 0..{self.n} and seconds >= 0, got {a!r}")
            if "note" in a and not (_label(a["note"]) and a["note"]):
                raise bad(f"per_attack[{k!r}]", f"note: one line of printable text, got {a['note']!r}")
        if not isinstance(self.evidence, list) or not all(isinstance(e, str) for e in self.evidence):
            raise bad("evidence", f"a list of lines of text, got {self.evidence!r}")

    def _check_accuracies(self, bad) -> None:
        """Each accuracy a whole number of the n images; no attack above the points it attacked
        (the clean-correct ones; for a cascade, those left standing); the worst case the lowest,
        and no lower than all attacks together could fool."""
        rows = [("clean_accuracy", self.clean_accuracy), ("robust_accuracy", self.robust_accuracy),
                *((f"per_attack[{k!r}]", a["accuracy"]) for k, a in self.per_attack.items())]
        for name, v in rows:
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            if not number or not (0 <= v <= 1 if self.n else v != v):  # NaN exactly when there are no images
                raise bad(name, f"an accuracy in [0, 1] (NaN for 0 images, only), got {v!r}")
            if self.n and abs(v * self.n - round(v * self.n)) > 1e-6 * (1 + self.n):  # (a float32 mean's error)
                raise bad(name, f"{v!r} of {self.n} images is not a whole number of them")
        if not self.n:
            return
        count = {name: round(v * self.n) for name, v in rows}
        clean, left, fooled = count["clean_accuracy"], count["clean_accuracy"], 0  # left: what the cascade left
        for k, a in self.per_attack.items():
            kept = count[f"per_attack[{k!r}]"]
            if a["n_attacked"] > clean or kept > a["n_attacked"]:
                raise bad(f"per_attack[{k!r}]", f"attacks only the {clean} points classified correctly, and keeps "
                                                f"at most those it attacked: got {a!r}")
            if a["mode"] == "cascade" and (a["n_attacked"] > left or kept > left):
                raise bad(f"per_attack[{k!r}]", f"a cascade attacks only the {left} points the attacks before it "
                                                f"left standing, and its accuracy never rises: got {a!r}")
            if a["mode"] == "cascade":
                left = kept
            else:
                fooled += clean - kept
        worst = count["robust_accuracy"]
        if worst > min(count.values()):
            raise bad("robust_accuracy", "the worst case is above an accuracy it cannot exceed (the minimum of "
                                         "clean and every attack)")
        fooled += clean - left  # the cascade's
        if worst < clean - fooled:  # no more points fooled than all attacks fooled together
            raise bad("robust_accuracy", f"the worst case ({worst} of {self.n} images) is below what the attacks "
                                         f"together could leave standing ({clean - fooled})")

    def _check_settings(self, bad) -> None:
        from ..config import MAX_SEED

        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise bad("seed", f"an integer in 0..2^63 - 1, got {self.seed!r}")
        if isinstance(self.eot, bool) or not isinstance(self.eot, int) or not 1 <= self.eot <= 10_000:
            raise bad("eot", f"forward passes per gradient, in 1..10,000, got {self.eot!r}")
        if self.precision not in ("fp32", "tf32", "bf16"):
            raise bad("precision", f"fp32, tf32 or bf16, got {self.precision!r}")
        if not _seconds(self.seconds):
            raise bad("seconds", f"a time >= 0, got {self.seconds!r}")
        for name in ("suite", "label"):
            if not _label(getattr(self, name)):
                raise bad(name, f"printable text without '|' (one cell of the report's table), got "
                                f"{getattr(self, name)!r}")

    @property
    def subset(self) -> bool:
        return self.test_size is not None and self.n < self.test_size

    @property
    def accuracy(self) -> dict[str, float]:
        """Flat view: clean and every attack's accuracy (see ``per_attack`` for modes)."""
        return {"clean": self.clean_accuracy, **{k: v["accuracy"] for k, v in self.per_attack.items()}}

    def to_dict(self) -> dict[str, Any]:
        self.check()
        return {
            "suite": self.suite, "label": self.label, "n": self.n, "test_size": self.test_size,
            "subset": self.subset, "eps": self.eps, "eps_text": fmt_eps(self.eps, self.norm), "norm": self.norm,
            "seed": self.seed, "precision": self.precision, "eot": self.eot, "attacks": list(self.per_attack),
            "clean_accuracy": self.clean_accuracy, "per_attack": self.per_attack,
            "accuracy": self.accuracy, "robust_accuracy": self.robust_accuracy,
            "worst_case": self.robust_accuracy, "verdict": self.verdict, "evidence": self.evidence,
            "diagnostics": self.diagnostics, "seconds": round(self.seconds, 2),
        }

    def scope(self) -> str:
        if self.test_size is None:
            return f"{self.n:,} images"
        if self.subset:
            return f"{self.n:,} of {self.test_size:,} test images (SUBSET)"
        return f"{self.n:,} test images (full test set)"

    def to_markdown(self, title: str | None = None) -> str:
        self.check()
        lines = []
        if title:
            lines += [f"### {title}", ""]
        eot = f" | EOT {self.eot} passes per gradient" if self.eot > 1 else ""
        lines += [f"{self.label} | {self.scope()} | eps {fmt_eps(self.eps, self.norm)} ({self.norm}) | "
                  f"seed {self.seed} | attack precision {self.precision}{eot}", "",
                  "| attack | mode | accuracy | attacked | seconds |", "|---|---|---:|---:|---:|",
                  f"| clean | - | {100 * self.clean_accuracy:.2f}% | - | - |"]
        for spec, r in self.per_attack.items():
            mode = "after (cascade)" if r["mode"] == "cascade" else "standalone"
            lines.append(f"| {spec} | {mode} | {100 * r['accuracy']:.2f}% | {r['n_attacked']:,} | "
                         f"{r['seconds']:.1f} |")
        lines.append(f"| **worst case** | per example | **{100 * self.robust_accuracy:.2f}%** | | "
                     f"{self.seconds:.1f} |")
        notes = [f"- {spec}: {r['note']}" for spec, r in self.per_attack.items() if r.get("note")]
        lines += ["", *notes, *([""] if notes else []), f"gradient-masking verdict: **{self.verdict}**"]
        lines += [f"- {e}" for e in self.evidence]
        return "\n".join(lines)
