"""The README's settings table documents every ``CollabConfig`` field, so a new setting cannot go unlisted."""

from __future__ import annotations

import re

from mentorcollab_langchain.engine import CollabConfig
from tests.paths import REPO


def test_the_readme_settings_table_names_every_field() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The method's settings (`CollabConfig`)", 1)[1].split("\n\n", 2)[1]
    listed = re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)
    assert len(listed) == len(set(listed)), "a field listed twice"
    assert set(listed) == set(CollabConfig.model_fields)
