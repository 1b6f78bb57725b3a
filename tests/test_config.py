import dataclasses
import json

import pytest

from eae.cli import build_parser, config_from_args
from eae.config import EAE_CHOICE_FIELDS, METHOD_FIELDS, TrainConfig, coerce, load_toml, parse_float

from conftest import REPO


def test_parse_float_accepts_fractions():
    assert parse_float("8/255") == pytest.approx(8 / 255)
    assert parse_float(" 2 / 255 ") == pytest.approx(2 / 255)
    assert parse_float("0.5") == 0.5
    with pytest.raises(ValueError):
        parse_float("eight")


def test_roundtrip_through_json():
    cfg = TrainConfig(method="eae", eae_eta=0.1, lr_schedule="piecewise", lr_milestones=(0.3, 0.6), nfgsm_alpha=0.01)
    again = TrainConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg


def test_invalid_values_are_refused():
    with pytest.raises(ValueError, match="eae_q"):
        TrainConfig(eae_q=0.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="cosine-ish")
    with pytest.raises(ValueError, match="unknown config field"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="epochs"):
        coerce(int, 1.5, "epochs")


def test_every_field_has_a_flag_that_sets_it():
    """The CLI maps onto the dataclass 1:1: every field has a flag, and giving it
    changes exactly that field."""
    import typing

    parser = build_parser()
    base = TrainConfig()
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(base, f.name)
        if isinstance(value, bool):
            argv = [flag if not value else "--no-" + f.name.replace("_", "-")]
            expected = not value
        elif f.metadata.get("choices") or f.name in ("method", "arch"):
            choices = f.metadata.get("choices") or {"method": ("standard", "fgsm_rs"),
                                                    "arch": ("preact_resnet18", "resnet_small")}[f.name]
            pick = next(c for c in choices if c != value)
            argv, expected = [flag, pick], pick
        elif f.name == "lr_milestones":
            argv, expected = [flag, "0.3,0.9"], (0.3, 0.9)
        elif f.name in ("eae_conf_low", "eae_conf_high", "pgi_smoothing"):
            argv, expected = [flag, "0.75"], 0.75
        elif isinstance(value, float) or hints[f.name] == (float | None):
            argv, expected = [flag, "4/255"], 4 / 255
        elif isinstance(value, int):
            argv, expected = [flag, str(value + 3)], value + 3
        else:  # str | None
            argv, expected = [flag, "somewhere"], "somewhere"
        # fields that mean something only in a context (a dataset, an adversarial method) get it
        context = {"cifar100_labels": {"dataset": "cifar100"}, "svhn_extra": {"dataset": "svhn"},
                   "unverified_data": {"dataset": "svhn"}, "eps_warmup_epochs": {"method": "fgsm_rs"},
                   "image_size": {"dataset": "imagefolder"}, "bad_images": {"dataset": "imagefolder"},
                   "workers": {"dataset": "tiny-imagenet"},
                   "overfit_action": {"method": "fgsm_rs"},  # (standard training has no robustness to lose)
                   "overfit_step_factor": {"method": "fgsm_rs", "overfit_action": "rollback_lower_step"},
                   "max_rollbacks": {"method": "fgsm_rs", "overfit_action": "rollback"},
                   "head_scale": {"head": "cosine"}, "lr_milestones": {"lr_schedule": "piecewise"},
                   "overfit_drop": {"method": "fgsm_rs"}, "synthetic_train_size": {"dataset": "synthetic"},
                   "synthetic_test_size": {"dataset": "synthetic"}, "synthetic_image_size": {"dataset": "synthetic"},
                   "lr_gamma": {"lr_schedule": "piecewise"}}.get(f.name, {})
        # a method's settings: a method that reads them (and the EAE choice they act under)
        readers = [m for m, fields in METHOD_FIELDS.items() if f.name in fields]
        if readers:
            context = {"method": readers[0]}
        elif f.name.startswith("eae_"):
            context = {"method": "eae", **{choice: values[0] for name, choice, values in EAE_CHOICE_FIELDS
                                           if name == f.name}}
        given = [a for k, v in context.items() for a in ("--" + k.replace("_", "-"), v)]
        cfg = config_from_args(build_parser().parse_args(["train", *given, *argv]))
        assert getattr(cfg, f.name) == pytest.approx(expected) if isinstance(expected, float) \
            else getattr(cfg, f.name) == expected, f.name
        assert cfg.differences(TrainConfig(**context), ignore=(f.name,)) == {}, f"{flag} changed other fields"
    assert parser is not None


def test_toml_then_flags_precedence(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('method = "eae"\neps = "4/255"\nepochs = 7\n[eae]\neta = 0.5\n')
    assert load_toml(p)["eae_eta"] == 0.5
    args = build_parser().parse_args(["train", "--config", str(p), "--epochs", "3"])
    cfg = config_from_args(args)
    assert cfg.method == "eae" and cfg.eae_eta == 0.5 and cfg.eps == pytest.approx(4 / 255)
    assert cfg.epochs == 3  # the flag wins over the file


@pytest.mark.parametrize("preset", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_presets_load(preset):
    cfg = TrainConfig.from_toml(preset)
    from eae.methods import list_methods
    from eae.models import list_models

    assert cfg.method in list_methods() and cfg.arch in list_models()


def test_presets_exist():
    assert len(list((REPO / "configs").glob("*.toml"))) >= 3


def test_preset_tables_are_prefixes_at_any_depth_and_other_forms_are_named(tmp_path):
    from eae.config import load_toml
    from eae.errors import ConfigError

    (tmp_path / "a.toml").write_text('[eae]\nbase = "n_fgsm"\nbase_frac = 0.5\n')
    assert load_toml(tmp_path / "a.toml") == {"eae_base": "n_fgsm", "eae_base_frac": 0.5}
    (tmp_path / "b.toml").write_text("[eae.base]\nfrac = 0.5\n")
    assert load_toml(tmp_path / "b.toml") == {"eae_base_frac": 0.5}
    (tmp_path / "c.toml").write_text("[[eae]]\neta = 0.1\n")
    with pytest.raises(ConfigError, match=r"array of tables.*write \[eae\]"):
        load_toml(tmp_path / "c.toml")
    (tmp_path / "config.json").write_text('{"lr_max": 0.2}')
    with pytest.raises(ConfigError, match="is JSON: presets are TOML"):
        load_toml(tmp_path / "config.json")
