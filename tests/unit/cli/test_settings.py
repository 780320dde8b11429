"""One source for every setting: each ``CollabConfig`` field is a flag of the commands that take a config,
documented by the field's description, and a value given on the command line lands in the config.

Nothing here lists a field by hand: the test walks ``CollabConfig.model_fields``, so a new setting that
the command line cannot express fails it.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

import pytest

from mentorcollab_langchain.cli import build_parser
from mentorcollab_langchain.cli.settings import config_overrides
from mentorcollab_langchain.engine import CollabConfig
from mentorcollab_langchain.errors import ConfigError

COMMANDS = {"run": ["a prompt"], "eval": [], "bench": []}
"""The commands that build a ``CollabConfig``, with the positional arguments each needs."""


def _subparser(command: str) -> argparse.ArgumentParser:
    [commands] = [action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)]
    return commands.choices[command]


def _flags(command: str) -> dict[str, argparse.Action]:
    return {action.dest: action for action in _subparser(command)._actions}


def _other_value(name: str, action: argparse.Action) -> tuple[list[str], Any]:
    """Command-line words that set field ``name`` to a value other than its default, and that value."""
    field = CollabConfig.model_fields[name]
    default, flag = field.default, action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        return ([f"--no-{flag[2:]}"] if default else [flag]), not default
    if action.choices:
        value = next(choice for choice in action.choices if choice != default)
        return [flag, value], value
    if isinstance(action, argparse._AppendAction):
        return [flag, "END", flag, "\n\n"], ("END", "\n\n")
    if action.type is int:
        value = 1 if default is None else default + 1
        return [flag, str(value)], value
    if action.type is float:
        value = (default + 1) / 2  # inside [0, 1] for a rate in it, and never the default itself
        return [flag, repr(value)], value
    if action.type is str:  # the grammar: any text llguidance compiles
        value = 'start: "yes" | "no"'
        return [flag, value], value
    raise AssertionError(f"--{name}: no test value for {action!r}")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_field_is_a_flag_documented_by_its_description(command: str) -> None:
    flags = _flags(command)
    for name, field in CollabConfig.model_fields.items():
        assert name in flags, f"{command}: CollabConfig.{name} has no flag"
        action = flags[name]
        assert action.option_strings[0] == f"--{name.replace('_', '-')}"
        assert action.default is None, f"{command} --{name}: an unset flag must leave the config's default"
        assert field.description and action.help.replace("%%", "%").startswith(field.description)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_field_parsed_from_the_command_line_reaches_the_config(command: str) -> None:
    flags = _flags(command)
    for name in CollabConfig.model_fields:
        words, value = _other_value(name, flags[name])
        args = build_parser().parse_args([command, *words, *COMMANDS[command]])
        config = CollabConfig(**config_overrides(args))
        assert getattr(config, name) == value, f"{command} {words}"
        assert getattr(config, name) != CollabConfig.model_fields[name].default


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unset_flags_override_nothing(command: str) -> None:
    assert config_overrides(build_parser().parse_args([command, *COMMANDS[command]])) == {}


def test_all_fields_at_once_give_one_config() -> None:
    flags = _flags("run")
    words: list[str] = []
    expected = {}
    for name in CollabConfig.model_fields:
        more, expected[name] = _other_value(name, flags[name])
        words += more
    config = CollabConfig(**config_overrides(build_parser().parse_args(["run", *words, "a prompt"])))
    assert config.model_dump() == expected


def _calibration(tmp_path, **changes: Any) -> str:
    """A calibration record's path; a change to None leaves that field out."""
    record = {"uncertainty_signal": "entropy", "uncertainty_threshold": 1.25, "probe_rate": 0.05,
              "generator": "smollm2-135m-instruct"} | changes
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({name: value for name, value in record.items() if value is not None}))
    return str(path)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_calibration_record_sets_the_policy_it_was_calibrated_for(command: str, tmp_path) -> None:
    args = build_parser().parse_args([command, "--calibration", _calibration(tmp_path), *COMMANDS[command]])
    config = CollabConfig(**config_overrides(args))
    assert (config.uncertainty_signal, config.uncertainty_threshold, config.probe_rate) == ("entropy", 1.25, 0.05)


@pytest.mark.parametrize(
    ("record", "words", "message"),
    [
        ({"generator": "gemma3-270m"}, [], "was made for the generator 'gemma3-270m', not 'smollm2-135m-instruct'"),
        ({}, ["--uncertainty-threshold", "0.5"], "sets --uncertainty-threshold; leave --uncertainty-threshold out"),
        ({"uncertainty_threshold": None, "probe_rate": None}, [],
         "not a calibration record (no uncertainty_threshold, probe_rate)"),
    ],
)
def test_a_calibration_that_does_not_fit_is_refused_by_name(record: dict[str, Any], words: list[str],
                                                             message: str, tmp_path) -> None:
    args = build_parser().parse_args(["run", "--calibration", _calibration(tmp_path, **record), *words, "a prompt"])
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_overrides(args)


def test_an_unreadable_calibration_is_refused_by_name(tmp_path) -> None:
    args = build_parser().parse_args(["run", "--calibration", str(tmp_path / "missing.json"), "a prompt"])
    with pytest.raises(ConfigError, match=r"missing\.json: cannot read it as JSON"):
        config_overrides(args)
