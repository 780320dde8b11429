"""The method's contract, forced exactly with scripted models (real models are tested elsewhere)."""

from __future__ import annotations

import itertools

import pytest

from mentorcollab_langchain.backends import ScriptedBackend
from mentorcollab_langchain.backends.scripted import ScriptedCursor
from mentorcollab_langchain.engine import (
    CollabConfig,
    CollabState,
    Decided,
    MentorFailed,
    Probed,
    Team,
    TextCommitted,
    collaborate,
    next_step,
    open_team,
    run_collaboration,
)
from mentorcollab_langchain.engine.steps import NEXT_STEPS, STEPS
from mentorcollab_langchain.errors import BackendError, ConfigError
from mentorcollab_langchain.verifiers import AlwaysMentor, CallableVerifier, NeverMentor, get_verifier

GENERATOR_ANSWER = "She sold 48 clips in April and 24 clips in May so 72 in all."
MENTOR_ANSWER = "She sold 48 clips in April and half as many, 24, in May: 72."


def run(
    config: CollabConfig, verifier=None, generator=GENERATOR_ANSWER, mentor=MENTOR_ANSWER
) -> tuple[CollabState, list]:
    state = CollabState()
    events = list(
        collaborate(
            "q", ScriptedBackend(generator), ScriptedBackend(mentor), verifier=verifier, config=config, state=state
        )
    )
    return state, events


def streamed(events: list) -> list[TextCommitted]:
    return [event for event in events if isinstance(event, TextCommitted)]


def test_same_seed_gives_same_probes_and_text() -> None:
    config = CollabConfig(probe_rate=0.3, segment_tokens=3, seed=7)
    first, first_events = run(config, AlwaysMentor())
    second, second_events = run(config, AlwaysMentor())
    assert first.text == second.text
    assert [e for e in first_events if isinstance(e, Probed)] == [e for e in second_events if isinstance(e, Probed)]
    _, other_events = run(config.model_copy(update={"seed": 8}), AlwaysMentor())
    probed_at = lambda events: [e.word_index for e in events if isinstance(e, Probed)]  # noqa: E731
    assert probed_at(other_events) != probed_at(first_events), "another seed should probe elsewhere"


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.3])
def test_observed_probe_rate_matches_probe_rate(rate: float) -> None:
    answer = " ".join(f"w{i}" for i in range(4000))
    state, _ = run(CollabConfig(probe_rate=rate, max_new_tokens=10_000, seed=1), generator=answer, mentor=answer)
    assert state.stats.words == 4001  # 4000 words, then the step that met end-of-sequence
    assert state.stats.probes / state.stats.words == pytest.approx(rate, abs=4 * (rate * (1 - rate) / 4000) ** 0.5)
    assert state.stats.divergences == 0 and state.text == answer


def test_probe_rate_zero_and_one() -> None:
    never, _ = run(CollabConfig(probe_rate=0.0))
    always, _ = run(CollabConfig(probe_rate=1.0, segment_tokens=1), NeverMentor())
    assert never.stats.probes == 0 and never.stats.mentor_calls == 0
    assert always.stats.probes == always.stats.words


def test_forced_divergence_reaches_verifier_and_adoption_is_credited_to_the_mentor() -> None:
    seen = []

    def adopt(text: str, generator_segment: str, mentor_segment: str) -> bool:
        seen.append((text, generator_segment, mentor_segment))
        return True

    state, events = run(CollabConfig(probe_rate=1.0, segment_tokens=3), CallableVerifier(adopt))
    # Both answers agree for 7 words, then diverge at " 24" versus " half".
    prefix = "She sold 48 clips in April and"
    assert seen[0] == (prefix, " 24 clips in", " half as many,")
    decision = state.decisions[0]
    assert (decision.position, decision.generator_word, decision.mentor_word) == (len(prefix), " 24", " half")
    assert decision.choice == "mentor" and decision.verifier == "callable"
    assert state.text.startswith(prefix + " half as many,")
    first_mentor_span = state.mentor_spans()[0]
    assert state.text[first_mentor_span.start : first_mentor_span.end].startswith(" half as many,")
    assert first_mentor_span.start == len(prefix)
    assert state.stats.divergences == len(state.decisions) == state.stats.adoptions
    assert state.stats.mentor_tokens_committed == sum(len(d.mentor_segment.split()) for d in state.decisions)
    assert state.stats.tokens_committed == len(state.text.split())
    assert any(isinstance(event, Decided) for event in events)


