"""Probe policies: where the mentor is asked, forced with scripted confidences, and resumable exactly."""

from __future__ import annotations

import pytest

from mentorcollab_langchain.backends import ScriptedBackend
from mentorcollab_langchain.backends.base import Confidence, Piece
from mentorcollab_langchain.engine import CollabConfig, CollabState, Probed, collaborate, run_collaboration
from mentorcollab_langchain.engine.policies import NAMED_POLICIES, UncertainPolicy, get_probe_policy
from mentorcollab_langchain.engine.steps import STEPS, Team, next_step
from mentorcollab_langchain.errors import ConfigError
from mentorcollab_langchain.verifiers import AlwaysMentor, MentorMarginVerifier, get_verifier

GENERATOR = "The answer is B because rocks sink"
MENTOR = "The answer is C because rocks sink"
# The generator is sure of every word but the fourth (" B"), the answer slot.
CONFIDENCE = [0.99, 0.98, 0.97, 0.30, 0.95, 0.99, 0.99]


def uncertain(**overrides) -> CollabConfig:
    settings = {"probe_policy": "uncertain", "uncertainty_threshold": 0.6, "probe_rate": 0.0, "segment_tokens": 1}
    return CollabConfig(**(settings | overrides))


def generator() -> ScriptedBackend:
    return ScriptedBackend(GENERATOR, confidence=CONFIDENCE)


def test_uncertain_policy_probes_exactly_the_unsure_word_and_the_mentor_corrects_it() -> None:
    state = CollabState()
    events = list(collaborate("q", generator(), ScriptedBackend(MENTOR), verifier=AlwaysMentor(), config=uncertain(),
                              state=state))
    probes = [event for event in events if isinstance(event, Probed)]
    assert [(probe.word_index, probe.generator_word, probe.mentor_word) for probe in probes] == [(3, " B", " C")]
    assert state.text == MENTOR
    assert state.decisions[0].choice == "mentor" and state.decisions[0].generator_word == " B"


def test_the_probed_word_is_not_asked_of_the_generator_twice() -> None:
    counting = generator()
    state = run_collaboration("q", counting, ScriptedBackend(MENTOR), verifier=AlwaysMentor(), config=uncertain())
    # Seven words and the step that met end-of-sequence: one generator call each, the probe reused " B".
    assert state.stats.probes == 1
    assert counting.calls == state.stats.words == 8


@pytest.mark.parametrize(("signal", "threshold", "probed"), [
    ("top_share", 0.6, [3]),          # only " B" has a top share (0.3 / 0.65 = 0.46) under 0.6
    ("top_probability", 0.975, [2, 3, 4]),  # " is" (0.97), " B" (0.30) and " because" (0.95)
    ("entropy", 0.5, [3]),  # the scripted entropy is 1 - top probability: 0.7 at " B"
])
def test_each_signal_probes_where_it_says(signal: str, threshold: float, probed: list[int]) -> None:
    config = uncertain(uncertainty_signal=signal, uncertainty_threshold=threshold)
    events = list(collaborate("q", generator(), ScriptedBackend(GENERATOR), config=config))
    assert [event.word_index for event in events if isinstance(event, Probed)] == probed


def test_random_probes_still_sample_confident_words() -> None:
    answer = " ".join(f"w{i}" for i in range(2000))
    sure = ScriptedBackend(answer)  # confidence 1.0 everywhere
    state = run_collaboration("q", sure, ScriptedBackend(answer),
                              config=uncertain(probe_rate=0.05, max_new_tokens=5000, seed=3))
    assert state.stats.probes / state.stats.words == pytest.approx(0.05, abs=4 * (0.05 * 0.95 / 2000) ** 0.5)
    without = run_collaboration(
        "q", ScriptedBackend(answer), ScriptedBackend(answer), config=uncertain(max_new_tokens=5000)
    )
    assert without.stats.probes == 0


def test_a_run_checkpointed_while_a_word_waits_for_its_probe_resumes_identically() -> None:
    config = uncertain()
    whole = run_collaboration("q", generator(), ScriptedBackend(MENTOR), verifier=AlwaysMentor(), config=config)
    state = CollabState()
    team = Team(generator().open("q"), ScriptedBackend(MENTOR).open("q"), AlwaysMentor(), config)
    while state.pending_word is None:
        list(STEPS[next_step(state)](state, team))
    assert state.pending_word.text == " B" and next_step(state) == "probe"
    saved = CollabState.model_validate_json(state.model_dump_json())
    resumed = CollabState.model_validate(saved.model_dump())
    list(collaborate("q", generator(), ScriptedBackend(MENTOR), verifier=AlwaysMentor(), config=config, state=resumed))
    assert resumed.text == whole.text and resumed.decisions == whole.decisions
    assert resumed.stats.model_dump(exclude={"seconds"}) == whole.stats.model_dump(exclude={"seconds"})


def test_policies_by_name_and_bad_names() -> None:
    assert set(NAMED_POLICIES) == {"random", "uncertain"}
    assert isinstance(get_probe_policy("uncertain"), UncertainPolicy)
    with pytest.raises(ConfigError, match="unknown probe policy 'sometimes'"):
        get_probe_policy("sometimes")
    with pytest.raises(ConfigError, match="probe_policy"):
        CollabConfig(probe_policy="sometimes")
    with pytest.raises(ConfigError, match="needs name"):
        get_probe_policy(object())  # type: ignore[arg-type]


def test_a_custom_policy_object_decides_where_to_probe() -> None:
    class AtNumbers:
        name, needs_confidence = "at-numbers", False

        def words_until_probe(self, config: CollabConfig, gap_index: int) -> int:
            return 10**9

        def probe_word(self, word: Piece, config: CollabConfig) -> bool:
            return word.text.strip().isdigit()

    events = list(collaborate("q", ScriptedBackend("sold 48 clips and 24 more"), ScriptedBackend("sold 48 clips"),
                              probe_policy=AtNumbers()))
    assert [event.generator_word for event in events if isinstance(event, Probed)] == [" 48", " 24"]


def test_mentor_margin_adopts_only_what_the_mentor_clearly_prefers() -> None:
    # The scripted mentor gives its own words -1 nat each and any other word -10.
    state = run_collaboration("q", generator(), ScriptedBackend(MENTOR), verifier=get_verifier("mentor-margin"),
                              config=uncertain())
    decision = state.decisions[0]
    assert decision.choice == "mentor" and decision.verifier == "mentor-margin"
    assert decision.evidence["mean_logprob_margin"] == pytest.approx(9.0)
    assert decision.evidence["mentor_segment_logprob"] == pytest.approx(-1.0)
    assert state.stats.mentor_tokens_read == 2  # the two scored one-word segments
    lenient = run_collaboration("q", generator(), ScriptedBackend(MENTOR), verifier=MentorMarginVerifier(margin=20.0),
                                config=uncertain())
    assert lenient.decisions[0].choice == "generator" and lenient.text == GENERATOR


def test_confidence_top_share_renormalises_over_the_top_two() -> None:
    assert Confidence(0.3, 0.1, 2.0).top_share == pytest.approx(0.75)
    assert Confidence(0.0, 0.0, 0.0).top_share == 1.0
