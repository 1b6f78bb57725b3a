import json

import pytest
import torch
from safetensors.torch import load_file

import eae
from eae.checkpoint import load_checkpoint
from eae.trainer import lr_factor


def test_run_directory_contents(tiny_cfg):
    result = eae.train(tiny_cfg, quiet=True)
    run = result.run_dir
    assert result.finished
    for name in ("config.json", "metrics.jsonl", "model.safetensors", "model_best.safetensors",
                 "checkpoint.pt", "environment.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text()) == tiny_cfg.to_dict()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("lr", "train_loss", "train_acc", "val_clean", "val_pgd", "val_cw", "val_robust", "seconds",
                "logit_norm"):
        assert key in rows[-1], key
    assert rows[-1]["val_robust"] <= min(rows[-1]["val_clean"], rows[-1]["val_pgd"], rows[-1]["val_cw"])


def test_load_rebuilds_the_trained_network(tiny_cfg):
    eae.train(tiny_cfg, quiet=True)
    model = eae.load(tiny_cfg.out)
    assert not model.training
    state = load_file(f"{tiny_cfg.out}/model.safetensors")
    ck = load_checkpoint(f"{tiny_cfg.out}/checkpoint.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]) and torch.equal(v, ck["model"][k].contiguous())
    x = torch.rand(3, 3, 16, 16)
    assert model(x).shape == (3, 10)


@pytest.mark.parametrize("method, extra", [("standard", {}), ("free", {"free_replays": 2, "epochs": 6}),
                                           ("gradalign", {"gradalign_init": "uniform"}),
                                           ("fgsm_pgi", {"pgi_reset_every": 2}), ("fgsm_pgi", {"pgi_init": "ep"}),
                                           ("eae", {"eae_base": "fgsm_pgi"})])
def test_resume_gives_the_same_weights(tiny_cfg, tmp_path, method, extra):
    a = tiny_cfg.replace(out=str(tmp_path / "a"), **{"epochs": 3, "method": method, **extra})
    b = a.replace(out=str(tmp_path / "b"))
    eae.train(a, quiet=True)
    partial = eae.train(b, quiet=True, stop_after=1)
    assert not partial.finished and not (tmp_path / "b" / "model.safetensors").exists()
    done = eae.train(b, quiet=True, resume=True)
    assert done.finished and [m["epoch"] for m in done.metrics] == [1, 2, 3]
    wa = load_file(str(tmp_path / "a" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ma = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [m["train_loss"] for m in ma] == [m["train_loss"] for m in mb]
    assert [m["val_pgd"] for m in ma] == [m["val_pgd"] for m in mb]


def test_resume_refuses_a_different_config(tiny_cfg):
    eae.train(tiny_cfg, quiet=True, stop_after=1)
    with pytest.raises(ValueError, match="lr_max"):
        eae.train(tiny_cfg.replace(lr_max=0.5), quiet=True, resume=True)


def test_existing_run_is_not_overwritten(tiny_cfg):
    eae.train(tiny_cfg, quiet=True, stop_after=1)
    with pytest.raises(FileExistsError, match="resume=True"):
        eae.train(tiny_cfg, quiet=True)


def test_standard_training_learns(tiny_cfg):
    cfg = tiny_cfg.replace(synthetic_train_size=768, val_size=128, epochs=4, batch_size=32, val_attack_steps=0,
                           lr_max=0.05)
    res = eae.train(cfg, quiet=True)
    assert res.final["val_clean"] > 0.6  # chance is 0.1


@pytest.mark.parametrize("schedule", ["onecycle", "piecewise", "constant"])
def test_lr_schedules(tiny_cfg, schedule):
    cfg = tiny_cfg.replace(lr_schedule=schedule, lr_peak_frac=0.4, lr_milestones=(0.5, 0.75), lr_gamma=0.1)
    f = lr_factor(cfg, 100)
    lrs = [f(s) for s in range(100)]
    if schedule == "onecycle":
        assert lrs[39] == pytest.approx(1.0) and lrs[0] == pytest.approx(1 / 40) and lrs[-1] == pytest.approx(0.0)
        assert lrs[:40] == sorted(lrs[:40]) and lrs[39:] == sorted(lrs[39:], reverse=True)
    elif schedule == "piecewise":
        assert lrs[0] == 1.0 and lrs[60] == pytest.approx(0.1) and lrs[99] == pytest.approx(0.01)
    else:
        assert set(lrs) == {1.0}


def test_eae_logs_its_statistics(tiny_cfg):
    res = eae.train(tiny_cfg.replace(method="eae", epochs=1), quiet=True)
    for key in ("seed_frac", "logit_norm", "feature_norm", "latent_dist", "eae_loss"):
        assert key in res.final
    assert res.final["logit_norm"] > 0


def test_compile_for_training_keeps_weights_layout_and_eager_eval(tiny_cfg):
    """torch.compile touches the train-mode path only: state_dict keys are unchanged
    and evaluation stays eager."""
    res = eae.train(tiny_cfg.replace(compile=True, epochs=1, method="fgsm_rs"), quiet=True)
    assert res.finished and all(torch.isfinite(torch.tensor(res.final["train_loss"])).reshape(-1))
    model = eae.load(tiny_cfg.out)
    assert "_train_backbone" not in model.__dict__
    assert not any("_orig_mod" in k for k in load_file(f"{tiny_cfg.out}/model.safetensors"))


def test_free_runs_fewer_passes_with_replays(tiny_cfg):
    cfg = tiny_cfg.replace(method="free", free_replays=2, epochs=4)
    res = eae.train(cfg, quiet=True)
    assert [m["epoch"] for m in res.metrics] == [1, 2]  # ceil(4 / 2) passes
    ck = load_checkpoint(f"{cfg.out}/checkpoint.pt")
    batches = -(-(cfg.synthetic_train_size - cfg.val_size) // cfg.batch_size)
    assert ck["scheduler"]["last_epoch"] == 2 * batches * 2  # every replay is an optimiser step


def test_validation_can_track_aa_fast(tiny_cfg):
    res = eae.train(tiny_cfg.replace(epochs=1, val_aa_n=16), quiet=True)
    assert 0 <= res.final["val_aa_fast"] <= res.final["val_clean"]
