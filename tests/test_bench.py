"""`eae bench`: suites, the budget rule, the report, and the smoke suite end to end."""
import json

import pytest

from eae.bench import BENCH_SUITES, run_bench
from eae.bench.report import table_rows, write_report
from eae.bench.runner import budget_epochs
from eae.config import TrainConfig
from eae.methods import list_methods


@pytest.mark.parametrize("name", sorted(BENCH_SUITES))
def test_every_suite_entry_is_a_valid_config(name):
    suite = BENCH_SUITES[name]
    for e in suite.entries:
        cfg = TrainConfig.from_dict({**suite.base, **e.overrides})
        assert cfg.method in list_methods()
    names = [e.overrides["method"] for e in suite.entries]
    ablation = ("standard", "fgsm_rs", "n_fgsm", "eae_paper")
    wanted = {"eae-ablation": ablation, "eae-ablation-cpu": ablation,
              "cifar10-cpu": ("standard", "fgsm_rs", "n_fgsm", "eae", "eae_paper"),
              "precision-parity-cpu": ("fgsm_rs", "eae")}.get(
        name, ("standard", "pgd", "free", "fgsm_rs", "n_fgsm", "trades", "eae", "eae_paper"))
    for method in wanted:
        assert method in names
    assert len({e.name for e in suite.entries}) == len(suite.entries)
    assert all(c.isalnum() or c in "._-" for e in suite.entries for c in e.name)  # safe file names


def test_budget_epochs():
    speed = [{"entry": "standard", "seconds_per_epoch": 1.0, "seconds_per_pass": 1.0, "replays": 1},
             {"entry": "fgsm_rs", "seconds_per_epoch": 2.0, "seconds_per_pass": 2.0, "replays": 1},
             {"entry": "pgd10", "seconds_per_epoch": 11.0, "seconds_per_pass": 11.0, "replays": 1},
             {"entry": "free8", "seconds_per_epoch": 1.1, "seconds_per_pass": 8.8, "replays": 8}]
    e = budget_epochs(speed, 2.0, 15)  # budget: 30 s
    assert e == {"standard": 30, "fgsm_rs": 15, "pgd10": 2, "free8": 24}


def _row(entry, seed, clean, aa, secs, verdict="ok"):
    return {"entry": entry, "method": entry, "seed": seed, "epochs": 15, "clean": clean, "fgsm": aa + 0.1,
            "pgd20": aa + 0.05, "cw20": aa + 0.02, "aa": aa, "worst_case": aa, "train_seconds": secs,
            "x_standard": secs / 10, "verdict": verdict, "evidence": ["[ok] fine"], "n": 10000, "aa_n": 2000,
            "test_size": 10000, "aa_label": "AutoAttack standard", "aa_suite": "aa", "config": {"method": entry},
            "curve": [
                {"epoch": 1, "val_clean": 0.5, "val_robust": 0.3, "seconds": secs / 2},
                {"epoch": 2, "val_clean": 0.6, "val_robust": 0.35, "seconds": secs / 2}]}


def test_report_aggregates_seeds(tmp_path):
    rows = [_row("standard", 0, 0.90, 0.0, 10), _row("standard", 1, 0.92, 0.0, 10),
            _row("fgsm_rs", 0, 0.82, 0.42, 20), _row("fgsm_rs", 1, 0.84, 0.44, 22, verdict="suspicious")]
    meta = {"suite": "cifar10", "description": "d", "device": "gpu", "torch": "t", "eae": "v", "commit": "c",
            "date": "now", "command": "eae bench cifar10", "seeds": 2, "budget_k": None}
    results = {"meta": meta, "rows": rows, "speed": None}
    header, cells = table_rows(results)
    fg = dict(zip(header, cells[1]))
    assert fg["clean"] == "83.0 ± 1.4" and fg["AA"] == "43.0 ± 1.4" and fg["masking verdict"] == "ok/suspicious"
    write_report(tmp_path, results)
    md = (tmp_path / "REPORT.md").read_text()
    assert "fgsm_rs" in md and "seeds 1..1" in md and "2,000 of 10,000 test images (SUBSET)" in md
    assert "suspicious" in md  # the alarm is listed
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    research = json.loads((tmp_path / "eae_research.json").read_text())
    assert [r["standard_seconds"] for r in research] == [10, 10, 10, 10]
    assert research[2]["method"] == "fgsm_rs" and research[2]["aa"] == 0.42 and research[2]["gpu"] == "gpu"
    assert research[2]["val"] == {"val_clean": 0.6, "val_robust": 0.35}  # the last epoch's, to choose on


