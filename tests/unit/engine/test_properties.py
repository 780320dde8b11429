"""Property-based tests of the engine's invariants, on the scripted backend and on a tiny real model.

Whatever the answers, settings, verifier and failures, a finished run must keep its books: provenance
spans partition the text, the counters add up, the mentor's share is a share, what was streamed is
the text, and a state serialized after any step and resumed on fresh cursors finishes as the
uninterrupted run: exactly on the scripted backend, to floating-point rounding of the scores on real models.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mentorcollab_langchain.backends import ScriptedBackend, TransformersBackend
from mentorcollab_langchain.engine import CollabConfig, CollabState, TextCommitted, collaborate, open_team
from mentorcollab_langchain.engine.steps import STEPS, next_step
from mentorcollab_langchain.errors import MentorCollabError

WORDS = ["a", "b", "cc", "d.", "e\n", "f,", "7"]
answers = st.lists(st.sampled_from(WORDS), min_size=0, max_size=24).map(" ".join)
configs = st.builds(
    CollabConfig,
    probe_policy=st.sampled_from(["random", "uncertain"]),
    probe_rate=st.floats(0.0, 1.0),
    uncertainty_threshold=st.floats(0.5, 1.0),
    segment_tokens=st.integers(1, 6),
    max_new_tokens=st.integers(1, 40),
    seed=st.integers(0, 2**31),
    match=st.sampled_from(["exact", "normalized"]),
    stop=st.sampled_from([(), ("cc",), ("d.\n",), ("7", "b b")]),
    repetition_guard=st.booleans(),
    max_mentor_calls=st.none() | st.integers(0, 6),
    max_mentor_tokens=st.none() | st.integers(0, 12),
)
verifiers = st.sampled_from(["always-mentor", "never-mentor", "mentor-margin", "self-consult"])
confidences = st.lists(st.floats(0.0, 1.0), max_size=24)
pytestmark = pytest.mark.slow  # hundreds of runs: in the slow set, as issue 13 asks

IGNORED = {"seconds", "generator_tokens_read", "mentor_tokens_read", "wall_seconds", "mentor_tokens_processed"}


def check_books(state: CollabState, events: list[Any], config: CollabConfig) -> None:
    """The invariants every finished run keeps."""
    assert state.finished
    # Provenance spans partition the text, in order, merged where one source wrote on.
    position = 0
    for span in state.spans:
        assert span.start == position < span.end
        position = span.end
    assert position == len(state.text)
    assert all(left.source != right.source for left, right in itertools.pairwise(state.spans))
    # What was streamed is the text, each piece with its own span's source.
    streamed = [event for event in events if isinstance(event, TextCommitted)]
    assert "".join(event.text for event in streamed) == state.text
    for event in streamed:
        assert state.text[event.start : event.end] == event.text
        overlapping = [span for span in state.spans if span.start < event.end and event.start < span.end]
        assert all(span.source == event.source for span in overlapping)
    # The counters add up.
    stats = state.stats
    assert stats.generator_tokens_committed >= 0 and stats.mentor_tokens_committed >= 0
    assert 0.0 <= stats.mentor_share <= 1.0
    assert (stats.mentor_tokens_committed > 0) <= any(span.source == "mentor" for span in state.spans) or not state.text
    assert stats.tokens_committed <= config.max_new_tokens
    assert stats.probes >= stats.divergences == len(state.decisions) >= stats.adoptions
    assert stats.adoptions == sum(decision.choice == "mentor" for decision in state.decisions)
    assert stats.words >= stats.probes
    assert stats.mentor_errors == sum(error.startswith("BackendError") for error in state.errors)
    if config.max_mentor_calls is not None:
        assert stats.mentor_calls <= config.max_mentor_calls + 1  # a lookahead may follow the probe that spent it


def comparable(state: CollabState) -> dict[str, Any]:
    record = state.record()
    record["stats"] = {name: value for name, value in record["stats"].items() if name not in IGNORED}
    return record


def within_rounding(value: Any) -> Any:
    """``value`` with every float compared to 1e-6: a resumed run rebuilds its caches in one prefill,
    whose floating-point sums differ from the token-by-token ones in the last bits (scores, not words).

    The error is relative to the log-probabilities (tens of nats), so a small difference of two of them (a
    margin of 0.03) carries it as an absolute error: seen, 5e-8 on a margin whose 1e-6 share is 3e-8.
    """
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-6, abs=1e-6)
    if isinstance(value, dict):
        return {key: within_rounding(item) for key, item in value.items()}
    if isinstance(value, list):
        return [within_rounding(item) for item in value]
    return value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers, answers, configs, verifiers, confidences, st.none() | st.integers(1, 12))
def test_a_finished_run_keeps_its_books(
    generator_answer: str, mentor_answer: str, config: CollabConfig, verifier: str, confidence: list[float],
    mentor_fails_from: int | None,
) -> None:
    generator = ScriptedBackend(generator_answer, confidence=confidence)
    mentor = ScriptedBackend(mentor_answer, fail_from_call=mentor_fails_from, name="mentor")
    state = CollabState()
    events = list(collaborate("q", generator, mentor, verifier=verifier, config=config, state=state))
    check_books(state, events, config)


def run_with_a_checkpoint(make_backends: Any, config: CollabConfig, verifier: str, stop_after: int) -> CollabState:
    """Run ``stop_after`` steps, serialize the state, then finish it on freshly opened cursors."""
    state = CollabState()
    generator, mentor = make_backends()
    with open_team("q", generator, mentor, verifier=verifier, config=config) as team:
        for _ in range(stop_after):
            if state.finished and next_step(state) == "finish":
                break
            list(STEPS[next_step(state)](state, team))
    saved = CollabState.model_validate_json(state.model_dump_json())
    generator, mentor = make_backends()
    events = list(collaborate("q", generator, mentor, verifier=verifier, config=config, state=saved))
    check_books(saved, events_with_earlier_text(saved, events), config)
    return saved


def events_with_earlier_text(state: CollabState, events: list[Any]) -> list[Any]:
    """The resumed run streams only what was not streamed before the checkpoint: put that part back."""
    resumed = [event for event in events if isinstance(event, TextCommitted)]
    first = resumed[0].start if resumed else len(state.text)
    earlier = [
        TextCommitted(state.text[span.start : min(span.end, first)], span.source, span.start, min(span.end, first))
        for span in state.spans
        if span.start < first
    ]
    return [*earlier, *events]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers, answers, configs, verifiers, confidences, st.integers(0, 40))
def test_a_state_resumed_after_any_step_finishes_like_the_uninterrupted_run(
    generator_answer: str, mentor_answer: str, config: CollabConfig, verifier: str, confidence: list[float],
    stop_after: int,
) -> None:
    def make_backends() -> tuple[ScriptedBackend, ScriptedBackend]:
        return ScriptedBackend(generator_answer, confidence=confidence), ScriptedBackend(mentor_answer, name="mentor")

    whole = CollabState()
    list(collaborate("q", *make_backends(), verifier=verifier, config=config, state=whole))
    resumed = run_with_a_checkpoint(make_backends, config, verifier, stop_after)
    assert comparable(resumed) == comparable(whole)


@pytest.fixture(scope="module")
def tiny_pair(
    tiny_byte_level_model: str, tiny_sentencepiece_model: str
) -> tuple[TransformersBackend, TransformersBackend]:
    return (TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32"),
            TransformersBackend(tiny_sentencepiece_model, device="cpu", dtype="float32"))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(configs.filter(lambda config: config.max_new_tokens >= 8), st.sampled_from(["always-mentor", "mentor-margin"]),
       st.integers(0, 12))
@example(  # found in CI: the resumed run's scores differed in the 8th digit
    CollabConfig(probe_rate=1.0, segment_tokens=1, max_new_tokens=8, seed=0, match="exact", repetition_guard=False),
    "mentor-margin", 2)
def test_real_tiny_models_keep_the_books_and_resume_to_the_same_answer(
    tiny_pair: tuple[TransformersBackend, TransformersBackend], config: CollabConfig, verifier: str, stop_after: int
) -> None:
    """Two real tokenizer families (byte-level BPE and SentencePiece), random weights, float32."""
    whole = CollabState()
    events = list(collaborate("q", *tiny_pair, verifier=verifier, config=config, state=whole))
    check_books(whole, events, config)
    try:
        resumed = run_with_a_checkpoint(lambda: tiny_pair, config, verifier, stop_after)
    except MentorCollabError as error:  # pragma: no cover - a real backend failing is a finding, say which
        raise AssertionError(f"resuming failed: {error}") from error
    assert comparable(resumed) == within_rounding(comparable(whole))
