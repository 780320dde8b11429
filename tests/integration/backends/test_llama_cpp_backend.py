"""The llama.cpp backend's cursor against full recomputes, on the real packaged GGUF models.

The 135M generator loads in a fraction of a second, so its tests run in the fast set; the ones that load
the 1.5B mentor are marked slow.

"The same state" here means the same next-token distribution up to llama.cpp's numeric noise: its
quantized matrix products take different code paths for different batch sizes, so one text fed in one
batch and the same text fed in pieces give logits that differ by up to about a logit (measured: 0.66 on
SmolLM2) while being exactly equal in most positions. A cache bug (a stale entry, a wrong position)
moves whole distributions, far beyond that noise; the tolerances below sit between the two.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by scripts/install.sh")

from mentorcollab_langchain.backends import LlamaCppBackend, TransformersBackend, make_backend
from mentorcollab_langchain.backends.base import Conversation
from mentorcollab_langchain.backends.llama_cpp import LlamaCppCursor, _load_chat_tokenizer
from mentorcollab_langchain.backends.local import READ_PROMPT_STEP_TOKENS, log_softmax
from mentorcollab_langchain.backends.prompts import render_chat
from mentorcollab_langchain.backends.sampling import Sampling
from mentorcollab_langchain.errors import BackendError, ConfigError, ContextTooLongError, UnknownModelError
from mentorcollab_langchain.models import PACKAGED_MODELS
from mentorcollab_langchain.models.registry import is_installed

GENERATOR = "smollm2-135m-instruct"
MENTOR = "qwen2.5-coder-1.5b-instruct"
PROMPT = [{"role": "user", "content": "Count the apples: two red, three green."}]
# Digits, accents, a symbol and newlines: where BPE implementations are most likely to disagree.
HARD_PROMPT = Conversation(
    messages=(
        {"role": "system", "content": "Answer briefly.\n\nUse plain words."},
        {
            "role": "user",
            "content": "Natalia sold 48 clips in April (½ as many in May) at the café, 12.5€ each:  total?",
        },
    ),
    tools=({"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}},),
)

# One thread: the tests share two cores with other work, and llama.cpp's threads wait for each other at
# every step, so a second thread that loses its core stalls both (5x slower than one thread here).
THREADS = 1
# Total variation distance between two next-token distributions that counts as "the same state".
SAME_STATE_TV = 0.05
# How far (in logits) a token may lag the argmax of a recompute and still count as a tie llama.cpp's
# batching noise may flip.
TIE_LOGITS = 1.0


def needs(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not is_installed(PACKAGED_MODELS[name]), reason=f"{name} is not installed")


@pytest.fixture(scope="module")
def generator() -> LlamaCppBackend:
    if not is_installed(PACKAGED_MODELS[GENERATOR]):
        pytest.skip(f"{GENERATOR} is not installed")
    return LlamaCppBackend(GENERATOR, n_ctx=1024, n_threads=THREADS)


@pytest.fixture(scope="module")
def mentor() -> LlamaCppBackend:
    if not is_installed(PACKAGED_MODELS[MENTOR]):
        pytest.skip(f"{MENTOR} is not installed")
    return LlamaCppBackend(MENTOR, n_ctx=1024, n_threads=THREADS)


def recompute(cursor: LlamaCppCursor, ids: list[int]) -> np.ndarray:
    """Next-token logits after ``ids`` from an emptied cache, all of them fed in one pass."""
    cursor._crop(0)
    return cursor._move_to(ids).copy()


def total_variation(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * float(np.abs(np.exp(log_softmax(a)) - np.exp(log_softmax(b))).sum())


def assert_same_state(logits: np.ndarray, expected: np.ndarray) -> None:
    assert total_variation(logits, expected) < SAME_STATE_TV
    chosen = int(logits.argmax())
    assert expected[chosen] >= expected.max() - TIE_LOGITS, (
        "the cursor's top token is not a near-tie of the recompute's"
    )


def assert_greedy_along(backend: LlamaCppBackend, prompt_ids: list[int], ids: list[int]) -> None:
    """Every token the cursor appended to ``prompt_ids`` is a recompute's argmax (or a near-tie of it)."""
    reference = backend.open(PROMPT)
    for position in range(len(prompt_ids), len(ids)):
        expected = recompute(reference, ids[:position])
        assert expected[ids[position]] >= expected.max() - TIE_LOGITS, f"token {position} is not greedy"
    reference.close()