@pytest.mark.slow
def test_smoke_suite_end_to_end(cifar_dir, tmp_path):
    out = tmp_path / "smoke"
    res = run_bench("smoke", out, device="cpu", data_dir=str(cifar_dir.parent), quiet=True)
    entries = [e.name for e in BENCH_SUITES["smoke"].entries]
    assert [r["entry"] for r in res["rows"]] == entries
    for r in res["rows"]:
        assert 0 <= r["worst_case"] <= r["aa"] <= r["clean"] <= 1
        assert r["worst_case"] <= min(r["fgsm"], r["pgd20"], r["cw20"]) + 1e-9
        assert r["verdict"] in ("ok", "suspicious", "masked") and r["train_seconds"] > 0
    md = (out / "REPORT.md").read_text()
    for name in entries:
        assert f"| {name} |" in md
    assert "SUBSET" in md and "NOT full AutoAttack" in md and "masking verdict" in md
    for png in ("pareto.png", "curves.png", "diagnosis.png", "speed.png"):
        assert (out / png).stat().st_size > 1000
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 4
    research = json.loads((out / "eae_research.json").read_text())
    assert {"method", "config", "clean", "aa", "aa_n", "train_seconds", "standard_seconds", "verdict",
            "gpu"} <= set(research[0])
    saved = json.loads((out / "results.json").read_text())
    assert saved["meta"]["device"].startswith("cpu") and len(saved["rows"]) == len(entries)

    with pytest.raises(FileExistsError):
        run_bench("smoke", out, device="cpu", data_dir=str(cifar_dir.parent), quiet=True)
    with pytest.raises(ValueError, match="other settings"):
        run_bench("smoke", out, seeds=2, resume=True, device="cpu", data_dir=str(cifar_dir.parent), quiet=True)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*.safetensors")}
    again = run_bench("smoke", out, resume=True, device="cpu", data_dir=str(cifar_dir.parent), quiet=True)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*.safetensors")} == stamps  # nothing retrained
    assert [r["aa"] for r in again["rows"]] == [r["aa"] for r in res["rows"]]


def test_only_runs_some_entries_and_reports_the_rest(tmp_path, monkeypatch):
    """--only spreads a suite over calls: each call runs its entries, the report keeps
    what earlier calls finished."""
    import eae.bench.runner as runner

    calls = []

    def fake_run(suite, entry, seed, out, *a, **k):
        calls.append(entry.name)
        row = _row(entry.name, seed, 0.8, 0.4, 10.0)
        d = out / "runs" / f"{entry.name}-s{seed}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "bench_eval.json").write_text(json.dumps(runner.sealed(row)))
        return row

    monkeypatch.setattr(runner, "_accuracy_run", fake_run)
    runner.run_bench("smoke", tmp_path, only=["standard", "eae"], quiet=True, device="cpu")
    res = runner.run_bench("smoke", tmp_path, only=["fgsm_rs"], resume=True, quiet=True, device="cpu")
    assert calls == ["standard", "eae", "fgsm_rs"]
    assert [r["entry"] for r in res["rows"]] == ["standard", "fgsm_rs", "eae"]  # suite order
    with pytest.raises(ValueError, match="unknown entries"):
        runner.run_bench("smoke", tmp_path, only=["nope"], resume=True, quiet=True, device="cpu")


