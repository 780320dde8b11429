"""The LangGraph graph on the scripted backend: exact divergences, failures and interrupts, in seconds.

The same behaviours run on real models in tests/integration/graphs/test_graph.py; here the scripted models force each
situation exactly (a divergence at a known word, a generator that dies on its n-th call).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.types import Command

from graphs import (
    NODES,
    InvalidResumeError,
    build_mentorcollab_graph,
    decision_log,
    in_memory_tracing,
    node_spans,
    parse_choice,
)
from mentorcollab_langchain.backends import ScriptedBackend
from mentorcollab_langchain.chat import ChatMentorCollab
from mentorcollab_langchain.engine import CollabConfig, run_collaboration
from mentorcollab_langchain.errors import BackendError, MentorCollabError
from tests.paths import REPO

GENERATOR_ANSWER = "The cat sat on the mat and then it slept all day long in the warm sun."
MENTOR_ANSWER = "The dog ran in the park and then it barked all night long at the cold moon."
PROMPT = [{"role": "user", "content": "Tell me a story."}]
CONFIG = CollabConfig(probe_rate=0.5, segment_tokens=3, seed=1, max_new_tokens=60)


def backends(fail_generator_from: int | None = None) -> tuple[ScriptedBackend, ScriptedBackend]:
    return (
        ScriptedBackend(GENERATOR_ANSWER, name="gen", fail_from_call=fail_generator_from),
        ScriptedBackend(MENTOR_ANSWER, name="men"),
    )


def thread(name: str) -> dict:
    return {"configurable": {"thread_id": name}}


def reference(verifier: str = "always-mentor", config: CollabConfig = CONFIG):
    generator, mentor = backends()
    return run_collaboration(PROMPT, generator, mentor, verifier=verifier, config=config)


def comparable(record: dict) -> dict:
    """A record without wall times, which differ between any two runs."""
    stats = {key: value for key, value in record["stats"].items() if key not in {"seconds", "wall_seconds"}}
    return record | {"stats": stats}


def chat_model(verifier: str = "always-mentor", config: CollabConfig = CONFIG) -> ChatMentorCollab:
    generator, mentor = backends()
    return ChatMentorCollab(
        generator=generator,
        mentor=mentor,
        verifier=verifier,
        probe_rate=config.probe_rate,
        segment_tokens=config.segment_tokens,
        max_tokens=config.max_new_tokens,
        seed=config.seed,
    )


def same_message(graph_answer: AIMessage, chat_answer: AIMessage) -> None:
    """The graph's answer is the chat model's: content, usage and metadata (wall times aside)."""
    assert graph_answer.content == chat_answer.content
    assert graph_answer.usage_metadata == chat_answer.usage_metadata
    ours, theirs = dict(graph_answer.response_metadata), dict(chat_answer.response_metadata)
    assert comparable(ours.pop("mentorcollab")) == comparable(theirs.pop("mentorcollab"))
    assert ours == theirs


@pytest.mark.parametrize("verifier", ["always-mentor", "never-mentor", "self-consult"])
def test_graph_gives_the_engine_run_and_the_chat_model_message_exactly(verifier: str) -> None:
    expected = reference(verifier)
    generator, mentor = backends()
    graph = build_mentorcollab_graph(generator, mentor, verifier=verifier, config=CONFIG)
    result = graph.invoke({"messages": PROMPT})
    answer = result["answer"]
    assert isinstance(answer, AIMessage)
    assert answer.content == expected.text
    assert result["messages"][-1] == answer
    assert isinstance(result["messages"][0], HumanMessage)
    same_message(answer, chat_model(verifier).invoke(PROMPT))
    assert answer.usage_metadata["output_tokens"] == expected.stats.tokens_committed
    assert expected.stats.divergences >= 2  # the scripted pair really diverges, so decisions were made


def test_cursors_open_once_per_run_and_close_at_the_end() -> None:
    generator, mentor = backends()
    graph = build_mentorcollab_graph(generator, mentor, verifier="always-mentor", config=CONFIG)
    graph.invoke({"messages": PROMPT})
    assert len(generator.prompts) == len(mentor.prompts) == 1  # kept between nodes, not reopened per node
    app = StateGraph(MessagesState)
    app.add_node("mentorcollab", graph)
    app.add_edge(START, "mentorcollab")
    app.compile(checkpointer=InMemorySaver()).invoke({"messages": PROMPT}, thread("cursors"))
    assert len(generator.prompts) == len(mentor.prompts) == 2  # the same inside a parent application


def test_exact_resume_starts_every_node_from_fresh_cursors() -> None:
    generator, mentor = backends()
    graph = build_mentorcollab_graph(generator, mentor, verifier="always-mentor", config=CONFIG, exact_resume=True)
    steps = [name for update in graph.stream({"messages": PROMPT}, stream_mode="updates") for name in update]
    assert len(generator.prompts) == len(mentor.prompts) == len(steps)
    assert graph.invoke({"messages": PROMPT})["answer"].content == reference().text


def test_a_plain_prompt_works_like_a_user_message() -> None:
    generator, mentor = backends()
    graph = build_mentorcollab_graph(generator, mentor, verifier="always-mentor", config=CONFIG)
    assert graph.invoke({"prompt": "Tell me a story."})["answer"].content == reference().text


def test_no_prompt_is_a_clear_error() -> None:
    graph = build_mentorcollab_graph(*backends(), config=CONFIG)
    with pytest.raises(MentorCollabError, match="needs a prompt"):
        graph.invoke({"messages": []})


def test_nodes_are_the_method_steps_joined_by_conditional_edges() -> None:
    graph = build_mentorcollab_graph(*backends(), config=CONFIG)
    drawn = graph.get_graph()
    assert set(NODES) <= set(drawn.nodes)
    conditional = {(edge.source, edge.target) for edge in drawn.edges if edge.conditional}
    loop = {("probe", "lookahead"), ("lookahead", "verify"), ("verify", "continue"), ("continue", "probe")}
    assert loop <= conditional
    mermaid = drawn.draw_mermaid()
    assert "probe -.-> lookahead" in mermaid


def test_one_superstep_per_probe_never_per_word() -> None:
    # Two models that always agree and a low probe rate: long gaps of generator words, each gap a
    # single `continue` superstep.
    story = " ".join(f"word{i}" for i in range(60))
    config = CollabConfig(probe_rate=0.1, seed=3, max_new_tokens=200)
    expected = run_collaboration(PROMPT, ScriptedBackend(story), ScriptedBackend(story), config=config)
    graph = build_mentorcollab_graph(ScriptedBackend(story), ScriptedBackend(story), config=config)
    steps = [name for update in graph.stream({"messages": PROMPT}, stream_mode="updates") for name in update]
    assert graph.invoke({"messages": PROMPT})["answer"].content == expected.text == story
    assert 2 <= steps.count("probe") == expected.stats.probes
    assert steps.count("continue") <= expected.stats.probes + 1
    assert len(steps) <= 2 * expected.stats.probes + 3 < expected.stats.words


def test_streams_committed_text_with_sources_and_each_decision() -> None:
    generator, mentor = backends()
    graph = build_mentorcollab_graph(generator, mentor, verifier="never-mentor", config=CONFIG)
    custom, updates, messages = [], [], []
    for mode, chunk in graph.stream({"messages": PROMPT}, stream_mode=["custom", "updates", "messages"]):
        {"custom": custom, "updates": updates, "messages": messages}[mode].append(chunk)
    answer = reference("never-mentor").text
    texts = [event for event in custom if event["type"] == "text"]
    assert "".join(event["text"] for event in texts) == answer
    assert [(event["start"], event["end"]) for event in texts] == [
        (sum(len(e["text"]) for e in texts[:i]), sum(len(e["text"]) for e in texts[: i + 1])) for i in range(len(texts))
    ]
    assert {event["source"] for event in texts} == {"generator"}
    # Every decision shows in the updates stream, with the choice and both segments.
    decisions = [update["verify"]["step"] for update in updates if "verify" in update]
    assert len(decisions) == reference("never-mentor").stats.divergences >= 2
    assert all(d["mentorcollab.choice"] == "generator" and d["mentorcollab.diverged"] for d in decisions)
    # The messages stream carries committed text only: the rejected mentor segments never show.
    streamed = "".join(message.content for message, _ in messages)
    assert streamed == answer
    rejected = [d["mentorcollab.mentor_segment"] for d in decisions]
    assert all(segment not in streamed for segment in rejected)
    assert len({message.id for message, _ in messages}) == 1
    # Chunks carry the chat model's provenance entries, which add up to the answer.
    provenance = [entry for message, _ in messages for entry in message.response_metadata["mentorcollab_stream"]]
    assert "".join(answer[e["start"] : e["end"]] for e in provenance) == answer


def test_mentor_segments_stream_as_mentor_text() -> None:
    generator, mentor = backends()
    graph = build_mentorcollab_graph(generator, mentor, verifier="always-mentor", config=CONFIG)
    texts = [c for c in graph.stream({"messages": PROMPT}, stream_mode="custom") if c["type"] == "text"]
    by_source = {
        source: "".join(t["text"] for t in texts if t["source"] == source) for source in ("generator", "mentor")
    }
    expected = reference()
    assert "".join(t["text"] for t in texts) == expected.text
    assert len(by_source["mentor"]) == sum(span.end - span.start for span in expected.mentor_spans())


def test_a_node_that_raises_resumes_from_its_checkpoint_with_the_same_text(tmp_path: Path) -> None:
    expected = reference()
    database = tmp_path / "checkpoints.sqlite"
    failing = backends(fail_generator_from=9)
    with SqliteSaver.from_conn_string(str(database)) as saver:
        graph = build_mentorcollab_graph(*failing, verifier="always-mentor", config=CONFIG, checkpointer=saver)
        with pytest.raises(BackendError, match="scripted failure"):
            graph.invoke({"messages": PROMPT}, thread("dies"))
        stopped = graph.get_state(thread("dies"))
        assert stopped.next and stopped.values["collab"].text  # stopped midway, with text already committed
    # A new process would do the same: a new saver on the same file, healthy models, the same thread.
    healthy = backends()
    with SqliteSaver.from_conn_string(str(database)) as saver:
        graph = build_mentorcollab_graph(*healthy, verifier="always-mentor", config=CONFIG, checkpointer=saver)
        result = graph.invoke(None, thread("dies"))
        assert result["answer"].content == expected.text
        assert comparable(result["answer"].response_metadata["mentorcollab"])["decisions"] == [
            d.model_dump() for d in expected.decisions
        ]
        assert [d["position"] for d in decision_log(graph, thread("dies"))] == [d.position for d in expected.decisions]
    assert healthy[0].calls < expected.stats.generator_calls + expected.stats.verifier_calls  # not from scratch


def test_a_failed_mentor_that_raises_by_config_resumes_too() -> None:
    config = CONFIG.model_copy(update={"on_mentor_error": "raise"})
    saver = InMemorySaver()
    generator, _ = backends()
    broken_mentor = ScriptedBackend(MENTOR_ANSWER, name="men", fail_from_call=3)
    graph = build_mentorcollab_graph(
        generator, broken_mentor, verifier="always-mentor", config=config, checkpointer=saver
    )
    with pytest.raises(BackendError):
        graph.invoke({"messages": PROMPT}, thread("mentor"))
    graph = build_mentorcollab_graph(*backends(), verifier="always-mentor", config=config, checkpointer=saver)
    assert graph.invoke(None, thread("mentor"))["answer"].content == reference(config=config).text


def test_decisions_are_listed_from_the_checkpoint_history() -> None:
    graph = build_mentorcollab_graph(*backends(), verifier="always-mentor", config=CONFIG, checkpointer=InMemorySaver())
    graph.invoke({"messages": PROMPT}, thread("history"))
    log = decision_log(graph, thread("history"))
    expected = reference()
    assert [(d["generator_word"], d["mentor_word"], d["choice"]) for d in log] == [
        (d.generator_word, d.mentor_word, d.choice) for d in expected.decisions
    ]
    assert len({d["checkpoint_id"] for d in log}) == len(log)
    # A second request on the same thread starts afresh, and its decisions are listed after the first's.
    second = graph.invoke({"messages": [{"role": "user", "content": "Again."}]}, thread("history"))
    assert second["answer"].content == expected.text
    assert [m.type for m in second["messages"]] == ["human", "ai", "human", "ai"]
    assert len(decision_log(graph, thread("history"))) == 2 * len(log)
    assert len({d["answer_id"] for d in decision_log(graph, thread("history"))}) == 2


def _run_to_interrupt(graph, name: str):
    result = graph.invoke({"messages": PROMPT}, thread(name))
    interrupts = result.get("__interrupt__") or graph.get_state(thread(name)).interrupts
    return interrupts


@pytest.mark.parametrize("choice", ["generator", "mentor"])
def test_human_verifier_sees_both_segments_and_the_score_and_decides(choice: str) -> None:
    generator, mentor = backends()
    graph = build_mentorcollab_graph(
        generator, mentor, verifier="self-consult", config=CONFIG, checkpointer=InMemorySaver(), human_verifier=True
    )
    interrupts = _run_to_interrupt(graph, choice)
    assert len(interrupts) == 1
    shown = interrupts[0].value
    assert shown["generator_segment"] == " cat sat on" and shown["mentor_segment"] == " dog ran in"
    assert shown["verifier"] == "self-consult" and 0.0 < shown["verifier_score"] < 1.0
    # The interrupt tells a client (Studio, an app) what to resume with (langgraph>=1.2.12's response_schema).
    assert interrupts[0].response_schema["properties"]["choice"]["enum"] == ["generator", "mentor"]
    assert graph.get_state(thread(choice)).next == ("verify",)
    mentor_calls = mentor.calls
    # Resume with the person's choice for every divergence; lookaheads are never recomputed.
    while True:
        result = graph.invoke(Command(resume=choice), thread(choice))
        if "__interrupt__" not in result:
            break
    decisions = result["answer"].response_metadata["mentorcollab"]["decisions"]
    assert decisions and all(d["choice"] == choice and d["verifier"] == "human" for d in decisions)
    expected = reference("always-mentor" if choice == "mentor" else "never-mentor")
    assert result["answer"].content == expected.text
    assert mentor.calls == expected.stats.mentor_calls and mentor_calls > 0


def test_first_resume_commits_without_calling_a_model() -> None:
    generator, mentor = backends()
    graph = build_mentorcollab_graph(
        generator, mentor, config=CONFIG, checkpointer=InMemorySaver(), human_verifier=True
    )
    _run_to_interrupt(graph, "cheap")
    before = (generator.calls, mentor.calls)
    stream = graph.stream(Command(resume="mentor"), thread("cheap"), stream_mode="updates")
    first = next(iter(stream))
    assert list(first) == ["verify"] and first["verify"]["step"]["mentorcollab.choice"] == "mentor"
    assert (generator.calls, mentor.calls) == before
    stream.close()


@pytest.mark.parametrize("bad", ["maybe", 1, True, {"choice": "both"}, {"choice": "mentor", "score": "high"}])
def test_a_bad_resume_value_is_a_clear_error_and_a_good_one_still_works(bad) -> None:
    graph = build_mentorcollab_graph(*backends(), config=CONFIG, checkpointer=InMemorySaver(), human_verifier=True)
    _run_to_interrupt(graph, "bad")
    with pytest.raises(InvalidResumeError, match=r"Command\(resume='generator'\)"):
        graph.invoke(Command(resume=bad), thread("bad"))
    assert graph.get_state(thread("bad")).next == ("verify",)
    result = graph.invoke(Command(resume={"choice": "Mentor"}), thread("bad"))
    assert result.get("__interrupt__")  # the next divergence asks again


def test_parse_choice() -> None:
    assert parse_choice("mentor") == ("mentor", None)
    assert parse_choice({"choice": "generator", "score": 0.25}) == ("generator", 0.25)
    with pytest.raises(InvalidResumeError):
        parse_choice("B")


def test_works_as_a_subgraph_of_a_larger_application() -> None:
    collab = build_mentorcollab_graph(*backends(), verifier="always-mentor", config=CONFIG)

    def greet(state: MessagesState) -> dict:
        return {"messages": [{"role": "system", "content": "Be brief."}]}

    app = StateGraph(MessagesState)
    app.add_node("greet", greet)
    app.add_node("mentorcollab", collab)
    app.add_edge(START, "greet")
    app.add_edge("greet", "mentorcollab")
    app = app.compile(checkpointer=InMemorySaver())
    result = app.invoke({"messages": [HumanMessage("Tell me a story.")]}, thread("parent"))
    expected = chat_model().invoke(result["messages"][:2])
    assert [m.type for m in result["messages"]] == ["human", "system", "ai"]
    same_message(result["messages"][-1], expected)
    subgraph_text = [
        chunk["text"]
        for namespace, chunk in app.stream(
            {"messages": [HumanMessage("Tell me a story.")]}, thread("parent2"), stream_mode="custom", subgraphs=True
        )
        if chunk["type"] == "text" and namespace
    ]
    assert "".join(subgraph_text) == expected.content
    # The subgraph's decisions are in the application's checkpoint history, one run per request.
    log = decision_log(app, thread("parent"))
    recorded = expected.response_metadata["mentorcollab"]["decisions"]
    assert [(d["position"], d["choice"]) for d in log] == [(d["position"], d["choice"]) for d in recorded]
    assert all(d["checkpoint_ns"].startswith("mentorcollab:") for d in log)


def test_node_spans_carry_the_decision_attributes() -> None:
    graph = build_mentorcollab_graph(*backends(), verifier="always-mentor", config=CONFIG)
    with in_memory_tracing() as exporter:
        graph.invoke({"messages": PROMPT})
    spans = node_spans(exporter.get_finished_spans())
    assert {span.name for span in spans} == {"prepare", "continue", "probe", "lookahead", "verify", "finish"}
    probes = [dict(span.attributes) for span in spans if span.name == "probe"]
    assert all({"mentorcollab.probe.position", "mentorcollab.generator_word", "mentorcollab.mentor_word",
                "mentorcollab.diverged"} <= set(p) for p in probes)
    assert any(p["mentorcollab.diverged"] for p in probes) and not all(p["mentorcollab.diverged"] for p in probes)
    verifies = [dict(span.attributes) for span in spans if span.name == "verify"]
    expected = reference()
    traced = [
        (v["mentorcollab.probe.position"], v["mentorcollab.choice"], v["mentorcollab.verifier_score"]) for v in verifies
    ]
    assert traced == [(d.position, d.choice, d.score) for d in expected.decisions]
    assert all('"mentorcollab.choice"' in v["metadata"] for v in verifies)  # the run's metadata carries them too


@pytest.mark.slow  # several seconds: the fast set stays under two minutes
def test_checkpoints_load_under_strict_msgpack(tmp_path: Path) -> None:
    """With LANGGRAPH_STRICT_MSGPACK=true only allowlisted types load: the state schema's types are."""
    script = (
        "import sys\n"
        "from langgraph.checkpoint.sqlite import SqliteSaver\n"
        "from graphs import build_mentorcollab_graph, decision_log\n"
        "from mentorcollab_langchain.backends import ScriptedBackend\n"
        "from mentorcollab_langchain.engine import CollabConfig\n"
        "config = CollabConfig(probe_rate=0.5, segment_tokens=3, seed=1, max_new_tokens=60)\n"
        "thread = {'configurable': {'thread_id': 'strict'}}\n"
        "with SqliteSaver.from_conn_string(sys.argv[1]) as saver:\n"
        f"    graph = build_mentorcollab_graph(ScriptedBackend({GENERATOR_ANSWER!r}), "
        f"ScriptedBackend({MENTOR_ANSWER!r}),\n"
        "        verifier='always-mentor', config=config, checkpointer=saver)\n"
        "    graph.invoke({'prompt': 'Tell me a story.'}, thread)\n"
        "    state = graph.get_state(thread).values\n"
        "    print(type(state['collab']).__name__, len(state['collab'].decisions), "
        "type(state['collab'].decisions[0]).__name__)\n"
        "    from langgraph.graph import START, MessagesState, StateGraph\n"
        "    app = StateGraph(MessagesState)\n"
        f"    sub = build_mentorcollab_graph(ScriptedBackend({GENERATOR_ANSWER!r}), "
        f"ScriptedBackend({MENTOR_ANSWER!r}),\n"
        "        verifier='always-mentor', config=config)  # inherits the app's checkpointer\n"
        "    app.add_node('mentorcollab', sub)\n"
        "    app.add_edge(START, 'mentorcollab')\n"
        "    app = app.compile(checkpointer=saver)\n"
        "    app.invoke({'messages': [('user', 'Tell me a story.')]}, {'configurable': {'thread_id': 'app'}})\n"
        "    print(len(decision_log(app, {'configurable': {'thread_id': 'app'}})))\n"
    )
    environment = os.environ | {"LANGGRAPH_STRICT_MSGPACK": "true", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "strict.sqlite")],
        capture_output=True, text=True, env=environment, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    decisions = str(len(reference().decisions))
    assert done.stdout.split() == ["CollabState", decisions, "Decision", decisions]
    assert "blocked" not in done.stderr.lower()
    with sqlite3.connect(tmp_path / "strict.sqlite") as connection:
        assert connection.execute("select count(*) from checkpoints").fetchone()[0] > 5


