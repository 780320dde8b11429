"""The local backend's KV-cache cursor against a full recompute, on tiny real transformers models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mentorcollab_langchain.backends import TransformersBackend
from mentorcollab_langchain.backends.sampling import Sampling
from mentorcollab_langchain.errors import ConfigError, ContextTooLongError

PROMPT = [{"role": "user", "content": "Count the apples: two red, three green."}]


@pytest.fixture(params=["tiny_byte_level_model", "tiny_sentencepiece_model"])
def backend(request: pytest.FixtureRequest) -> TransformersBackend:
    return TransformersBackend(request.getfixturevalue(request.param), device="cpu", dtype="float32")


def full_forward(backend: TransformersBackend, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and last hidden state at the final position, computed from scratch without a cache."""
    with torch.inference_mode():
        output = backend.loaded.network(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return output.logits[0, -1].float(), output.hidden_states[-1][0, -1].float()


def greedy_from_scratch(backend: TransformersBackend, ids: list[int], count: int) -> list[int]:
    ids = list(ids)
    for _ in range(count):
        ids.append(int(full_forward(backend, ids)[0].argmax()))
    return ids


@pytest.mark.slow  # several seconds: the fast set stays under two minutes
def test_cached_decoding_matches_full_recompute(backend: TransformersBackend) -> None:
    cursor = backend.open(PROMPT)
    piece = cursor.generate("", 24)
    expected = greedy_from_scratch(backend, cursor.prompt_ids, piece.tokens + 1)
    assert cursor.cached_ids == expected[:-1], "incremental greedy decoding chose other tokens than a recompute"
    assert (expected[-1] in backend.loaded.eos_ids) == piece.eos
    logits = cursor.next_token_logits(piece.text)
    torch.testing.assert_close(logits, full_forward(backend, cursor.token_ids(piece.text))[0], atol=1e-4, rtol=1e-4)


def test_rollback_after_rejected_lookahead_restores_exact_state(backend: TransformersBackend) -> None:
    cursor = backend.open(PROMPT)
    committed = " Five apples in all."
    before = cursor.next_token_logits(committed).clone()
    ids_before = list(cursor.cached_ids)

    lookahead = cursor.generate(committed, 12)  # the rejected lookahead grows the cache ...
    assert len(cursor.cached_ids) > len(ids_before)
    after = cursor.next_token_logits(committed)  # ... and moving back to the committed text crops it

    assert cursor.cached_ids == ids_before
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert lookahead.text  # the lookahead really wrote something before it was rolled back


@pytest.mark.slow
def test_rollback_past_a_full_sliding_window_matches_a_recompute(tiny_sliding_window_model: str) -> None:
    """Gemma 3's sliding-window layers cannot always crop once the window is full: the cursor must still
    roll back a rejected lookahead (as generator) and answer the next probe (as mentor) correctly."""
    backend = TransformersBackend(tiny_sliding_window_model, device="cpu", dtype="float32")
    prompt = "one two three four five six seven eight nine ten eleven twelve thirteen"
    cursor = backend.open(prompt, "raw")
    assert len(cursor.prompt_ids) > 8, "the prompt must fill the 8-token window"
    committed = cursor.next_word("", 4).text
    cursor.generate(committed, 10)  # a lookahead well past the window ...
    after = cursor.next_token_logits(committed)  # ... rolled back to the committed text
    torch.testing.assert_close(after, full_forward(backend, cursor.token_ids(committed))[0], atol=1e-4, rtol=1e-4)
    fresh = backend.open(prompt, "raw")
    assert cursor.next_word(committed, 4) == fresh.next_word(committed, 4)


def test_prefix_reuse_after_adoption_and_verifier_suffix(backend: TransformersBackend) -> None:
    cursor = backend.open(PROMPT)
    cursor.generate(" There are", 6)
    for text in [" There are five", " There are five\nNow I will choose. Option (", " There are five apples"]:
        calls = cursor.forward_calls
        logits = cursor.next_token_logits(text)
        target = cursor.token_ids(text)
        assert cursor.cached_ids == target
        assert cursor.forward_calls == calls + 1, "one forward pass over the changed tail, not a re-encode"
        torch.testing.assert_close(logits, full_forward(backend, target)[0], atol=1e-4, rtol=1e-4)


def test_label_logprobs_and_hidden_state_match_full_recompute(backend: TransformersBackend) -> None:
    cursor = backend.open(PROMPT)
    text = " My choice: Option ("
    logprobs = cursor.label_logprobs(text, ["A", "B"])
    hidden = cursor.hidden_state(text)
    logits, expected_hidden = full_forward(backend, cursor.token_ids(text))
    expected = torch.log_softmax(logits, dim=-1)
    tokenizer = backend.loaded.tokenizer
    for label, value in zip(["A", "B"], logprobs, strict=True):
        assert value == pytest.approx(float(expected[tokenizer.encode(label, add_special_tokens=False)[0]]), abs=1e-4)
    torch.testing.assert_close(torch.tensor(hidden), expected_hidden, atol=1e-4, rtol=1e-4)


def test_next_word_stops_before_a_whitespace_token(backend: TransformersBackend) -> None:
    cursor = backend.open(PROMPT)
    text = ""
    for _ in range(8):
        word = cursor.next_word(text, 12)
        if word.eos:
            break
        assert 1 <= word.tokens <= 12
        # The token the model wanted next, right after the word's own tokens, must open a new word.
        following = int(full_forward(backend, cursor.cached_ids)[0].argmax())
        if word.tokens < 12 and following not in backend.loaded.eos_ids:
            assert backend.loaded.whitespace_start[following], "a word ended before a token without whitespace"
        produced = cursor.cached_ids[len(cursor.cached_ids) - word.tokens + 1 :]
        assert not any(backend.loaded.whitespace_start[token] for token in produced), "whitespace inside a word"
        text += word.text


def test_max_word_tokens_caps_a_word(backend: TransformersBackend) -> None:
    word = backend.open(PROMPT).next_word("", 2)
    assert word.tokens <= 2


def test_max_tokens_is_a_hard_limit_even_inside_a_split_character(tiny_byte_level_model: str) -> None:
    """SmolLM2 writes " 🙂🙂" as three tokens, the second emoji split over two: a limit of two tokens
    must leave that emoji out, not run past the limit to finish it (issue 13)."""
    backend = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32")
    emoji_ids = backend.loaded.tokenizer.encode(" 🙂🙂", add_special_tokens=False)
    assert len(emoji_ids) == 3
    cursor = backend.open(PROMPT)
    forced = iter(emoji_ids)
    cursor._pick = lambda logits, text: next(forced)  # force the model to write the emoji, token by token
    piece = cursor.generate("", 2)
    assert (piece.text, piece.tokens, piece.generated) == (" 🙂", 1, 2)


@pytest.mark.slow
def test_a_dummy_prefix_tokenizer_keeps_each_words_space_and_its_cache(tiny_llama2_style_model: str) -> None:
    """The Llama-2 family's tokenizer prepends "▁" to what it encodes and strips the first space when it
    decodes: answer text must still keep every word's leading space, encode as the model wrote it (so
    the cache is reused), and a label "A" must be the token A, not ▁A (issue 13)."""
    backend = TransformersBackend(tiny_llama2_style_model, device="cpu", dtype="float32")
    tokenizer = backend.loaded.tokenizer
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("A", add_special_tokens=False)) == ["▁A"]  # the trap
    cursor = backend.open("Count the apples.", "raw")
    answer_ids = lambda text: cursor.token_ids(text)[len(cursor.prompt_ids) :]  # noqa: E731
    assert tokenizer.convert_ids_to_tokens(answer_ids("A")) == ["A"]
    assert tokenizer.convert_ids_to_tokens(answer_ids(" Five apples")) == ["▁Five", "▁apples"]

    next_ids = tokenizer.convert_tokens_to_ids(["▁Five", "▁apples", "▁left"])
    written = dict(zip(["", " Five", " Five apples"], next_ids, strict=True))
    cursor._pick = lambda logits, text: written[text]  # the model writes " Five apples left"
    first = cursor.next_word("", 4)
    second = cursor.next_word(first.text, 4)
    assert (first.text, second.text) == (" Five", " apples")
    read = cursor.tokens_read
    cursor.next_token_logits(first.text + second.text)
    assert cursor.tokens_read == read, "the text the model wrote must encode to the ids it holds: no re-read"