def test_cpu_ablation_has_the_entries_of_the_gpu_ablation():
    gpu, cpu = BENCH_SUITES["eae-ablation"], BENCH_SUITES["eae-ablation-cpu"]
    assert [e.name for e in cpu.entries] == [e.name for e in gpu.entries]
    for g, c in zip(gpu.entries, cpu.entries):
        # only the sizes change: the same method, base adversary, weights and knobs
        assert c.overrides.get("val_aa_n", 0) <= g.overrides.get("val_aa_n", 0)
        assert {k: v for k, v in c.overrides.items() if k not in ("val_aa_n", "eae_warmup_epochs")} == \
            {k: v for k, v in g.overrides.items() if k not in ("val_aa_n", "eae_warmup_epochs")}
        if "eae_warmup_epochs" in g.overrides:  # the same fraction of the run
            assert c.overrides["eae_warmup_epochs"] / cpu.base["epochs"] == \
                pytest.approx(g.overrides["eae_warmup_epochs"] / gpu.base["epochs"], abs=0.1)


def test_cifar10_cpu_is_the_cifar10_recipe_with_a_cpu_sized_evaluation():
    gpu, cpu = BENCH_SUITES["cifar10"], BENCH_SUITES["cifar10-cpu"]
    assert {k: v for k, v in cpu.base.items() if k != "val_every"} == gpu.base  # training unchanged
    assert [e.name for e in cpu.entries] == ["fgsm_rs", "eae", "n_fgsm", "eae0.1_on_n_fgsm_half", "standard",
                                             "eae_paper"]
    assert (cpu.eval_n, cpu.quick_attacks, cpu.aa_suite, cpu.aa_n, cpu.aa_full_n) == \
        (None, ("clean", "cw20"), "aa-fast", 1000, 200)
    half = TrainConfig.from_dict({**cpu.base, **cpu.entries[3].overrides})
    assert (half.eae_base, half.eae_base_frac, half.eae_lambda) == ("n_fgsm", 0.5, 0.1)


def test_precision_parity_differs_in_precision_only():
    suite = BENCH_SUITES["precision-parity-cpu"]
    cfgs = {e.name: TrainConfig.from_dict({**suite.base, **e.overrides}) for e in suite.entries}
    for m in ("fgsm_rs", "eae"):
        diff = cfgs[f"{m}_fp32"].differences(cfgs[f"{m}_bf16"])
        assert diff == {"precision": ("fp32", "bf16")}


def _timed(secs, cpu, threads=2):
    return [{"epoch": 1, "seconds": secs, "cpu_seconds": cpu, "threads": threads, "load": 2.0}]


def test_a_run_that_did_not_get_its_cores_has_no_time_ratio(tmp_path):
    import torch

    from eae.bench.runner import _relative_to_standard, timing_of

    cpu = torch.device("cpu")
    assert timing_of(_timed(100, 190), cpu)["reliable"] is True
    slow = timing_of(_timed(100, 60), cpu)
    assert slow["reliable"] is False and slow["cpu_share"] == 0.3
    assert timing_of(_timed(100, 10), torch.device("cuda"))["reliable"] is True  # the GPU computes, the host waits
    rows = [_row("standard", 0, 0.9, 0.0, 10), _row("fgsm_rs", 0, 0.8, 0.4, 20), _row("n_fgsm", 0, 0.8, 0.4, 20)]
    rows[0]["timing"], rows[1]["timing"], rows[2]["timing"] = timing_of(_timed(10, 19), cpu), \
        timing_of(_timed(20, 39), cpu), slow
    _relative_to_standard(rows)
    assert rows[1]["x_standard"] == 2.0 and rows[2]["x_standard"] is None
    meta = {"suite": "smoke", "description": "d", "device": "cpu", "torch": "t", "eae": "v", "commit": "c",
            "date": "now", "command": "eae bench smoke", "seeds": 1, "budget_k": None}
    write_report(tmp_path, {"meta": meta, "rows": rows, "speed": None})
    md = (tmp_path / "REPORT.md").read_text()
    assert "| n_fgsm |" in md and "unreliable timing" in md and "n_fgsm seed 0 (30%)" in md
    assert "0.03" not in md


