"""The collaboration settings as command-line flags, generated from ``CollabConfig``'s fields.

``CollabConfig`` is the one source of every setting (DESIGN.md, "One setting, one source"): each field
becomes ``--field-name`` with the field's description as its help and its annotation as its type, so a
new setting reaches ``run``, ``eval`` and ``bench`` without touching the command line. Every flag
defaults to None: a flag left out keeps the config's default, or the command's own. Where the threshold
is a flag, ``--calibration FILE`` sets it, with its signal and random probe rate, from a
``mentorcollab calibrate --out`` record made for the same generator.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Collection, Mapping
from typing import Any, Literal, Union, get_args, get_origin

from mentorcollab_langchain.engine.config import CollabConfig
from mentorcollab_langchain.errors import ConfigError


def _policy_names() -> list[str]:
    from mentorcollab_langchain.engine.policies import NAMED_POLICIES

    return sorted(NAMED_POLICIES)


# A setting whose values come from a registry rather than its annotation (``probe_policy`` is a ``str``
# checked against the named policies), so the parser can still offer and check the choices.
REGISTERED_CHOICES = {"probe_policy": _policy_names}


def add_config_arguments(
    parser: argparse.ArgumentParser,
    *,
    only: Collection[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    notes: Mapping[str, str] | None = None,
) -> None:
    """Add one flag per ``CollabConfig`` field (or per field in ``only``) to ``parser``.

    ``defaults`` are the command's own defaults, which its help shows instead of the config's;
    ``notes`` replace that default in the help where the command treats the setting its own way.
    """
    defaults, notes = defaults or {}, notes or {}
    unknown = {*(only or ()), *defaults, *notes} - CollabConfig.model_fields.keys()
    if unknown:
        raise ValueError(f"not CollabConfig fields: {', '.join(sorted(unknown))}")
    group = parser.add_argument_group("collaboration settings")
    for name, field in CollabConfig.model_fields.items():
        if only is not None and name not in only:
            continue
        form = _argument_form(name, field.annotation)
        default = defaults.get(name, field.default)
        said = [notes.get(name) or (f"default: {default}" if default not in (None, ()) else "")]
        said += ["repeatable"] if form.get("action") == "append" else []
        note = "; ".join(part for part in said if part)
        help_text = (field.description or name) + (f" ({note})" if note else "")
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=help_text.replace("%", "%%"),
                           **form)
    if only is None or "uncertainty_threshold" in only:
        group.add_argument("--calibration", metavar="FILE",
                           help="a `mentorcollab calibrate --out` record: its uncertainty signal, threshold and random "
                                "probe rate, for the generator it was made with")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, by ``CollabConfig`` field name (flags left out are absent),
    with those of a ``--calibration`` record."""
    given = {name: getattr(args, name, None) for name in CollabConfig.model_fields}
    overrides = {name: tuple(value) if isinstance(value, list) else value
                 for name, value in given.items() if value is not None}
    if getattr(args, "calibration", None):
        from mentorcollab_langchain.evals.calibration import read_calibration

        calibrated = read_calibration(args.calibration, args.generator)
        clash = sorted(calibrated.keys() & overrides.keys())
        if clash:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in clash)
            raise ConfigError(f"--calibration {args.calibration} sets {flags}; leave {flags} out")
        overrides |= calibrated
    return overrides


def _argument_form(name: str, annotation: Any) -> dict[str, Any]:
    """How argparse reads a field of this type: choices, a yes/no pair, a repeatable string, or a number."""
    origin, members = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        present = [member for member in members if member is not type(None)]
        if len(present) == 1:
            return _argument_form(name, present[0])
    elif origin is Literal:
        return {"type": type(members[0]), "choices": list(members)}
    elif origin is tuple and members == (str, Ellipsis):
        return {"action": "append"}
    elif annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    elif annotation in (int, float, str):
        choices = REGISTERED_CHOICES.get(name)
        return {"type": annotation} | ({"choices": choices()} if choices else {})
    raise TypeError(f"CollabConfig.{name}: no command-line form for {annotation!r}; teach cli/settings.py one")
