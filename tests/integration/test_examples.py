"""The examples run offline: wiring with scripted models (fast), end to end with real weights (slow)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from mentorcollab_langchain import ChatMentorCollab, ScriptedBackend
from mentorcollab_langchain.backends.base import Conversation
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from tests.paths import load_example


class TurnsBackend:
    """A scripted model that gives the next of its answers each time a request opens it."""

    def __init__(self, answers: list[str], name: str = "turns") -> None:
        self.answers = answers
        self.name = name
        self.prompts: list[Any] = []

    @property
    def model_name(self) -> str:
        return self.name

    def open(self, prompt: Any, style: str = "chat", sampling: Sampling = GREEDY) -> Any:
        answer = self.answers[min(len(self.prompts), len(self.answers) - 1)]
        self.prompts.append(prompt)
        return ScriptedBackend(answer).open(prompt, style, sampling)


@pytest.fixture(scope="module")
def rag() -> ModuleType:
    return load_example("rag_pipeline")


@pytest.fixture(scope="module")
def agent() -> ModuleType:
    return load_example("agent")


@pytest.fixture(scope="module")
def embeddings(rag: ModuleType) -> Any:
    return rag.MiniLMEmbeddings()


def test_packaged_embeddings_retrieve_the_right_note(rag: ModuleType, embeddings: Any) -> None:
    vector = embeddings.embed_query("moons")
    assert len(vector) == 384 and abs(sum(value * value for value in vector) - 1.0) < 1e-4
    store = rag.build_store(embeddings)
    assert "Saturn" in store.similarity_search("Which planet has the most moons?", k=1)[0].page_content
    assert "Venus" in store.similarity_search("What is the hottest planet?", k=1)[0].page_content


def test_rag_chain_answers_from_the_notes_and_shows_the_mentor(rag: ModuleType, embeddings: Any) -> None:
    generator = ScriptedBackend("Jupiter has the most moons .", name="scripted-generator")
    model = ChatMentorCollab(
        generator=generator,
        mentor=ScriptedBackend("Saturn has the most moons .", name="scripted-mentor"),
        probe_rate=1.0,
        segment_tokens=1,
        verifier="always-mentor",
    )
    message = rag.build_chain(model, rag.build_store(embeddings)).invoke("Which planet has the most moons?")
    assert message.content == "Saturn has the most moons ."
    system = generator.prompts[-1][0]
    assert system["role"] == "system" and "146 confirmed moons" in system["content"]
    shown = rag.show_provenance(message)
    assert "answer: [[Saturn]] has the most moons ." in shown
    assert "generator 'Jupiter' vs mentor 'Saturn' -> mentor" in shown


def test_calculator_is_arithmetic_only(agent: ModuleType) -> None:
    assert agent.calculator.invoke({"expression": "17 * 23 + 4"}) == "395"
    assert agent.calculator.invoke({"expression": "2 ^ 10"}) == "1024"
    assert agent.calculator.invoke({"expression": "__import__('os').getcwd()"}).startswith("Error")
    assert agent.calculator.invoke({"expression": "1 / 0"}).startswith("Error")


def test_agent_calls_the_calculator_and_answers(agent: ModuleType) -> None:
    generator = TurnsBackend(
        [
            '<tool_call>\n{"name": "calculator", "arguments": {"expression": "17 * 23 + 4"}}\n</tool_call>',
            "The answer is 395 .",
        ]
    )
    model = ChatMentorCollab(
        generator=generator, mentor=ScriptedBackend("unused"), probe_rate=0.0, probe_first_word=False
    )
    report = agent.main(["What is 17 * 23 + 4?"], model=model)
    assert "calls calculator({'expression': '17 * 23 + 4'})" in report
    assert "tool calculator: 395" in report
    assert report.rstrip().endswith("'The answer is 395 .'")
    second_prompt = generator.prompts[1]
    assert isinstance(second_prompt, Conversation)  # the agent keeps offering the tool, with the prompt
    call_id = second_prompt.messages[-2]["tool_calls"][0]["id"]
    assert second_prompt.messages[-1] == {"role": "tool", "content": "395", "tool_call_id": call_id}
    assert [tool["function"]["name"] for tool in second_prompt.tools] == ["calculator"]


@pytest.mark.slow
def test_agent_example_calls_the_tool_on_the_default_models(agent: ModuleType) -> None:
    # Alone, SmolLM2 answers "17 * 23 + 4 = 311." in prose. The mentor, asked at the first word (where
    # the answer becomes a call or prose), opens a call; the tools' grammar keeps its arguments valid
    # whoever writes them, and the calculator runs on them.
    report = agent.main(["What is 17 * 23 + 4?"])
    assert "calls calculator({'expression': '17 * 23 + 4'})" in report
    assert "tool calculator: 395" in report


@pytest.mark.slow
def test_rag_example_runs_on_real_models(rag: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    report = rag.main(
        ["Which planet has the most moons?", "--mentor", "gemma3-270m", "--max-tokens", "24", "--probe-rate", "0.3"]
    )
    assert "note: Saturn has 146 confirmed moons" in report
    assert "answer: " in report and "smollm2-135m-instruct writes, gemma3-270m mentors" in report
    assert report in capsys.readouterr().out


@pytest.mark.slow
def test_agent_example_runs_on_real_models(agent: ModuleType) -> None:
    report = agent.main(
        ["What is 17 * 23 + 4?", "--mentor", "smollm2-135m-instruct", "--max-tokens", "40", "--max-steps", "4"]
    )
    assert report.startswith("user: What is 17 * 23 + 4?")
    assert "model (mentor share" in report