def test_kept_generator_segment_leaves_no_mentor_text() -> None:
    state, events = run(CollabConfig(probe_rate=1.0, segment_tokens=3), NeverMentor())
    assert state.text == GENERATOR_ANSWER
    assert state.stats.divergences >= 1 and state.stats.adoptions == 0
    assert state.mentor_spans() == [] and state.stats.mentor_tokens_committed == 0
    assert state.stats.mentor_tokens_generated > 0  # the rejected lookaheads were still paid for
    assert "".join(e.text for e in streamed(events)) == GENERATOR_ANSWER, "a rejected lookahead leaked"


def test_streamed_pieces_add_up_to_the_text_and_its_spans() -> None:
    state, events = run(CollabConfig(probe_rate=0.5, segment_tokens=2, seed=3), AlwaysMentor())
    pieces = streamed(events)
    assert "".join(piece.text for piece in pieces) == state.text
    for piece in pieces:
        covering = [span for span in state.spans if span.start <= piece.start and piece.end <= span.end]
        assert covering and covering[0].source == piece.source
    assert state.spans[0].start == 0 and state.spans[-1].end == len(state.text)
    assert all(a.end == b.start and a.source != b.source for a, b in itertools.pairwise(state.spans))


def test_stop_string_cuts_the_answer_and_never_streams() -> None:
    state, events = run(CollabConfig(probe_rate=0.0, stop=("24 clips",)))
    assert state.text == "She sold 48 clips in April and "
    assert state.finish_reason == "stop"
    assert "".join(e.text for e in streamed(events)) == state.text


def test_stop_string_spanning_two_words_is_held_back() -> None:
    state, events = run(CollabConfig(probe_rate=0.0, stop=(" in May",)))
    assert state.text == "She sold 48 clips in April and 24 clips"
    assert all(" in" not in e.text or "April" in e.text for e in streamed(events))
    assert "".join(e.text for e in streamed(events)) == state.text


def test_an_adopted_segment_cut_by_a_stop_string_counts_only_its_kept_tokens() -> None:
    # The mentor's adopted segment " half as many, 24," runs into the stop string: only " half" is kept.
    state, _ = run(CollabConfig(probe_rate=1.0, segment_tokens=4, stop=(" as many",)), AlwaysMentor())
    assert state.text == "She sold 48 clips in April and half" and state.finish_reason == "stop"
    assert state.stats.mentor_tokens_committed == 1
    assert state.stats.tokens_committed == len(state.text.split())


def test_max_new_tokens_holds_for_words_and_segments() -> None:
    for verifier in (AlwaysMentor(), NeverMentor()):
        state, _ = run(CollabConfig(probe_rate=1.0, segment_tokens=5, max_new_tokens=9), verifier)
        assert state.stats.tokens_committed == 9 == len(state.text.split())
        assert state.finish_reason == "length"


def test_end_of_sequence_finishes() -> None:
    state, _ = run(CollabConfig(probe_rate=0.0))
    assert state.text == GENERATOR_ANSWER and state.finish_reason == "eos"


def test_repetition_guard_stops_a_loop() -> None:
    looping = "The answer is" + " yes" * 20
    guarded, _ = run(CollabConfig(probe_rate=0.0), generator=looping)
    unguarded, _ = run(CollabConfig(probe_rate=0.0, repetition_guard=False), generator=looping)
    assert guarded.text == "The answer is yes yes yes" and guarded.finish_reason == "repetition"
    assert unguarded.text == looping


