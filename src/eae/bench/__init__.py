"""``eae bench``: the paper's comparison, reproducible in one command."""
from .runner import run_bench
from .suites import BENCH_SUITES, BenchSuite, Entry, get_bench_suite

__all__ = ["run_bench", "BENCH_SUITES", "BenchSuite", "Entry", "get_bench_suite"]