async def test_async_streaming_gives_the_same_answer() -> None:
    graph = build_mentorcollab_graph(*backends(), verifier="always-mentor", config=CONFIG)
    texts = [c["text"] async for c in graph.astream({"messages": PROMPT}, stream_mode="custom") if c["type"] == "text"]
    assert "".join(texts) == reference().text
    assert (await graph.ainvoke({"messages": PROMPT}))["answer"].content == reference().text


def test_verify_spans_say_what_the_score_was_made_of_under_the_uncertain_policy() -> None:
    config = CollabConfig(probe_policy="uncertain", uncertainty_threshold=0.6, probe_rate=0.0, segment_tokens=2,
                          max_new_tokens=40)
    generator = ScriptedBackend(GENERATOR_ANSWER, name="gen", confidence=[0.9, 0.3])  # unsure at " cat"
    graph = build_mentorcollab_graph(generator, ScriptedBackend(MENTOR_ANSWER, name="men"), verifier="mentor-margin",
                                     config=config)
    with in_memory_tracing() as exporter:
        graph.invoke({"messages": PROMPT})
    spans = node_spans(exporter.get_finished_spans())
    probes = [dict(span.attributes) for span in spans if span.name == "probe"]
    assert [p["mentorcollab.probe.word_index"] for p in probes] == [1]  # only where the generator was unsure
    verify = next(dict(span.attributes) for span in spans if span.name == "verify")
    assert verify["mentorcollab.verifier"] == "mentor-margin" and verify["mentorcollab.choice"] == "mentor"
    assert verify["mentorcollab.verifier_evidence.mean_logprob_margin"] == pytest.approx(9.0)
    assert verify["mentorcollab.verifier_evidence.threshold"] == 0.5
    standalone = run_collaboration(
        PROMPT, ScriptedBackend(GENERATOR_ANSWER, confidence=[0.9, 0.3]), ScriptedBackend(MENTOR_ANSWER),
        verifier="mentor-margin", config=config)
    traced_margin = verify["mentorcollab.verifier_evidence.mean_logprob_margin"]
    assert standalone.decisions[0].evidence["mean_logprob_margin"] == traced_margin