def test_failed_mentor_falls_back_to_the_generator_and_is_recorded() -> None:
    state = CollabState()
    mentor = ScriptedBackend(MENTOR_ANSWER, fail_from_call=3)
    events = list(
        collaborate("q", ScriptedBackend(GENERATOR_ANSWER), mentor, config=CollabConfig(probe_rate=1.0), state=state)
    )
    assert state.text == GENERATOR_ANSWER and state.finish_reason == "eos"
    assert state.stats.mentor_errors == 1 and "scripted failure" in state.errors[0]
    assert state.probing_stopped.startswith("mentor failed: BackendError")
    assert [e for e in events if isinstance(e, MentorFailed)]
    assert mentor.calls == 3, "a failed mentor is not probed again in the same request"


class BuggyMentor(ScriptedBackend):
    """A mentor whose cursor has a bug: it raises a plain Python error, not a backend's typed failure."""

    def open(self, *args: object, **kwargs: object) -> ScriptedCursor:
        cursor = super().open(*args, **kwargs)
        cursor.next_word = lambda *args, **kwargs: {}["missing key"]  # a programming error
        return cursor


def test_a_bug_in_the_mentor_is_raised_not_recorded_as_a_mentor_failure() -> None:
    """Under on_mentor_error=fallback only typed backend errors are the mentor failing; a KeyError is a
    bug, and hiding it as 'mentor failed' would silently turn the mentor off."""
    with pytest.raises(KeyError, match="missing key"):
        run_collaboration("q", ScriptedBackend(GENERATOR_ANSWER), BuggyMentor(MENTOR_ANSWER),
                          config=CollabConfig(probe_rate=1.0, on_mentor_error="fallback"))


def test_failed_mentor_raises_when_configured() -> None:
    with pytest.raises(BackendError, match="scripted failure"):
        run_collaboration(
            "q",
            ScriptedBackend(GENERATOR_ANSWER),
            ScriptedBackend(MENTOR_ANSWER, fail_from_call=1),
            config=CollabConfig(probe_rate=1.0, on_mentor_error="raise"),
        )


@pytest.mark.parametrize(
    ("budget", "spent"),
    [
        ({"max_mentor_calls": 4}, "mentor call budget spent (4 of max_mentor_calls=4)"),
        ({"max_mentor_tokens": 5}, "mentor token budget spent"),
    ],
)
def test_mentor_budget_stops_probing_and_is_recorded(budget: dict, spent: str) -> None:
    answer = " ".join(f"w{i}" for i in range(200))
    state, _ = run(CollabConfig(probe_rate=0.5, seed=2, **budget), generator=answer, mentor=answer)
    assert state.probing_stopped.startswith(spent)
    assert state.text == answer  # the generator finished the answer alone
    assert state.stats.mentor_calls == state.stats.probes
    assert state.stats.mentor_calls <= budget.get("max_mentor_calls", 10**6)
    assert state.stats.mentor_tokens_generated <= budget.get("max_mentor_tokens", 10**6)
    assert state.stats.probes < 0.5 * state.stats.words / 4, "probing went on after the budget was spent"


def test_the_mentors_reading_budget_stops_probing_once_spent() -> None:
    """The scripted mentor reads the segments it scores (mentor-margin), so every divergence spends some."""
    generator = " ".join(f"w{i}" for i in range(200))
    mentor = " ".join(f"m{i}" for i in range(200))
    config = CollabConfig(probe_rate=0.5, seed=2, segment_tokens=4, max_mentor_tokens_read=20)
    state, _ = run(config, "mentor-margin", generator=generator, mentor=mentor)
    assert state.probing_stopped == (
        f"mentor reading budget spent ({state.stats.mentor_tokens_read} of max_mentor_tokens_read=20)"
    )
    assert 20 <= state.stats.mentor_tokens_read <= 20 + 2 * 4, "only the probe that spent it read past it"
    unlimited, _ = run(config.model_copy(update={"max_mentor_tokens_read": None}), "mentor-margin",
                       generator=generator, mentor=mentor)
    assert unlimited.probing_stopped is None and unlimited.stats.probes > 2 * state.stats.probes


