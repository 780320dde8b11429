"""Opening a team: the mentor's cursor failing to open is a mentor failure like any other."""

from __future__ import annotations

import pytest

from mentorcollab_langchain.backends import ScriptedBackend, TransformersBackend
from mentorcollab_langchain.engine import CollabConfig, CollabState, MentorFailed, collaborate, open_team, run_steps
from mentorcollab_langchain.errors import ContextTooLongError, MentorCollabError

# Far longer than the tiny model's 256-token context; the scripted generator has no context limit.
LONG_PROMPT = "apples and pears " * 200


def test_a_prompt_too_long_for_the_mentor_falls_back_to_the_generator(tiny_byte_level_model: str) -> None:
    mentor = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32")
    state = CollabState()
    config = CollabConfig(probe_policy="random", probe_rate=1.0, on_mentor_error="fallback")
    events = list(collaborate(LONG_PROMPT, ScriptedBackend("one two three"), mentor, config=config, state=state))
    assert state.text == "one two three"
    assert [event for event in events if isinstance(event, MentorFailed)], "the failure must be reported"
    assert state.stats.mentor_errors == 1 and "ContextTooLongError" in state.errors[0]
    assert state.probing_stopped is not None and state.stats.probes == 1


def test_with_raise_the_prompt_too_long_for_the_mentor_stops_the_run(tiny_byte_level_model: str) -> None:
    mentor = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32")
    config = CollabConfig(probe_policy="random", probe_rate=1.0, on_mentor_error="raise")
    with pytest.raises(ContextTooLongError):
        list(collaborate(LONG_PROMPT, ScriptedBackend("one two three"), mentor, config=config))


def test_an_answer_never_runs_past_max_new_tokens_to_finish_a_character(tiny_byte_level_model: str) -> None:
    """The budget's last token would start a two-token emoji: the answer ends at the budget, whole."""
    generator = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32")
    emoji_ids = generator.loaded.tokenizer.encode(" 🙂🙂🙂", add_special_tokens=False)  # 1 + 2 + 2 tokens
    config = CollabConfig(probe_policy="random", probe_rate=0.0, max_new_tokens=4)
    state = CollabState()
    with open_team("Smile.", generator, ScriptedBackend("unused"), config=config) as team:
        forced = iter(emoji_ids)
        team.generator._pick = lambda logits, text: next(forced)  # force the emoji, token by token
        list(run_steps(state, team))
    assert state.text == " 🙂🙂" and state.stats.tokens_committed == 3 <= config.max_new_tokens
    assert state.finish_reason == "length"


@pytest.mark.parametrize("probe_rate", [0.0, 1.0])
def test_a_full_generator_context_ends_the_answer_with_length_keeping_the_text(
    tiny_byte_level_model: str, probe_rate: float
) -> None:
    """The tiny generator holds 256 tokens: an answer that would run past them ends there, whole."""
    generator = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32")
    prompt = "apples " * 200
    apples = generator.loaded.tokenizer.encode(" apples", add_special_tokens=False)[0]
    config = CollabConfig(probe_policy="random", probe_rate=probe_rate, max_new_tokens=200, repetition_guard=False)
    state = CollabState()
    with open_team(prompt, generator, ScriptedBackend(" ".join(["apples"] * 100)), config=config) as team:
        team.generator._pick = lambda logits, text: apples  # a generator that never stops on its own
        list(run_steps(state, team))
    assert state.finish_reason == "length" and "apples apples" in state.text
    assert "ContextTooLongError" in state.errors[-1]
    assert len(generator.open(prompt).token_ids(state.text)) == 256
    assert state.stats.tokens_committed < config.max_new_tokens


def test_a_mentor_failure_under_raise_finishes_the_state_with_error() -> None:
    config = CollabConfig(probe_policy="random", probe_rate=1.0, on_mentor_error="raise")
    state = CollabState()
    with pytest.raises(MentorCollabError):
        list(collaborate("q", ScriptedBackend("one two"), ScriptedBackend("one two", fail_from_call=0), config=config,
                         state=state))
    assert state.finish_reason == "error" and state.errors