def test_prompt_longer_than_context_is_refused(tiny_byte_level_model: str) -> None:
    backend = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32")
    with pytest.raises(ContextTooLongError, match="holds 256"):
        backend.open("apples " * 400)


def test_generation_past_context_is_refused(tiny_byte_level_model: str) -> None:
    backend = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32")
    cursor = backend.open("apples")
    with pytest.raises(ContextTooLongError):
        cursor.generate(" pears" * 300, 4)


def test_bad_device_and_dtype_fail_at_construction() -> None:
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        TransformersBackend("smollm2-135m-instruct", device="tpu")
    with pytest.raises(ConfigError, match="unknown dtype 'int8'"):
        TransformersBackend("smollm2-135m-instruct", dtype="int8")


def test_raw_prompt_style_skips_the_chat_template(tiny_byte_level_model: str) -> None:
    backend = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32")
    raw = backend.loaded.tokenizer.decode(backend.prompt_ids("Question: 2+2?\nAnswer:", "raw"))
    chat = backend.loaded.tokenizer.decode(backend.prompt_ids("Question: 2+2?\nAnswer:", "chat"))
    assert raw == "Question: 2+2?\nAnswer:"
    assert "<|im_start|>assistant" in chat


def test_sampling_is_fixed_by_the_seed(backend: TransformersBackend) -> None:
    hot = Sampling(temperature=1.5, seed=7)
    whole = backend.open(PROMPT, sampling=hot).generate("", 16)
    assert backend.open(PROMPT, sampling=hot).generate("", 16) == whole
    others = {backend.open(PROMPT, sampling=Sampling(1.5, seed)).generate("", 16).text for seed in range(4)}
    assert len(others) > 1, "the seed must change what is sampled"
    greedy = backend.open(PROMPT).generate("", 16)
    assert greedy != whole
    assert backend.open(PROMPT, sampling=Sampling(temperature=1e-4, seed=3)).generate("", 16) == greedy