def test_state_round_trips_through_json_and_resumes_identically() -> None:
    config = CollabConfig(probe_rate=0.4, segment_tokens=3, seed=5)
    uninterrupted, _ = run(config, AlwaysMentor())

    def team() -> Team:
        generator, mentor = ScriptedBackend(GENERATOR_ANSWER).open("q"), ScriptedBackend(MENTOR_ANSWER).open("q")
        return Team(generator, mentor, AlwaysMentor(), config)

    state = CollabState()
    while next_step(state) != "verify":  # stop with a divergence pending, as a killed run would
        list(STEPS[next_step(state)](state, team()))
    restored = CollabState.model_validate_json(state.model_dump_json())
    fresh = team()
    while (step := next_step(restored)) != "finish":
        list(STEPS[step](restored, fresh))
    assert restored.text == uninterrupted.text
    assert restored.decisions == uninterrupted.decisions


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"probe_rate": 1.5}, "probe_rate"),
        ({"probe_rate": -0.1}, "probe_rate"),
        ({"segment_tokens": 0}, "segment_tokens"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"match": "fuzzy"}, "match"),
        ({"probe_rat": 0.1}, "probe_rat"),
    ],
)
def test_bad_config_names_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CollabConfig(**fields)


def test_faithful_preset_has_the_papers_settings() -> None:
    faithful = CollabConfig.faithful()
    settings = (faithful.probe_rate, faithful.segment_tokens, faithful.match, faithful.prompt_style)
    assert settings == (0.04, 16, "exact", "raw")
    assert CollabConfig.faithful(seed=3).seed == 3


def test_normalized_match_ignores_whitespace_differences() -> None:
    config = CollabConfig(match="normalized")
    assert config.words_match(" 48", "48") and config.words_match("\nThe", " The")
    assert not CollabConfig().words_match(" 48", "48")


def test_unknown_verifier_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown verifier 'oracle'"):
        get_verifier("oracle")
    with pytest.raises(ConfigError, match="decide"):
        get_verifier(object())  # type: ignore[arg-type]


def _transitions(
    config: CollabConfig, verifier: str, generator: ScriptedBackend, mentor: ScriptedBackend
) -> set[tuple[str, str]]:
    """Every (step, step after it) of one run, stepped by hand as a graph steps it."""
    state, seen = CollabState(), set()
    with open_team("q", generator, mentor, verifier=verifier, config=config) as team:
        while (step := next_step(state)) != "finish":
            for _ in STEPS[step](state, team):
                pass
            seen.add((step, next_step(state)))
    return seen


def test_next_step_only_ever_answers_a_step_next_steps_allows() -> None:
    """NEXT_STEPS is what a graph draws, so it must hold every route the engine takes, and no other."""
    agreeing = " ".join(f"w{i}" for i in range(30)) + "."
    seen: set[tuple[str, str]] = set()
    for rate, seed, segment, budget, verifier, fail_from, policy in itertools.product(
        (0.0, 0.3, 0.7, 1.0),
        range(3),
        (1, 3),
        (3, 9, 60),
        ("always-mentor", "never-mentor", "mentor-margin"),
        (None, 1, 2, 3, 6),
        ("random", "uncertain"),
    ):
        config = CollabConfig(probe_rate=rate, seed=seed, segment_tokens=segment, max_new_tokens=budget,
                              probe_policy=policy, uncertainty_threshold=0.5)
        for answers in ((GENERATOR_ANSWER, MENTOR_ANSWER), (agreeing, agreeing)):
            generator = ScriptedBackend(answers[0], confidence=[0.9, 0.3, 0.9, 0.2])
            mentor = ScriptedBackend(answers[1], fail_from_call=fail_from)
            for step, after in _transitions(config, verifier, generator, mentor):
                assert after in NEXT_STEPS[step], f"{after} after {step}: {config}, {verifier}, fails at {fail_from}"
                seen.add((step, after))
    assert seen == {(step, after) for step, nexts in NEXT_STEPS.items() for after in nexts}, "an edge no run takes"
    assert set(NEXT_STEPS) == set(STEPS)


