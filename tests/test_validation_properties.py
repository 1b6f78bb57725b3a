"""Property-based tests of the one validator: every field, every door (TrainConfig in
Python, a TOML preset, a flag), values of every type. The promise: a valid configuration
whose values have exactly their field's type and are finite, or one ConfigError (a
ValueError) naming the field; never another exception, never an impossible value."""
from __future__ import annotations

import dataclasses
import math
import typing

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from eae.cli import build_parser, config_from_args  # noqa: E402
from eae.config import TrainConfig, load_toml  # noqa: E402
from eae.errors import ConfigError  # noqa: E402

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
HINTS = typing.get_type_hints(TrainConfig)
# placement fields whose values are only checked where they are used (a path, a device)
FREE_TEXT = {"out", "data_dir"}

ANY_VALUE = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.floats(allow_nan=True), max_size=3).map(tuple),
    st.sampled_from(["8/255", "1/0", "nan", "-1", "0", "true", "cpu", "l2", "eae", "1e999", "\x00"]),
)
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _is_sound(cfg: TrainConfig) -> None:
    """A configuration that was accepted holds values of exactly its fields' types, finite."""
    for name in FIELDS:
        v = getattr(cfg, name)
        if isinstance(v, float):
            assert math.isfinite(v), (name, v)
        if HINTS[name] is int:
            assert type(v) is int, (name, v)
        if HINTS[name] is bool:
            assert type(v) is bool, (name, v)


def _names_the_field(e: Exception, name: str) -> None:
    text = str(e)
    assert name in text or name.replace("_", "-") in text or "eps" in text or "arch" in text, (name, text)


@SETTINGS
@given(name=st.sampled_from(FIELDS), value=ANY_VALUE)
def test_python_door(name, value):
    try:
        cfg = TrainConfig(**{name: value})
    except ConfigError as e:
        _names_the_field(e, name)
        return
    _is_sound(cfg)


@SETTINGS
@given(name=st.sampled_from(FIELDS), value=ANY_VALUE)
def test_dict_door(name, value):  # config.json, TOML and the flags all go through from_dict
    try:
        cfg = TrainConfig.from_dict({name: value})
    except ConfigError as e:
        _names_the_field(e, name)
        return
    _is_sound(cfg)


TOML_LITERALS = st.one_of(
    st.sampled_from(["true", "false", "nan", "inf", "-inf", "1e999", "0", "-1", "99999999999999999999",
                     '"8/255"', '"x"', "[1, 2]", "[]", "1.5", "{a = 1}", '"""multi"""', "1979-05-27"]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)


@SETTINGS
@given(name=st.sampled_from(FIELDS), literal=TOML_LITERALS)
def test_toml_door(tmp_path_factory, name, literal):
    preset = tmp_path_factory.mktemp("toml") / "p.toml"
    preset.write_text(f"{name} = {literal}\n")
    try:
        cfg = TrainConfig.from_dict(load_toml(preset))
    except ConfigError as e:
        _names_the_field(e, name)
        return
    _is_sound(cfg)


FLAG_TEXT = st.one_of(st.text(max_size=10), st.sampled_from(["nan", "inf", "-1", "0", "1e999", "true", "8/255",
                                                             "99999999999999999999999", "1/0", ","]))


@SETTINGS
@given(name=st.sampled_from([n for n in FIELDS if n not in FREE_TEXT]), text=FLAG_TEXT)
def test_flag_door(name, text):
    parser = build_parser()
    flag = "--" + name.replace("_", "-")
    try:
        args = parser.parse_args(["train", flag, text] if HINTS[name] is not bool else ["train", flag])
    except SystemExit as e:  # argparse's own two lines, status 2
        assert e.code == 2
        return
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        _names_the_field(e, name)
        return
    _is_sound(cfg)
