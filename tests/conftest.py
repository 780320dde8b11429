"""Shared fixtures: tiny randomly initialized models wearing the real tokenizers of both families.

The tiny models run the real ``TransformersBackend`` code path (loaded from a folder with
``from_pretrained``) in well under a second, so cache, rollback and word-boundary behaviour is tested on
real transformers machinery without waiting for real weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mentorcollab_langchain.models import PACKAGED_MODELS, ensure_converted

GSM8K_NATALIA = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)


def _tiny_model_folder(root: Path, packaged_name: str) -> Path:
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = root / f"tiny-{packaged_name}"
    tokenizer = AutoTokenizer.from_pretrained(ensure_converted(PACKAGED_MODELS[packaged_name]))
    torch.manual_seed(0)
    LlamaForCausalLM(_tiny_llama_config(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _tiny_llama_config(tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )


@pytest.fixture(scope="session")
def tiny_llama2_style_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Llama wearing a Llama-2-family tokenizer: SentencePiece BPE with byte fallback whose
    normalizer prepends a dummy "▁" and whose decoder strips the first space. No Llama-2 tokenizer is
    packaged here, so it is built from the ``tokenizers`` library's components on Gemma 3's vocabulary."""
    import json

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast

    gemma = AutoTokenizer.from_pretrained(ensure_converted(PACKAGED_MODELS["gemma3-270m"]))
    spec = json.loads(gemma.backend_tokenizer.to_str())
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
    ]}
    spec["pre_tokenizer"] = None
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0},
    ]}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    folder = tmp_path_factory.mktemp("models") / "tiny-llama2-style"
    torch.manual_seed(0)
    LlamaForCausalLM(_tiny_llama_config(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_sliding_window_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Gemma 3 (its real architecture: one sliding-window layer of 8 tokens, one global layer) with
    Gemma 3's tokenizer, so prompts run past the window and a rollback must crop a full window."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    folder = tmp_path_factory.mktemp("models") / "tiny-gemma3-sliding"
    tokenizer = AutoTokenizer.from_pretrained(ensure_converted(PACKAGED_MODELS["gemma3-270m"]))
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_byte_level_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Llama with SmolLM2's byte-level BPE tokenizer and ChatML template."""
    return str(_tiny_model_folder(tmp_path_factory.mktemp("models"), "smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def tiny_sentencepiece_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Llama with Gemma 3's SentencePiece-style tokenizer (no chat template)."""
    return str(_tiny_model_folder(tmp_path_factory.mktemp("models"), "gemma3-270m"))
