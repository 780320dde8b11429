"""Grammar-constrained decoding on the real packaged SmolLM2-135M, in process on llama.cpp and on torch.

Unconstrained, the 135M model writes a forced call of ``magic_function`` with the schema's own keys next
to the argument; under the call's grammar it writes exactly ``{"input": 3}``. Both backends mask the same
tokens, so they write the same constrained text, and a mentor whose words leave the grammar (one that
cannot decode under it, like a remote one) is never adopted.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by scripts/install.sh")

from mentorcollab_langchain import ScriptedBackend
from mentorcollab_langchain.backends import make_backend
from mentorcollab_langchain.chat import tools
from mentorcollab_langchain.engine import CollabConfig, CollabState, collaborate
from mentorcollab_langchain.errors import ConfigError

GENERATOR = "smollm2-135m-instruct"
MAGIC = {
    "type": "function",
    "function": {
        "name": "magic_function",
        "description": "Apply a magic function to an input.",
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}},
            "required": ["input"],
        },
    },
}
QUESTION = [{"role": "user", "content": "What is the value of magic_function(3)? Use the tool."}]
PREFIX = tools.forced_prefix("magic_function", [MAGIC])
GRAMMAR = tools.call_grammar("magic_function", [MAGIC])


def _call(text: str) -> dict:
    return json.loads(text.removeprefix(tools.TOOL_CALL_OPEN).split(tools.TOOL_CALL_CLOSE)[0])


@pytest.fixture(scope="module")
def llama_cpp():
    return make_backend(GENERATOR, backend="llama.cpp", threads=1)


@pytest.mark.slow  # a few seconds: kept out of the fast set
def test_the_grammar_turns_the_small_models_broken_call_into_a_valid_one(llama_cpp) -> None:
    free = llama_cpp.open(QUESTION).generate(PREFIX, 40)
    constrained = llama_cpp.open(QUESTION, grammar=GRAMMAR).generate(PREFIX, 40)
    with pytest.raises(json.JSONDecodeError):  # what it writes alone: extra keys, then prose
        _call(PREFIX + free.text)
    assert _call(PREFIX + constrained.text) == {"name": "magic_function", "arguments": {"input": 3}}
    assert constrained.eos and constrained.text.endswith(tools.TOOL_CALL_CLOSE)


@pytest.mark.slow  # loads the torch weights
def test_both_local_backends_write_the_same_constrained_text(llama_cpp) -> None:
    torch_backend = make_backend(GENERATOR, backend="transformers")
    on_llama_cpp, on_torch = (
        backend.open(QUESTION, grammar=GRAMMAR).generate(PREFIX, 40).text for backend in (llama_cpp, torch_backend)
    )
    assert on_llama_cpp == on_torch


@pytest.mark.slow  # loads the 1.5B mentor
def test_a_model_whose_vocabulary_has_the_tag_as_a_special_token_follows_the_same_grammar() -> None:
    # Qwen's <tool_call> is one special token: the forced start reaches its cache as that token, and the
    # grammar (written with the tag as text) still accepts it and lets the model close the call its way.
    qwen = make_backend("qwen2.5-coder-1.5b-instruct", backend="llama.cpp", threads=1)
    cursor = qwen.open(QUESTION, grammar=GRAMMAR)
    written = cursor.generate(PREFIX, 20)
    assert len(cursor._encode(tools.TOOL_CALL_OPEN)) == 1  # one special token in Qwen's vocabulary
    assert _call(PREFIX + written.text) == {"name": "magic_function", "arguments": {"input": 3}}


def test_the_cursor_says_how_much_of_a_text_the_grammar_accepts(llama_cpp) -> None:
    cursor = llama_cpp.open(QUESTION, grammar=GRAMMAR)
    valid = PREFIX + "3}}\n" + tools.TOOL_CALL_CLOSE
    assert cursor.grammar_prefix_length(valid) == len(valid)
    broken = PREFIX + '3, "type": "integer"}}'
    accepted = cursor.grammar_prefix_length(broken)
    assert len(PREFIX) < accepted < len(broken) and broken[:accepted].endswith("3")
    assert llama_cpp.open(QUESTION).grammar_prefix_length(broken) == len(broken)  # no grammar: all of it


def test_left_to_choose_an_answer_is_prose_or_one_checked_call(llama_cpp) -> None:
    cursor = llama_cpp.open(QUESTION, grammar=tools.choice_grammar([MAGIC]))
    call = '{"name": "magic_function", "arguments": {"input": 3}}'
    for answer in ["The value is 3.", PREFIX + "3}}\n" + tools.TOOL_CALL_CLOSE, call, "```json\n" + call + "\n```"]:
        assert cursor.grammar_prefix_length(answer) == len(answer), answer
    for answer in ['{"name": "magic_function", "arguments": {"input": "three"}}', "```python\nprint(3)\n```"]:
        assert cursor.grammar_prefix_length(answer) < len(answer), answer


def test_a_mentor_whose_words_leave_the_grammar_is_never_adopted(llama_cpp) -> None:
    # The scripted mentor writes the schema's keys as arguments, as the model does unconstrained; it is
    # probed at every word and always disagrees.
    mentor = ScriptedBackend(PREFIX + '"three", "type": "integer"}}\n</tool_call>', name="lawless")
    config = CollabConfig(probe_rate=1.0, probe_policy="random", max_new_tokens=24, grammar=GRAMMAR)
    state = CollabState(text=PREFIX, emitted=len(PREFIX))
    list(collaborate(QUESTION, llama_cpp, mentor, verifier="mentor-margin", config=config, state=state))
    assert state.stats.probes > 0 and state.stats.adoptions == 0
    assert _call(state.text) == {"name": "magic_function", "arguments": {"input": 3}}


def test_a_generator_that_cannot_follow_a_grammar_is_refused_by_name(llama_cpp) -> None:
    class Remote:
        model_name = "remote-generator"

        def open(self, prompt, style="chat", sampling=None):
            raise AssertionError("never opened")

    config = CollabConfig(grammar=GRAMMAR)
    with pytest.raises(ConfigError, match=r"remote-generator.*cannot decode under a grammar"):
        list(collaborate(QUESTION, Remote(), llama_cpp, config=config))