def test_pareto_labels_never_overlap():
    from eae.bench.report import label_positions

    pts = [(100 + i % 3, 20 + 0.01 * i, f"entry{i}") for i in range(12)] + [(300, 45, "far")]
    pos = label_positions(pts, width=0.24, height=0.06)
    boxes = [((x - 0.24, x) if ha == "right" else (x, x + 0.24), y) for x, y, ha in pos]
    for i, ((l1, r1), y1) in enumerate(boxes):
        for (l2, r2), y2 in boxes[i + 1:]:
            assert abs(y1 - y2) >= 0.06 - 1e-9 or r1 <= l2 or r2 <= l1


def test_the_plots_have_no_empty_panel_and_integer_epochs(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eae.bench.report import _diagnosis_plot, _group

    rows = [_row("fgsm_rs", 0, 0.8, 0.4, 20)]
    for c in rows[0]["curve"]:
        c.update(logit_norm=3.0, val_pgd=0.3, val_cw=0.3)  # no feature norm, seeds or per-epoch aa-fast
    groups = _group(rows)
    fig = _diagnosis_plot(plt, groups, {"fgsm_rs": {"color": "C0"}})
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel()
        assert all(float(t).is_integer() for t in ax.get_xticks())
    plt.close(fig)


def _tiny_suite():
    from eae.bench.suites import BenchSuite, Entry

    base = {"dataset": "synthetic", "arch": "resnet_small", "synthetic_train_size": 192, "synthetic_test_size": 64,
            "synthetic_image_size": 16, "val_size": 64, "batch_size": 64, "epochs": 2, "val_attack_steps": 2,
            "lr_max": 0.1}
    return BenchSuite("tiny", "accuracy", base, (Entry("standard", {"method": "standard"}),
                                                 Entry("fgsm_rs", {"method": "fgsm_rs"})),
                      aa_suite="aa-fast", aa_n=32, aa_full_n=16, quick_attacks=("clean", "cw20"),
                      diagnostics="cheap", diag_n=16)


def test_train_only_then_evaluate_in_parts_that_survive_a_kill(tmp_path, monkeypatch):
    import torch

    import eae.bench.runner as runner

    monkeypatch.setitem(BENCH_SUITES, "tiny", _tiny_suite())
    out = tmp_path / "b"
    assert run_bench("tiny", out, device="cpu", quiet=True, train_only=True)["rows"] == []
    assert not list(out.glob("runs/*/bench_eval*")) and not (out / "results.json").exists()
    from safetensors.torch import load_file

    def tensors():
        return {p: load_file(p) for p in out.glob("runs/*/model.safetensors")}

    weights = tensors()
    epochs = {p: p.read_text().count("\n") for p in out.glob("runs/*/metrics.jsonl")}
    assert len(weights) == 2 and set(epochs.values()) == {2}
    res = run_bench("tiny", out, device="cpu", quiet=True, resume=True)
    # not retrained: the same weights, no epoch added
    again_w = tensors()
    assert again_w.keys() == weights.keys()
    assert all(torch.equal(again_w[p][k], t) for p in weights for k, t in weights[p].items())
    assert {p: p.read_text().count("\n") for p in out.glob("runs/*/metrics.jsonl")} == epochs
    r = res["rows"][1]
    assert r["pgd20"] is None and r["fgsm"] is None and (r["n"], r["aa_n"], r["aa_full_n"]) == (64, 32, 16)
    assert 0 <= r["aa_full"] <= r["clean"] and 0 <= r["aa_fast_on_full_n"] <= 1
    assert r["worst_case"] <= r["aa"] <= r["clean"] and r["precision"] in ("fp32", "bf16")
    assert r["timing"]["cpu_share"] is not None
    md = (out / "REPORT.md").read_text()
    assert "AA full (16)" in md and "full AutoAttack (aa) on 16 of 64 test images (SUBSET)" in md
    # a kill after the parts were saved: the next call assembles the row without attacking again
    (out / "runs" / "fgsm_rs-s0" / "bench_eval.json").unlink()
    monkeypatch.setattr(runner, "evaluate", lambda *a, **k: pytest.fail("evaluated again"))
    again = run_bench("tiny", out, device="cpu", quiet=True, resume=True)
    assert {k: v for k, v in again["rows"][1].items() if k != "curve"} == \
        {k: v for k, v in r.items() if k != "curve"}


@pytest.mark.parametrize("flag", ["--train-only", "--compile"])
def test_headline_refuses_the_suite_only_flags(flag, tmp_path, capsys):
    from eae import cli

    assert cli.main(["bench", "headline", flag, "--out", str(tmp_path / "h")]) == 2
    assert "headline takes" in capsys.readouterr().err and not (tmp_path / "h").exists()


def test_two_benches_on_one_folder_at_once_are_refused(tmp_path, monkeypatch):
    import eae
    import eae.bench.runner as runner
    from eae.checkpoint import RunLock

    def fake_run(suite, entry, seed, out, *a, **k):
        d = out / "runs" / f"{entry.name}-s{seed}"
        d.mkdir(parents=True, exist_ok=True)
        row = _row(entry.name, seed, 0.8, 0.4, 10.0)
        (d / "bench_eval.json").write_text(json.dumps(runner.sealed(row)))
        return row

    monkeypatch.setattr(runner, "_accuracy_run", fake_run)
    runner.run_bench("smoke", tmp_path, only=["standard"], quiet=True, device="cpu")
    other = RunLock(tmp_path).acquire()  # as another `eae bench` on the same --out holds it
    try:
        before = (tmp_path / "results.json").read_bytes()
        with pytest.raises(eae.EaeError, match="is being written by another eae bench .*choose another --out"):
            runner.run_bench("smoke", tmp_path, only=["eae"], resume=True, quiet=True, device="cpu")
        assert (tmp_path / "results.json").read_bytes() == before
    finally:
        other.release()
    res = runner.run_bench("smoke", tmp_path, only=["eae"], resume=True, quiet=True, device="cpu")
    assert [r["entry"] for r in res["rows"]] == ["standard", "eae"]


def test_a_result_row_copied_from_another_entry_is_refused(tmp_path, monkeypatch):
    import shutil

    import eae.bench.runner as runner

    def fake_run(suite, entry, seed, out, *a, **k):  # as _accuracy_run writes them: sealed rows
        d = out / "runs" / f"{entry.name}-s{seed}"
        d.mkdir(parents=True, exist_ok=True)
        row = _row(entry.name, seed, 0.8, 0.4, 10.0)
        (d / "bench_eval.json").write_text(json.dumps(runner.sealed(row)))
        return row

    monkeypatch.setattr(runner, "_accuracy_run", fake_run)
    runner.run_bench("smoke", tmp_path, only=["standard", "eae"], quiet=True, device="cpu")
    shutil.copy(tmp_path / "runs" / "eae-s0" / "bench_eval.json", tmp_path / "runs" / "standard-s0" / "bench_eval.json")
    with pytest.raises(ValueError, match="holds the result of another run \\(entry 'eae'; this folder is entry "
                                         "'standard'\\)"):
        runner.run_bench("smoke", tmp_path, only=["fgsm_rs"], resume=True, quiet=True, device="cpu")


def test_a_finished_row_whose_weights_were_replaced_is_refused(tmp_path, monkeypatch):
    import shutil

    import torch

    import eae.bench.runner as runner
    from eae.checkpoint import save_weights
    from eae.models import create_model

    def fake_run(suite, entry, seed, out, *a, **k):  # a trained run folder and its sealed row
        d = out / "runs" / f"{entry.name}-s{seed}"
        d.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(len(entry.name))
        save_weights(create_model("convnet_nobn", 10), d / "model.safetensors")
        row = {**_row(entry.name, seed, 0.8, 0.4, 10.0), **runner._weights_of(d)}
        (d / "bench_eval.json").write_text(json.dumps(runner.sealed(row)))
        return row

    monkeypatch.setattr(runner, "_accuracy_run", fake_run)
    runner.run_bench("smoke", tmp_path, only=["standard", "eae"], quiet=True, device="cpu")
    shutil.copy(tmp_path / "runs" / "standard-s0" / "model.safetensors", tmp_path / "runs" / "eae-s0" / "model.safetensors")
    with pytest.raises(ValueError, match="holds the result of another run \\(weights_sha256"):
        runner.run_bench("smoke", tmp_path, only=["fgsm_rs"], resume=True, quiet=True, device="cpu")
