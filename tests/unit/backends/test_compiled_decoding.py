"""``torch_compile``: a static cache and a compiled one-token step, against the eager backend and a recompute.

On a tiny real model (SmolLM2's tokenizer, random weights), on the CPU. Compiling takes seconds here, so
these run in the slow set. What a GPU gains from it is measured by ``scripts/gpu-check.sh``.
"""

from __future__ import annotations

import pytest
import torch

from mentorcollab_langchain.backends import TransformersBackend
from mentorcollab_langchain.backends.sampling import Sampling
from mentorcollab_langchain.errors import ConfigError, ContextTooLongError

PROMPT = [{"role": "user", "content": "Count the apples: two red, three green."}]
STATIC_TOKENS = 128
HOT = Sampling(temperature=1.0, seed=5)  # random weights write one token over and over when greedy

pytestmark = pytest.mark.slow  # compiling the step takes seconds


@pytest.fixture(scope="module")
def backends(tiny_byte_level_model: str) -> tuple[TransformersBackend, TransformersBackend]:
    """The eager backend and the compiled one, on the same loaded model."""
    eager = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32", prefix_cache=False)
    compiled = TransformersBackend(
        tiny_byte_level_model,
        device="cpu",
        dtype="float32",
        prefix_cache=False,
        torch_compile=True,
        static_cache_tokens=STATIC_TOKENS,
    )
    return eager, compiled


