"""``scripts/torch_decoding.py``: the three ways of decoding on torch measure and agree, on a tiny model."""

from __future__ import annotations

import runpy

import pytest

from tests.paths import REPO

SCRIPT = runpy.run_path(str(REPO / "scripts" / "torch_decoding.py"), run_name="torch_decoding_test")


def test_a_static_cache_decodes_the_same_tokens_as_the_backends_dynamic_one(tiny_byte_level_model: str) -> None:
    found = SCRIPT["measure"](tiny_byte_level_model, "cpu", "float32", 8, False)
    assert [way.name for way in found] == ["eager, dynamic cache (the backend's)", "eager, static cache"]
    assert all(len(way.tokens) == 8 and way.tokens_per_second > 0 for way in found)
    assert found[1].tokens == found[0].tokens
    lines = SCRIPT["table"](found).splitlines()
    assert len(lines) == 3 and lines[1].split()[-3:] == ["8", "of", "8"] and "1.00x" in lines[1]


@pytest.mark.slow  # torch.compile takes half a minute even for a tiny model
def test_compiled_decoding_writes_the_same_tokens(tiny_byte_level_model: str) -> None:
    found = SCRIPT["measure"](tiny_byte_level_model, "cpu", "float32", 8, True)
    assert found[2].name == "compiled (default), static cache" and found[2].tokens == found[0].tokens
