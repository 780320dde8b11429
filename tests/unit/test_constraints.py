"""``constraints.txt`` pins what ``scripts/install.sh`` installs: every dependency, within pyproject's ranges,
and the environment running the tests is the one it describes."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

from packaging.requirements import Requirement
from packaging.version import Version

from tests.paths import REPO

NOT_PINNED = {"torch"}  # GPU users keep their own build (the file's header)


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, separator, version = line.partition("==")
        assert separator and name.strip() == name and version.strip() == version, f"not name==version: {line!r}"
        assert _name(name) not in pins, f"{name} pinned twice"
        pins[_name(name)] = Version(version)
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + [line for extra in project["optional-dependencies"].values() for line in extra]
    return [Requirement(line) for line in listed if not Requirement(line).name.startswith("mentorcollab")]


def test_each_dependency_is_pinned_within_its_declared_range() -> None:
    pins = _pins()
    for requirement in _declared():
        name = _name(requirement.name)
        if name in NOT_PINNED:
            assert name not in pins, f"{name} must stay unpinned"
            continue
        assert name in pins, f"{requirement.name} is not in constraints.txt: run scripts/lock.sh"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}"
        )


def test_the_environment_is_the_one_pinned() -> None:
    drifted = []
    for name, version in _pins().items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            drifted.append(f"{name} (pinned {version}, not installed)")
            continue
        if installed != version:
            drifted.append(f"{name} (pinned {version}, installed {installed})")
    assert not drifted, "re-run scripts/install.sh, or scripts/lock.sh once the suite passes: " + ", ".join(drifted)