def full_logits(backend: TransformersBackend, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return backend.loaded.network(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_compiled_steps_write_what_the_eager_backend_writes(backends) -> None:
    eager, compiled = backends
    cursor = compiled.open(PROMPT, sampling=HOT)
    piece = cursor.generate("", 24)
    assert piece == eager.open(PROMPT, sampling=HOT).generate("", 24)
    assert len(set(cursor.cached_ids[len(cursor.prompt_ids) :])) > 3, "a varied text, not one token repeated"
    assert type(cursor._cache).__name__ == "StaticCache"
    logits = cursor.next_token_logits(piece.text)
    torch.testing.assert_close(logits, full_logits(compiled, cursor.token_ids(piece.text)), atol=1e-4, rtol=1e-4)


def test_a_rolled_back_static_cache_answers_as_a_recompute(backends) -> None:
    """A rejected lookahead leaves stale keys past the committed text; attention must never see them."""
    _, compiled = backends
    cursor = compiled.open(PROMPT, sampling=HOT)
    committed = " Five apples in all."
    before = cursor.next_token_logits(committed).clone()
    lookahead = cursor.generate(committed, 12)
    assert lookahead.tokens == 12
    after = cursor.next_token_logits(committed)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    other = cursor.generate(committed + " No,", 6)  # writes over the stale positions
    fresh = compiled.open(PROMPT, sampling=HOT)
    assert other == fresh.generate(committed + " No,", 6)
    torch.testing.assert_close(
        cursor.next_token_logits(committed + " No," + other.text),
        full_logits(compiled, cursor.token_ids(committed + " No," + other.text)),
        atol=1e-4,
        rtol=1e-4,
    )


def test_the_first_step_compiles_and_every_later_request_shares_its_graph(tiny_byte_level_model: str) -> None:
    # bfloat16: a model loaded for no other test, so its first step here is its first ever
    compiled = TransformersBackend(
        tiny_byte_level_model, device="cpu", dtype="bfloat16", torch_compile=True, static_cache_tokens=STATIC_TOKENS
    )
    from torch._dynamo.utils import counters as dynamo_counters  # importing it takes seconds: only here

    counters = dynamo_counters["stats"]
    before = counters["unique_graphs"]
    compiled.open(PROMPT).generate("", 4)
    graphs = counters["unique_graphs"]
    assert graphs > before, "the one-token steps did not run compiled"
    for question in ("What is two and two?", "Name a green fruit.", "Where do apples grow?"):
        compiled.open([{"role": "user", "content": question}], sampling=HOT).generate("", 8)
    assert counters["unique_graphs"] == graphs, "a new request compiled again"


def test_the_static_cache_is_the_context(backends) -> None:
    _, compiled = backends
    cursor = compiled.open(PROMPT, sampling=HOT)
    with pytest.raises(ContextTooLongError, match=f"holds {STATIC_TOKENS} \\(raise static_cache_tokens\\)"):
        cursor.generate("", STATIC_TOKENS)
    with pytest.raises(ContextTooLongError, match="raise static_cache_tokens"):
        compiled.open("apple " * STATIC_TOKENS, style="raw")


def test_a_held_cache_goes_only_to_a_request_of_its_own_kind(tiny_byte_level_model: str) -> None:
    """An eager request cannot take a compiled one's static cache, nor the other way round."""
    options = {"device": "cpu", "dtype": "float32", "static_cache_tokens": STATIC_TOKENS}
    compiled = TransformersBackend(tiny_byte_level_model, torch_compile=True, **options)
    eager = TransformersBackend(tiny_byte_level_model, **options)
    compiled.loaded.held_caches.clear()
    prompt = "apple " * 70  # longer than one 64-token prompt batch, so its first batch is held
    first = compiled.open(prompt, style="raw")
    first.generate("", 2)
    first.close()
    assert len(compiled.loaded.held_caches) == 1
    assert eager.open(prompt, style="raw").tokens_cached == 0
    again = compiled.open(prompt, style="raw")
    assert again.tokens_cached == 64 and type(again._cache).__name__ == "StaticCache"
    compiled.loaded.held_caches.clear()


def test_a_static_cache_of_no_tokens_is_refused() -> None:
    with pytest.raises(ConfigError, match="static_cache_tokens must be at least 1"):
        TransformersBackend("smollm2-135m-instruct", torch_compile=True, static_cache_tokens=0)


def test_a_sliding_window_model_rolls_back_past_its_window(tiny_sliding_window_model: str) -> None:
    """Gemma 3's static sliding-window layers cannot crop a full window: the cursor starts its cache over."""
    backend = TransformersBackend(
        tiny_sliding_window_model, device="cpu", dtype="float32", torch_compile=True, static_cache_tokens=STATIC_TOKENS
    )
    prompt = "one two three four five six seven eight nine ten eleven twelve thirteen"
    cursor = backend.open(prompt, "raw")
    committed = cursor.next_word("", 4).text
    cursor.generate(committed, 10)  # a lookahead well past the 8-token window ...
    after = cursor.next_token_logits(committed)  # ... rolled back to the committed text
    torch.testing.assert_close(after, full_logits(backend, cursor.token_ids(committed)), atol=1e-4, rtol=1e-4)
    assert cursor.next_word(committed, 4) == backend.open(prompt, "raw").next_word(committed, 4)


def test_a_request_sharing_no_prompt_reuses_a_finished_requests_static_cache(backends) -> None:
    """Static caches are allocated once per model, not per request, and a reused one holds nothing stale."""
    eager, compiled = backends
    compiled.loaded.held_caches.clear()
    first = compiled.open(PROMPT, sampling=HOT)
    first.generate("", 16)
    buffers = first._cache
    first.close()
    other = [{"role": "user", "content": "Name three green fruits."}]
    second = compiled.open(other, sampling=HOT)
    assert second._cache is buffers
    assert second.generate("", 16) == eager.open(other, sampling=HOT).generate("", 16)
    compiled.loaded.held_caches.clear()


def test_the_chat_model_and_the_command_line_decode_compiled_when_asked(tiny_byte_level_model: str, capsys) -> None:
    """``torch_compile`` reaches the backends the faces build, and their answers are the eager ones."""
    import argparse
    import json

    from mentorcollab_langchain import ChatMentorCollab
    from mentorcollab_langchain.cli import main
    from mentorcollab_langchain.cli.loading import add_model_arguments, backend_label, load_models

    models = {"generator": tiny_byte_level_model, "mentor": tiny_byte_level_model, "device": "cpu", "dtype": "float32"}
    # The draws follow the model's name, here a temporary folder's, so the text (and how many words it has)
    # changes from run to run: the first word is probed whatever it is.
    options = {"temperature": 1.0, "seed": 5, "max_tokens": 12, "probe_first_word": True}
    compiled = ChatMentorCollab(torch_compile=True, **models, **options)
    backend = compiled._backend("generator")
    assert isinstance(backend, TransformersBackend) and backend.torch_compile
    answer = compiled.invoke("Count the apples.")
    assert answer.content == ChatMentorCollab(**models, **options).invoke("Count the apples.").content
    assert answer.response_metadata["mentorcollab"]["stats"]["probes"] > 0, answer.response_metadata["mentorcollab"]

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    flags = ["--generator", tiny_byte_level_model, "--mentor", tiny_byte_level_model, "--device", "cpu", "--dtype",
             "float32"]
    pair = load_models(parser.parse_args([*flags, "--torch-compile"]), report=lambda message: None)
    assert pair.generator.torch_compile and pair.mentor.torch_compile
    assert backend_label(pair.generator) == "transformers float32, compiled over a static cache of 4096 tokens"
    texts = []
    for extra in ([], ["--torch-compile"]):
        assert main(["run", "--json", *flags, "--max-new-tokens", "6", "--seed", "5", *extra, "hi"]) == 0
        texts.append(json.loads(capsys.readouterr().out)["text"])
    assert texts[0] == texts[1]