# Four live tokens with logits 2, 1, 0, -1, scattered among impossible ones, as in a real vocabulary.
LIVE_TOKENS = {3: 2.0, 11: 1.0, 12: 0.0, 30: -1.0}
DRAWS = 4000


def chi_square_p_value_3_dof(statistic: float) -> float:
    """P(X >= statistic) for a chi-square variable with 3 degrees of freedom (closed form)."""
    return math.erfc(math.sqrt(statistic / 2)) + math.sqrt(2 * statistic / math.pi) * math.exp(-statistic / 2)


def chi_square(counts: list[int], probabilities: list[float]) -> float:
    total = sum(counts)
    return sum((count - total * p) ** 2 / (total * p) for count, p in zip(counts, probabilities, strict=True))


def softmax(logits: list[float], temperature: float) -> list[float]:
    weights = [math.exp(logit / temperature) for logit in logits]
    return [weight / sum(weights) for weight in weights]


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sampling_follows_the_temperature(backend: TransformersBackend, temperature: float) -> None:
    """4000 seeded draws from fixed logits land on each token as often as softmax(logits / T) says.

    The draws are fixed by the seed, so the test is deterministic; the bound is a chi-square test at a
    p-value of 1e-6. The last lines check that the same counts reject, far below that, what a sampler
    that ignored the temperature (T = 1) or multiplied by it (T' = 1 / T) would draw."""
    logits = np.full(32, -np.inf)
    for token, logit in LIVE_TOKENS.items():
        logits[token] = logit
    cursor = backend.open(PROMPT, sampling=Sampling(temperature=temperature, seed=0))
    picks = [cursor._pick(logits, f" draw {index}") for index in range(DRAWS)]  # the cursor's own sampler
    assert set(picks) <= set(LIVE_TOKENS), "an impossible token was drawn"
    counts = [picks.count(token) for token in LIVE_TOKENS]
    expected = softmax(list(LIVE_TOKENS.values()), temperature)
    assert chi_square_p_value_3_dof(chi_square(counts, expected)) > 1e-6, (counts, expected)
    for wrong in (1.0, 1 / temperature):  # temperature ignored; multiplied instead of divided
        statistic = chi_square(counts, softmax(list(LIVE_TOKENS.values()), wrong))
        assert chi_square_p_value_3_dof(statistic) < 1e-12, f"{DRAWS} draws cannot tell T={temperature} from {wrong}"