# The scripted answers agree for seven words and diverge at the eighth (" 24" against " half"). With a probe
# at every word the mentor's calls 1 to 8 are the probes' words and call 9 is its lookahead, so a mentor
# that fails from its ninth call fails in the lookahead, after the probe that found the divergence.
LOOKAHEAD_CALL = 9
DIVERGES_AT = "She sold 48 clips in April and"
LOOKAHEAD_FAILURE = f"BackendError: scripted: scripted failure on call {LOOKAHEAD_CALL}"


def test_a_mentor_failing_in_the_lookahead_commits_the_generators_segment_and_stops_probing() -> None:
    mentor = ScriptedBackend(MENTOR_ANSWER, fail_from_call=LOOKAHEAD_CALL)
    state = CollabState()
    config = CollabConfig(probe_rate=1.0, segment_tokens=3, on_mentor_error="fallback")
    # always-mentor: had the failure been ignored, the mentor's segment would have been adopted
    events = list(collaborate("q", ScriptedBackend(GENERATOR_ANSWER), mentor, verifier=AlwaysMentor(), config=config,
                              state=state))
    assert mentor.calls == LOOKAHEAD_CALL, "the failure must land in the lookahead, and the mentor is not asked again"
    assert state.stats.probes == 8 and state.stats.divergences == 1
    decision = state.decisions[0]
    assert (decision.position, decision.generator_word, decision.mentor_word) == (len(DIVERGES_AT), " 24", " half")
    assert (decision.choice, decision.verifier) == ("generator", "mentor-failed")
    assert decision.generator_segment == " 24 clips in" and decision.mentor_segment == " half"  # no mentor segment
    assert state.text == GENERATOR_ANSWER and state.finish_reason == "eos" and state.mentor_spans() == []
    assert state.stats.mentor_errors == 1 and state.errors == [LOOKAHEAD_FAILURE]
    assert state.probing_stopped == f"mentor failed: {state.errors[0]}"
    assert state.stats.mentor_calls == 8  # the failed lookahead is not counted as a call that answered
    failed_at = next(index for index, event in enumerate(events) if isinstance(event, MentorFailed))
    assert [e for e in events[failed_at:] if isinstance(e, Probed)] == [], "probing went on after the failure"
    assert "".join(e.text for e in streamed(events)) == GENERATOR_ANSWER


def test_a_mentor_failing_in_the_lookahead_raises_when_configured() -> None:
    mentor = ScriptedBackend(MENTOR_ANSWER, fail_from_call=LOOKAHEAD_CALL)
    state = CollabState()
    config = CollabConfig(probe_rate=1.0, segment_tokens=3, on_mentor_error="raise")
    events: list = []
    with pytest.raises(BackendError, match=f"scripted failure on call {LOOKAHEAD_CALL}"):
        for event in collaborate("q", ScriptedBackend(GENERATOR_ANSWER), mentor, verifier=AlwaysMentor(),
                                 config=config, state=state):
            events.append(event)
    assert mentor.calls == LOOKAHEAD_CALL
    assert state.finish_reason == "error" and state.finished
    assert state.stats.mentor_errors == 1 and state.errors == [LOOKAHEAD_FAILURE]
    assert state.text == DIVERGES_AT and state.decisions == []  # neither segment was committed
    assert state.divergence is not None and state.divergence.generator_segment.text == " 24 clips in"
    assert isinstance(events[-1], MentorFailed)