# -- prompts and tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [GENERATOR, pytest.param(MENTOR, marks=pytest.mark.slow)])
def test_rendered_prompt_ids_match_the_transformers_tokenizer(name: str) -> None:
    if not is_installed(PACKAGED_MODELS[name]):
        pytest.skip(f"{name} is not installed")
    backend = LlamaCppBackend(name, n_ctx=1024, n_threads=THREADS)
    tokenizer = backend.loaded.chat_tokenizer
    for prompt in (PROMPT, HARD_PROMPT):
        expected = tokenizer.encode(render_chat(tokenizer, prompt), add_special_tokens=False)
        assert backend.prompt_ids(prompt) == expected
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == backend.prompt_ids(PROMPT)[0], "one special token"
    # Known difference, left out: llama.cpp splits " ½" (a space before a vulgar fraction) as "Ġ" + "Â½"
    # where transformers gives "ĠÂ" + "½". The prompt above has "(½", which both split alike.
    for text in (" There are 5 apples.", "\n\nStep 1: 48/2 = 24", " naïve café €"):
        assert backend.loaded.tokenize(text, add_special=False) == tokenizer.encode(text, add_special_tokens=False)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn in backend.loaded.eog_ids


@pytest.mark.slow  # several seconds: the fast set stays under two minutes
def test_chat_tokenizer_comes_from_the_gguf_without_converting_weights(
    generator: LlamaCppBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MENTORCOLLAB_CACHE", str(tmp_path))  # nothing converted, nothing saved yet
    loaded = generator.loaded
    first = _load_chat_tokenizer(loaded.packaged, loaded.path)
    saved = list((tmp_path / "tokenizers").iterdir())
    assert len(saved) == 1 and not (tmp_path / "models").exists(), "only the tokenizer is saved, no weights"
    again = _load_chat_tokenizer(loaded.packaged, loaded.path)
    assert render_chat(again, HARD_PROMPT) == render_chat(first, HARD_PROMPT)
    text = render_chat(again, HARD_PROMPT)
    assert loaded.tokenize(text, add_special=False) == again.encode(text, add_special_tokens=False)


def test_raw_prompt_style_skips_the_chat_template(generator: LlamaCppBackend) -> None:
    raw = b"".join(generator.loaded.piece(token) for token in generator.prompt_ids("Question: 2+2?\nAnswer:", "raw"))
    chat = b"".join(generator.loaded.piece(token) for token in generator.prompt_ids("Question: 2+2?\nAnswer:"))
    assert raw == b"Question: 2+2?\nAnswer:"
    assert chat.endswith(b"<|im_start|>assistant\n")


def test_word_table_marks_whitespace_led_tokens(generator: LlamaCppBackend) -> None:
    loaded = generator.loaded
    for text, starts in ((" apples", True), ("apples", False), ("\nThe", True), ("<|im_end|>", False)):
        token = loaded.tokenize(text, add_special=False)[0]
        assert loaded.whitespace_start[token] == starts, text


# -- the cache ------------------------------------------------------------------------------------


@pytest.mark.slow  # several seconds: the fast set stays under two minutes
def test_cached_decoding_matches_full_recompute(generator: LlamaCppBackend) -> None:
    cursor = generator.open(PROMPT)
    piece = cursor.generate("", 16)
    assert piece.tokens == len(cursor.cached_ids) - len(cursor.prompt_ids)
    assert_greedy_along(generator, cursor.prompt_ids, cursor.cached_ids)
    fresh = generator.open(PROMPT)
    assert_same_state(cursor.next_token_logits(piece.text), fresh.next_token_logits(piece.text))
    assert fresh.cached_ids == cursor.cached_ids, "the text re-tokenizes to the generated tokens"


@pytest.mark.slow  # several seconds: the fast set stays under two minutes
def test_greedy_words_and_segment_equal_an_uninterrupted_decode(generator: LlamaCppBackend) -> None:
    cursor = generator.open(PROMPT)
    words = ""
    for _ in range(4):
        words += cursor.next_word(words, 12).text
    segment = cursor.generate(words, 12)
    assert_greedy_along(generator, cursor.prompt_ids, cursor.cached_ids)
    whole = generator.open(PROMPT).generate("", len(cursor.cached_ids) - len(cursor.prompt_ids))
    assert whole.text == words + segment.text


def test_rollback_after_rejected_lookahead_restores_the_state(generator: LlamaCppBackend) -> None:
    cursor = generator.open(PROMPT)
    committed = " There are five apples, and"
    before = cursor.next_token_logits(committed)
    ids_before = list(cursor.cached_ids)

    lookahead = cursor.generate(committed, 12)  # the rejected lookahead grows the cache ...
    assert lookahead.text and len(cursor.cached_ids) > len(ids_before)
    after = cursor.next_token_logits(committed)  # ... and moving back to the committed text crops it

    assert cursor.cached_ids == ids_before
    assert_same_state(after, before)
    assert_same_state(after, generator.open(PROMPT).next_token_logits(committed))


def test_text_after_rollback_and_refeed_equals_uninterrupted(generator: LlamaCppBackend) -> None:
    uninterrupted = generator.open(PROMPT).generate("", 24)

    cursor = generator.open(PROMPT)
    text = ""
    for _ in range(3):
        text += cursor.next_word(text, 12).text
    cursor.generate(text + " However, we", 10)  # a lookahead from text the generator did not write
    rest = cursor.generate(text, 24 - (len(cursor.token_ids(text)) - len(cursor.prompt_ids)))
    assert text + rest.text == uninterrupted.text


def test_prefix_reuse_after_adoption_and_verifier_suffix(generator: LlamaCppBackend) -> None:
    cursor = generator.open(PROMPT)
    cursor.generate(" There are", 6)
    reference = generator.open(PROMPT)
    for text in [" There are five", " There are five\nNow I will choose. Option (", " There are five apples"]:
        calls = cursor.decode_calls
        logits = cursor.next_token_logits(text)
        target = cursor.token_ids(text)
        assert cursor.cached_ids == target
        assert cursor.decode_calls == calls + 1, "one decode over the changed tail, not a re-encode"
        assert_same_state(logits, recompute(reference, target))


def test_tokens_read_counts_every_token_fed_but_not_generated(generator: LlamaCppBackend) -> None:
    cursor = generator.open(PROMPT)
    assert cursor.tokens_read == 0
    word = cursor.next_word("", 12)
    assert cursor.tokens_read == len(cursor.prompt_ids), "first call: exactly the prompt"

    cursor.generate(word.text, 8)
    assert cursor.tokens_read == len(cursor.prompt_ids), "its own words are already in the cache"

    # The mentor's words replace the generated segment: read from the point where the two diverge.
    kept = cursor.token_ids(word.text)
    adopted = cursor.token_ids(word.text + " Seven pears")
    assert adopted[: len(kept)] == kept and cursor.cached_ids[len(kept)] != adopted[len(kept)]
    before = cursor.tokens_read
    cursor.next_word(word.text + " Seven pears", 12)
    assert cursor.tokens_read == before + len(adopted) - len(kept)

    before = cursor.tokens_read
    cursor.next_token_logits(word.text)  # a pure rollback re-reads the last kept token, for its logits
    assert cursor.tokens_read == before + 1

    before = cursor.tokens_read
    score = cursor.score_continuation(word.text, " Seven")
    assert cursor.tokens_read == before + score.tokens + 1, "a scored continuation is read, with the token before it"


# -- scores, confidence, sampling -----------------------------------------------------------------


def test_score_continuation_equals_the_stepwise_sum(generator: LlamaCppBackend) -> None:
    cursor = generator.open(PROMPT)
    text, continuation = " There are", " five apples in the basket."
    score = cursor.score_continuation(text, continuation)
    target = cursor.token_ids(text + continuation)
    start = len(cursor.token_ids(text))
    assert score.tokens == len(target) - start == 6

    stepper = generator.open(PROMPT)
    stepwise = 0.0
    for position in range(start, len(target)):
        stepwise += float(log_softmax(stepper._move_to(target[:position]))[target[position]])
    assert score.logprob == pytest.approx(stepwise, abs=0.05 * score.tokens)
    assert len(stepper.prompt_ids) <= READ_PROMPT_STEP_TOKENS  # the prompt is one batch of its own
    assert stepper.decode_calls == 1 + score.tokens, "the stepper read the prompt, the text, then one token a step"


def test_the_models_own_lookahead_is_scored_from_the_decode_that_wrote_it(generator: LlamaCppBackend) -> None:
    writer = generator.open(PROMPT)
    text = " There are"
    own = writer.generate(text, 8).text
    read = writer.tokens_read
    score = writer.score_continuation(text, own)
    assert writer.tokens_read == read, "nothing read again"
    expected = generator.open(PROMPT).score_continuation(text, own)  # read afresh in one batch
    assert score.tokens == expected.tokens == 8
    # Written one token a batch, read again in one batch: equal up to the batch noise (module docstring).
    assert score.logprob == pytest.approx(expected.logprob, abs=0.05 * score.tokens)


def test_label_logprobs_agree_with_a_one_token_continuation(generator: LlamaCppBackend) -> None:
    cursor = generator.open(PROMPT)
    text = " Five.\nNow I will choose. Option (A): five, Option (B): six. My choice: Option ("
    a, b = cursor.label_logprobs(text, ["A", "B"])
    assert a < 0 and b < 0 and a != b
    for label, value in (("A", a), ("B", b)):
        score = generator.open(PROMPT).score_continuation(text, label)
        assert score.tokens == 1
        assert score.logprob == pytest.approx(value, abs=0.05)


def test_confidence_is_read_at_the_greedy_words_first_token(generator: LlamaCppBackend) -> None:
    cursor = generator.open(PROMPT)
    text = " There are"
    word = cursor.next_word(text, 12, with_confidence=True)
    confidence = word.confidence
    assert confidence is not None and word.tokens >= 1
    first = cursor.cached_ids[len(cursor.token_ids(text))]
    probabilities = np.exp(log_softmax(generator.open(PROMPT).next_token_logits(text)))
    assert probabilities[first] == pytest.approx(confidence.top_probability, abs=0.02)
    assert confidence.top_probability >= confidence.runner_up_probability > 0
    assert 0 < confidence.entropy < np.log(len(probabilities))
    assert word.text.startswith(generator.loaded.piece(first).decode())


def test_next_word_stops_before_a_whitespace_token(generator: LlamaCppBackend) -> None:
    cursor = generator.open(PROMPT)
    text = ""
    table = generator.loaded.whitespace_start
    for _ in range(8):
        word = cursor.next_word(text, 12)
        if word.eos:
            break
        assert 1 <= word.tokens <= 12
        produced = cursor.cached_ids[len(cursor.cached_ids) - word.tokens + 1 :]
        assert not any(table[token] for token in produced), "whitespace inside a word"
        following = int(cursor.next_token_logits(text + word.text).argmax())
        if word.tokens < 12 and following not in generator.loaded.eog_ids:
            assert table[following], "a word ended before a token without whitespace"
        text += word.text
    assert text.strip()


def test_max_word_tokens_caps_a_word(generator: LlamaCppBackend) -> None:
    assert generator.open(PROMPT).next_word("", 1).tokens == 1


def test_generate_cuts_at_a_stop_string(generator: LlamaCppBackend) -> None:
    whole = generator.open(PROMPT).generate("", 24)
    marker = whole.text.split()[2]
    cut = generator.open(PROMPT).generate("", 24, stop=[marker])
    assert marker not in cut.text and whole.text.startswith(cut.text) and cut.tokens < whole.tokens


@pytest.mark.slow  # several seconds: the fast set stays under two minutes
def test_sampling_draws_like_the_transformers_backend(generator: LlamaCppBackend) -> None:
    hot = Sampling(temperature=1.5, seed=7)
    whole = generator.open(PROMPT, sampling=hot).generate("", 16)
    assert generator.open(PROMPT, sampling=hot).generate("", 16) == whole
    others = {generator.open(PROMPT, sampling=Sampling(1.5, seed)).generate("", 16).text for seed in range(4)}
    assert len(others) > 1, "the seed must change what is sampled"
    greedy = generator.open(PROMPT).generate("", 16)
    assert generator.open(PROMPT, sampling=Sampling(temperature=1e-4, seed=3)).generate("", 16) == greedy

    # The documented draw, computed here independently of the backends' shared code: the token where the
    # cumulative distribution at the temperature first passes the uniform draw for (seed, model, text).
    cursor = generator.open(PROMPT, sampling=Sampling(temperature=1.5, seed=0))
    logits = cursor.next_token_logits("")
    cumulative = torch.cumsum(torch.softmax(torch.from_numpy(logits).double() / 1.5, dim=-1), dim=-1)
    for index in range(200):
        text = f" draw {index}"
        expected = int(torch.searchsorted(cumulative, torch.tensor([cursor.draw(text)],
                                                                    dtype=torch.float64)))
        assert cursor._pick(logits, text) == min(expected, len(cumulative) - 1)


def test_sampling_draws_follow_the_prompt_as_well_as_the_answer(generator: LlamaCppBackend) -> None:
    """Two requests with the same seed and different prompts must not share their draws (issue 13)."""
    hot = Sampling(temperature=1.5, seed=5)
    first, again = generator.open(PROMPT, sampling=hot), generator.open(PROMPT, sampling=hot)
    other = generator.open("Name a colour.", sampling=hot)
    texts = ["", " a", " a b"]
    assert [first.draw(text) for text in texts] == [again.draw(text) for text in texts]
    assert all(first.draw(text) != other.draw(text) for text in texts)


# -- limits and errors ----------------------------------------------------------------------------


def test_prompt_longer_than_context_is_refused() -> None:
    with pytest.raises(ContextTooLongError, match="holds 64"):
        LlamaCppBackend(GENERATOR, n_ctx=64, n_threads=THREADS).open("apples " * 100)


def test_an_empty_raw_prompt_is_refused(generator: LlamaCppBackend) -> None:
    with pytest.raises(ConfigError, match="no tokens"):
        generator.open("", "raw")  # SmolLM2 adds no BOS, so nothing would precede the first token


def test_generation_past_context_is_refused() -> None:
    cursor = LlamaCppBackend(GENERATOR, n_ctx=64, n_threads=THREADS).open("apples")
    with pytest.raises(ContextTooLongError):
        cursor.generate(" pears" * 80, 4)


def test_hidden_state_points_to_the_transformers_backend(generator: LlamaCppBackend) -> None:
    with pytest.raises(BackendError, match="transformers backend"):
        generator.open(PROMPT).hidden_state("")


def test_a_closed_cursor_refuses_work(generator: LlamaCppBackend) -> None:
    cursor = generator.open(PROMPT)
    cursor.next_word("", 2)
    cursor.close()
    cursor.close()  # closing twice is harmless
    with pytest.raises(BackendError, match="closed"):
        cursor.next_word("", 2)


def test_only_packaged_models_load() -> None:
    with pytest.raises(UnknownModelError):
        LlamaCppBackend("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_make_backend_picks_llama_cpp_for_packaged_models_on_cpu() -> None:
    assert isinstance(make_backend(GENERATOR, device="cpu"), LlamaCppBackend)
    assert isinstance(make_backend(GENERATOR, "transformers", device="cpu"), TransformersBackend)
    assert isinstance(make_backend(GENERATOR, device="cpu", dtype="float32"), TransformersBackend)
    assert isinstance(make_backend("HuggingFaceTB/SmolLM2-135M-Instruct", device="cpu"), TransformersBackend)
    assert isinstance(make_backend(GENERATOR, "llama.cpp"), LlamaCppBackend)
    with pytest.raises(ConfigError, match="backend='transformers'"):
        make_backend(GENERATOR, "llama.cpp", dtype="bfloat16")
    compiled = make_backend(GENERATOR, device="cpu", torch_compile=True)  # only torch compiles
    assert isinstance(compiled, TransformersBackend) and compiled.torch_compile
    with pytest.raises(ConfigError, match=r"torch_compile compiles .* needs backend='transformers'"):
        make_backend(GENERATOR, "llama.cpp", torch_compile=True)
    with pytest.raises(ConfigError, match="unknown backend"):
        make_backend(GENERATOR, "vllm")


# -- the real mentor (slow) -----------------------------------------------------------------------


@pytest.mark.slow
def test_mentor_cursor_matches_recompute_after_rollback(mentor: LlamaCppBackend) -> None:
    cursor = mentor.open(PROMPT)
    word = cursor.next_word("", 12, with_confidence=True)
    assert word.confidence is not None and word.text.strip()
    segment = cursor.generate(word.text, 8)
    assert_greedy_along(mentor, cursor.prompt_ids, cursor.cached_ids)
    assert mentor.open(PROMPT).generate("", word.tokens + segment.tokens).text == word.text + segment.text

    after = cursor.next_token_logits(word.text)  # roll back the segment
    assert_same_state(after, mentor.open(PROMPT).next_token_logits(word.text))

    text = word.text + " apples"
    score = cursor.score_continuation(text, " in total.")
    stepper = mentor.open(PROMPT)
    target = stepper.token_ids(text + " in total.")
    start = len(stepper.token_ids(text))
    stepwise = sum(float(log_softmax(stepper._move_to(target[:p]))[target[p]]) for p in range(start, len(target)))
    assert score.logprob == pytest.approx(stepwise, abs=0.05 * score.tokens)


@pytest.mark.slow
@needs("gemma3-270m")
def test_sentencepiece_base_model_with_sliding_window_rolls_back() -> None:
    """Gemma 3: SentencePiece word starts (▁), no chat template, sliding-window layers kept croppable."""
    from transformers import AutoTokenizer

    from mentorcollab_langchain.models.registry import ensure_converted

    backend = LlamaCppBackend("gemma3-270m", n_ctx=1024, n_threads=THREADS)
    prompt = "Question: Anna has two red apples and three green apples. How many apples does she have?\nAnswer:"
    tokenizer = AutoTokenizer.from_pretrained(ensure_converted(PACKAGED_MODELS["gemma3-270m"]))
    assert backend.prompt_ids(prompt, "raw") == tokenizer.encode(prompt, add_special_tokens=True)
    assert backend.prompt_ids(prompt) == backend.prompt_ids(f"User: {prompt}\n\nAssistant:", "raw"), "no template"

    cursor = backend.open(prompt, "raw")
    word = cursor.next_word("", 12)
    segment = cursor.generate(word.text, 10)
    regenerated = backend.open(prompt, "raw").generate("", word.tokens + segment.tokens)
    assert segment.text and regenerated.text == word.text + segment.text
    table = backend.loaded.whitespace_start
    assert table[backend.loaded.tokenize(" apples", add_special=False)[0]]
    assert not table[backend.loaded.tokenize("apples", add_special=False)[0]]
    after = cursor.next_token_logits(word.text)
    assert_same_state(after, backend.open(prompt, "raw").next_token_logits(word.text))


@pytest.mark.slow
def test_engine_runs_on_both_llama_cpp_models(generator: LlamaCppBackend, mentor: LlamaCppBackend) -> None:
    from mentorcollab_langchain.engine import CollabConfig, CollabState, TextCommitted, collaborate
    from tests.conftest import GSM8K_NATALIA

    state = CollabState()
    config = CollabConfig(probe_rate=0.5, max_new_tokens=24, seed=0)
    events = list(collaborate(GSM8K_NATALIA, generator, mentor, config=config, state=state))
    stats = state.stats
    assert state.text.strip() and "".join(e.text for e in events if isinstance(e, TextCommitted)) == state.text
    assert stats.probes >= 1 and stats.mentor_tokens_generated >= stats.probes
    assert stats.mentor_tokens_read >= len(mentor.prompt_ids(GSM8K_NATALIA)), "the mentor read its prompt at least"
    assert stats.generator_tokens_read >= len(generator.prompt_ids(GSM8K_NATALIA))