def test_confidence_is_read_from_the_first_tokens_distribution(backend: TransformersBackend) -> None:
    cursor = backend.open(PROMPT)
    word = cursor.next_word(" Five", 8, with_confidence=True)
    probabilities = torch.softmax(full_forward(backend, cursor.token_ids(" Five"))[0].double(), dim=-1)
    top = torch.topk(probabilities, 2).values
    assert word.confidence is not None
    assert word.confidence.top_probability == pytest.approx(float(top[0]), rel=1e-4)
    assert word.confidence.runner_up_probability == pytest.approx(float(top[1]), rel=1e-4)
    entropy = float(-(probabilities * probabilities.log()).nansum())
    assert word.confidence.entropy == pytest.approx(entropy, rel=1e-4)
    again = cursor.next_word(" Five", 8, with_confidence=True)  # asked again: the same word and confidence
    assert again.text == word.text and again.confidence is not None
    assert again.confidence.top_probability == pytest.approx(word.confidence.top_probability, rel=1e-4)
    assert cursor.next_word(" Five", 8).confidence is None


def test_score_continuation_adds_up_each_tokens_log_probability(backend: TransformersBackend) -> None:
    cursor = backend.open(PROMPT)
    text, continuation = " Five apples", " in all, I think."
    cursor.generate(text, 6)  # the cache holds an unrelated lookahead to roll back first
    score = cursor.score_continuation(text, continuation)
    target, prefix = cursor.token_ids(text + continuation), cursor.token_ids(text)
    assert target[: len(prefix)] == prefix
    expected = 0.0
    for position in range(len(prefix), len(target)):
        logprobs = torch.log_softmax(full_forward(backend, target[:position])[0], dim=-1)
        expected += float(logprobs[target[position]])
    assert score.tokens == len(target) - len(prefix)
    assert score.logprob == pytest.approx(expected, abs=1e-3)
    assert cursor.score_continuation(text, "").tokens == 0


def test_the_models_own_lookahead_is_scored_without_reading_it_again(tiny_byte_level_model: str) -> None:
    backend = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32")
    writer, fresh = backend.open(PROMPT), backend.open(PROMPT)
    text = " Five apples"
    own = writer.generate(text, 6).text
    read = writer.tokens_read
    score = writer.score_continuation(text, own)
    assert writer.tokens_read == read, "the logprobs came from the passes that wrote it"
    expected = fresh.score_continuation(text, own)  # read afresh, in one pass
    assert score.tokens == expected.tokens == 6
    assert score.logprob == pytest.approx(expected.logprob, abs=1e-4)

    writer.next_word(text + " and", 4)  # a rollback: the lookahead leaves the cache, and its logprobs with it
    read = writer.tokens_read
    assert writer.score_continuation(text, own).logprob == pytest.approx(expected.logprob, abs=1e-4)
    assert writer.tokens_read > read


def test_tokens_read_counts_what_the_model_read_but_did_not_write(tiny_byte_level_model: str) -> None:
    # Byte-level BPE re-encodes a decoded word to the same tokens, so the counts are exact here.
    cursor = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32").open(PROMPT)
    word = cursor.next_word("", 8)
    assert cursor.tokens_read == len(cursor.prompt_ids)  # the prompt, read once
    cursor.next_word(word.text, 8)
    assert cursor.tokens_read == len(cursor.prompt_ids)  # its own word was already in the cache
    adopted = " seven pears"
    cursor.next_word(word.text + adopted, 8)
    read = len(cursor.prompt_ids)
    ids = cursor.token_ids(word.text + adopted)
    own = cursor.token_ids(word.text)
    common = next((i for i, (a, b) in enumerate(zip(ids, own, strict=False)) if a != b), min(len(ids), len(own)))
    assert cursor.tokens_read == read + len(ids) - common  # only the other model's text, from where it differs
