"""What the machine offers a run: native bf16 detection, the cores a process may use, and
what a run records about both (environment.json, per-epoch CPU time)."""
import json
import os

import pytest
import torch

import eae
from eae import system
from eae.system import available_cores, configure_threads, cpu_bf16_units, training_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("units,expected", [([], "fp32"), (["avx512_bf16"], "bf16"), (["amx_bf16"], "bf16")])
def test_auto_is_bf16_on_cpus_with_native_bf16_only(monkeypatch, units, expected):
    monkeypatch.setattr(system, "cpu_bf16_units", lambda flags=None: units)
    assert training_precision("auto", CPU) == expected
    assert training_precision("auto", CUDA) == "bf16"
    assert training_precision("fp32", CUDA) == "fp32" and training_precision("bf16", CPU) == "bf16"


def test_bf16_units_come_from_the_cpu_flags_and_need_onednn(monkeypatch):
    monkeypatch.setattr(system, "_onednn_bf16", lambda: True)
    assert cpu_bf16_units({"avx2", "avx512f"}) == []
    assert cpu_bf16_units({"avx512_bf16", "amx_bf16", "avx512f"}) == ["amx_bf16", "avx512_bf16"]
    monkeypatch.setattr(system, "_onednn_bf16", lambda: False)  # flags but no oneDNN bf16 kernels
    assert cpu_bf16_units({"avx512_bf16"}) == []


@pytest.mark.parametrize("files,expected", [
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_cgroup_quota(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert system._cgroup_cpus(tmp_path) == expected


@pytest.mark.parametrize("affinity,quota,expected", [({0, 1, 2, 3}, None, 4), ({0, 1, 2, 3}, 2.5, 2),
                                                     ({3}, 8.0, 1), ({0, 1}, 0.5, 1)])
def test_available_cores_is_affinity_capped_by_the_quota(monkeypatch, affinity, quota, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: affinity)
    monkeypatch.setattr(system, "_cgroup_cpus", lambda root=None: quota)
    assert available_cores() == expected


def test_threads_follow_the_cores_unless_the_user_chose(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        monkeypatch.setattr(system, "available_cores", lambda: 1)
        monkeypatch.setenv("OMP_NUM_THREADS", "4")
        assert configure_threads() == 4  # the user's choice stands
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert configure_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_run_records_its_precision_cpu_and_cpu_time(tiny_cfg, monkeypatch):
    monkeypatch.setattr(system, "cpu_bf16_units", lambda flags=None: [])  # as on a CPU without bf16
    res = eae.train(tiny_cfg, quiet=True)
    env = json.loads((res.run_dir / "environment.json").read_text())
    assert env["precision"] == "fp32" and env["threads"] == torch.get_num_threads()
    assert {"cpu", "cpu_capability", "cpu_bf16_units", "cores_available"} <= set(env)
    for row in res.metrics:
        assert 0 < row["cpu_seconds"] and row["threads"] >= 1 and "load" in row
    assert json.loads((res.run_dir / "config.json").read_text())["precision"] == "auto"  # what was asked


@pytest.mark.slow
def test_compile_trains_on_the_cpu_in_bf16(tiny_cfg):
    """`--compile` on the CPU, through an attack's input gradient (FGSM-RS) and bf16 autocast."""
    cfg = tiny_cfg.replace(method="fgsm_rs", compile=True, precision="bf16", epochs=1)
    res = eae.train(cfg, quiet=True)
    assert res.finished and all(torch.isfinite(torch.tensor(m["train_loss"])) for m in res.metrics)
    assert json.loads((res.run_dir / "environment.json").read_text())["precision"] == "bf16"
    model = eae.load(res.run_dir)
    assert torch.isfinite(model(torch.rand(4, 3, 16, 16))).all()
