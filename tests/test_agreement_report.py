"""The AutoAttack agreement harness's bookkeeping (no attack runs, no pyautoattack needed):
sides saved separately, in different processes, are put together and compared."""
import importlib.util
import sys
from pathlib import Path


def _harness():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "autoattack_agreement.py"
    spec = importlib.util.spec_from_file_location("autoattack_agreement", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def _side(robust, seconds, **extra):
    return {"robust": robust, "n": 10, "clean": 6, "stages": {"apgd-ce": len(robust) + 1}, "seconds": seconds,
            "attack_seconds": seconds, "warnings": [], "verdict": "ok", "flags": [], "threads": 1,
            "commit": "abc", **extra}


def test_sides_from_two_processes_are_joined_and_compared(tmp_path):
    h = _harness()
    header = {"command": "x", "commit": "abc", "versions": {}, "machine": "m", "n": 10, "eps": 0.5, "norm": "l2",
              "eps_text": "0.5", "seed": 0, "batch_size": 500}
    # a side saved before CPU time was recorded still joins (its CPU time shows as '-')
    ref = {"header": header, "models": {"m": {"aa": {"sides": {"reference": _side([1, 2, 3], 100.0)}}}}}
    ours = {"header": header, "models": {"m": {"aa": {"sides": {"eae": _side([2, 3, 4, 5], 50.0, cpu_seconds=48.0)}}}}}
    doc = h.join([ref, ours])
    r = doc["models"]["m"]["aa"]
    assert r["robust"] == {"reference": 3, "eae": 4} and r["clean"] == 6
    assert r["robust_only_for_reference"] == [1] and r["robust_only_for_eae"] == [4, 5]
    assert abs(r["difference_points"] - 10.0) < 1e-9 and r["seconds"]["ratio_eae_to_reference"] == 0.5
    assert r["cpu_seconds"] == {"reference": None, "eae": 48.0}
    half = h.join([ref])  # one side only: kept, not compared, not in the Markdown table
    assert "robust" not in half["models"]["m"]["aa"]
    h._save(half, tmp_path)
    assert "| m | aa |" not in (tmp_path / "agreement.md").read_text()
    h._save(doc, tmp_path)
    assert "| m | aa |" in (tmp_path / "agreement.md").read_text()
    assert "| 0.50 | - | 48 |" in (tmp_path / "agreement.md").read_text()
