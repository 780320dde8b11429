"""A model's identity is its weights: the same weights under another name pass, other weights under the same
name do not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mentorcollab_langchain.errors import UnknownModelError
from mentorcollab_langchain.models import PACKAGED_MODELS
from mentorcollab_langchain.models.identity import weights_sha256
from mentorcollab_langchain.models.registry import CONVERSION_MARKER

SMOLLM = PACKAGED_MODELS["smollm2-135m-instruct"]


def weights_folder(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(content)
    (folder / "config.json").write_text("{}")
    return folder


def test_a_packaged_model_is_its_pinned_gguf() -> None:
    assert weights_sha256("smollm2-135m-instruct") == SMOLLM.sha256
    assert weights_sha256("gemma3-270m") != SMOLLM.sha256


def test_a_folder_is_its_weights_wherever_it_lies(tmp_path: Path) -> None:
    original = weights_folder(tmp_path / "a" / "model", b"weights one")
    copy = Path(shutil.copytree(original, tmp_path / "b" / "elsewhere"))
    other = weights_folder(tmp_path / "c" / "model", b"weights two")  # the same folder name, other weights
    assert weights_sha256(str(original)) == weights_sha256(str(copy))
    assert weights_sha256(str(other)) != weights_sha256(str(original))
    (copy / "config.json").write_text('{"changed": true}')  # only the weights name the model
    assert weights_sha256(str(copy)) == weights_sha256(str(original))


def test_a_converted_packaged_model_is_the_gguf_it_came_from(tmp_path: Path) -> None:
    converted = weights_folder(tmp_path / "converted", b"dequantized")
    (converted / CONVERSION_MARKER).write_text(json.dumps({"model": SMOLLM.name, "sha256": SMOLLM.sha256}))
    assert weights_sha256(str(converted)) == SMOLLM.sha256
    # a record that does not match the pin is no conversion of that model: the folder is hashed as it is
    (converted / CONVERSION_MARKER).write_text(json.dumps({"model": SMOLLM.name, "sha256": "0" * 64}))
    assert weights_sha256(str(converted)) not in (SMOLLM.sha256, "0" * 64)


def test_a_model_that_cannot_be_hashed_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownModelError, match="no safetensors files"):
        weights_sha256(str(tmp_path / "empty"))
    with pytest.raises(UnknownModelError, match="neither a packaged model, a local folder"):
        weights_sha256("nobody/no-such-model-here")
