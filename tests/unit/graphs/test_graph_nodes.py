"""The graph's nodes one at a time, outside any graph, on the scripted backend.

A node is a plain function of (state, runtime, config): these tests hand it a state and a
``Runtime`` whose context they built, and check the update it returns and what it streamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from graphs import MentorCollabContext, MentorCollabState, build_mentorcollab_graph
from graphs.mentorcollab import next_node
from graphs.nodes import STEP_NODES, Node, finish, lookahead, prepare, probe, verify
from mentorcollab_langchain.backends import ScriptedBackend
from mentorcollab_langchain.engine import CollabConfig, CollabState, Span, run_collaboration
from mentorcollab_langchain.engine.steps import STEPS
from mentorcollab_langchain.verifiers import get_verifier

GENERATOR_ANSWER = "The cat sat on the mat and then it slept all day long in the warm sun."
MENTOR_ANSWER = "The dog ran in the park and then it barked all night long at the cold moon."
PROMPT = [{"role": "user", "content": "Tell me a story."}]
CONFIG = CollabConfig(probe_rate=0.5, segment_tokens=3, seed=1, max_new_tokens=60)


def make_context(verifier: str = "always-mentor", **settings: Any) -> MentorCollabContext:
    return MentorCollabContext(
        generator=ScriptedBackend(GENERATOR_ANSWER, name="gen"),
        mentor=ScriptedBackend(MENTOR_ANSWER, name="men"),
        verifier=get_verifier(verifier),
        **{"config": CONFIG, **settings},
    )


def run_node(node: Node, state: dict, context: MentorCollabContext, thread: str = "t") -> tuple[dict, list[dict]]:
    """Call one node as LangGraph would (inside a runnable, for the messages stream), outside any graph.

    Returns its update and what it wrote to the custom stream.
    """
    written: list[dict] = []
    runtime = Runtime(context=context, stream_writer=written.append)

    def call(value: dict, config: RunnableConfig) -> dict:
        return node(value, runtime, config)  # type: ignore[arg-type]

    update = RunnableLambda(call).invoke(state, {"configurable": {"thread_id": thread}})
    return update, written


def at_the_first_divergence() -> dict:
    """A graph state just before a probe where the scripted models diverge (" cat" against " dog")."""
    collab = CollabState(text="The", spans=[Span(start=0, end=3, source="generator")], emitted=3, prepared=True)
    return {"messages": [], "request": PROMPT, "collab": collab, "answer_id": "mentorcollab-test"}


def test_every_step_has_its_node() -> None:
    assert list(STEP_NODES) == list(STEPS)


def test_prepare_fixes_the_request_and_starts_a_fresh_collaboration() -> None:
    context = make_context()
    old = CollabState(text="an earlier answer", prepared=True, finish_reason="eos")
    update, written = run_node(prepare, {"messages": [HumanMessage("Tell me a story.")], "collab": old}, context)
    assert update["request"] == PROMPT
    assert update["collab"].prepared and update["collab"].text == "" and update["collab"].gaps_drawn == 1
    assert update["answer_id"].startswith("mentorcollab-")
    assert (update["prompt"], update["machine_verdict"], update["answer"]) == (None, None, None)
    assert update["step"]["mentorcollab.step"] == "prepare" and written == []
    assert len(context.teams) == 1  # the run's cursors stay open for the next node


def test_probe_alone_opens_a_divergence_and_leaves_its_input_untouched() -> None:
    state = at_the_first_divergence()
    update, written = run_node(probe, state, make_context())
    divergence = update["collab"].divergence
    assert (divergence.position, divergence.generator_word.text, divergence.mentor_word.text) == (3, " cat", " dog")
    assert update["step"]["mentorcollab.diverged"] is True
    assert update["step"]["mentorcollab.probe.position"] == 3
    assert written == [{"type": "probe", "position": 3, "word_index": 0, "generator_word": " cat",
                        "mentor_word": " dog", "diverged": True}]
    assert state["collab"].divergence is None and state["collab"].stats.probes == 0  # worked on a copy
    assert next_node({**state, **update}) == "lookahead"


def test_lookahead_then_verify_commit_the_verifiers_choice() -> None:
    context = make_context("always-mentor")
    state = at_the_first_divergence()
    state |= run_node(probe, state, context)[0]
    state |= run_node(lookahead, state, context)[0]
    assert state["step"]["mentorcollab.mentor_segment"] == " dog ran in"
    assert "machine_verdict" not in state  # only a human verifier needs the verdict ahead
    assert next_node(state) == "verify"
    update, written = run_node(verify, state, context)
    assert update["collab"].text == "The dog ran in"
    assert [d.choice for d in update["collab"].decisions] == ["mentor"]
    assert update["step"]["mentorcollab.choice"] == "mentor"
    assert [(e["type"], e.get("source")) for e in written] == [("decision", None), ("text", "mentor")]


def test_lookahead_for_a_human_verifier_scores_the_divergence_ahead() -> None:
    context = make_context("never-mentor", human_verifier=True)
    state = at_the_first_divergence()
    state |= run_node(probe, state, context)[0]
    update, _ = run_node(lookahead, state, context)
    verdict = {"choice": "generator", "score": 0.0, "verifier": "never-mentor", "evidence": {}}
    assert update["machine_verdict"] == verdict
    assert update["step"]["mentorcollab.verifier_choice"] == "generator"
    assert update["collab"].stats.verifier_calls == 1


def test_the_verify_node_asks_a_person_in_a_graph_of_your_own() -> None:
    """A node is a building block: here verify alone is a graph, and a person answers its interrupt."""
    context = make_context("always-mentor", human_verifier=True)
    state = at_the_first_divergence()
    state |= run_node(probe, state, context)[0]
    state |= run_node(lookahead, state, context)[0]
    builder = StateGraph(MentorCollabState, context_schema=MentorCollabContext)
    builder.add_node("verify", verify)
    builder.add_edge(START, "verify")
    graph = builder.compile(checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "person"}}
    asked = graph.invoke(state, thread, context=context)["__interrupt__"][0].value
    assert (asked["generator_segment"], asked["mentor_segment"], asked["verifier_choice"]) == (
        " cat sat on", " dog ran in", "mentor")
    done = graph.invoke(Command(resume="generator"), thread, context=context)
    decision = done["collab"].decisions[0]
    assert (decision.choice, decision.verifier, decision.score) == ("generator", "human", 1.0)
    assert done["collab"].text == "The cat sat on"


def test_stepping_the_nodes_by_hand_gives_the_graphs_answer() -> None:
    context = make_context()
    state: dict = {"messages": [HumanMessage("Tell me a story.")]}
    steps = []
    while not steps or steps[-1] != "finish":
        step = "prepare" if not steps else next_node(state)  # type: ignore[arg-type]
        update, _ = run_node(STEP_NODES[step], state, context)
        state |= {key: value for key, value in update.items() if key != "messages"}
        steps.append(step)
    expected = run_collaboration(PROMPT, ScriptedBackend(GENERATOR_ANSWER), ScriptedBackend(MENTOR_ANSWER),
                                 verifier="always-mentor", config=CONFIG)
    assert state["answer"].content == expected.text and state["answer"].id == state["answer_id"]
    assert steps.count("verify") == len(expected.decisions) >= 2
    assert len(context.generator.prompts) == 1 and len(context.teams) == 0  # opened once, closed at finish


def test_finish_releases_the_held_back_text_and_answers() -> None:
    context = make_context(config=CONFIG.model_copy(update={"stop": ["mat"]}))
    collab = CollabState(text="The cat sat on the m", spans=[Span(start=0, end=20, source="generator")], emitted=19,
                         prepared=True, finish_reason="length")
    state = {"messages": [], "request": PROMPT, "collab": collab, "answer_id": "a1"}
    update, written = run_node(finish, state, context)
    assert written == [{"type": "text", "text": "m", "source": "generator", "start": 19, "end": 20},
                       {"type": "finished", "reason": "length"}]
    assert update["answer"].content == "The cat sat on the m" and update["messages"] == [update["answer"]]
    assert update["answer"].response_metadata["mentorcollab"]["verifier"] == "always-mentor"


def test_exact_resume_closes_the_cursors_after_every_node() -> None:
    context = make_context(exact_resume=True)
    run_node(probe, at_the_first_divergence(), context)
    run_node(probe, at_the_first_divergence(), context)
    assert len(context.teams) == 0 and len(context.generator.prompts) == 2


def test_runs_on_different_threads_get_their_own_cursors() -> None:
    context = make_context()
    run_node(probe, at_the_first_divergence(), context, thread="one")
    run_node(probe, at_the_first_divergence(), context, thread="two")
    run_node(probe, at_the_first_divergence(), context, thread="one")
    assert len(context.teams) == 2 and len(context.mentor.prompts) == 2


def test_a_context_given_to_a_call_replaces_the_bound_one() -> None:
    graph = build_mentorcollab_graph(ScriptedBackend(GENERATOR_ANSWER), ScriptedBackend(MENTOR_ANSWER),
                                     verifier="never-mentor", config=CONFIG)
    bound = graph.invoke({"messages": PROMPT})["answer"].content
    other = graph.invoke({"messages": PROMPT}, context=make_context("always-mentor"))["answer"].content
    assert bound == GENERATOR_ANSWER and other != bound
    assert other == run_collaboration(PROMPT, ScriptedBackend(GENERATOR_ANSWER), ScriptedBackend(MENTOR_ANSWER),
                                      verifier="always-mentor", config=CONFIG).text
    assert graph.with_config(run_name="story").bound_context is graph.bound_context


@dataclass
class Tenant:
    name: str


def test_a_parents_own_context_does_not_reach_the_subgraphs_nodes() -> None:
    collab = build_mentorcollab_graph(ScriptedBackend(GENERATOR_ANSWER), ScriptedBackend(MENTOR_ANSWER),
                                      verifier="never-mentor", config=CONFIG)

    def greet(state: MessagesState, runtime: Runtime[Tenant]) -> dict:
        return {"messages": [{"role": "system", "content": f"You write for {runtime.context.name}."}]}

    app = StateGraph(MessagesState, context_schema=Tenant)
    app.add_node("greet", greet)
    app.add_node("mentorcollab", collab)
    app.add_edge(START, "greet")
    app.add_edge("greet", "mentorcollab")
    result = app.compile().invoke({"messages": PROMPT}, context=Tenant("ann"))
    assert [m.content for m in result["messages"]] == ["Tell me a story.", "You write for ann.", GENERATOR_ANSWER]


def test_the_bound_context_is_no_client_schema() -> None:
    """It holds models and open cursors: a LangGraph server must not ask its clients for one."""
    graph = build_mentorcollab_graph(ScriptedBackend(GENERATOR_ANSWER), ScriptedBackend(MENTOR_ANSWER))
    assert graph.get_context_jsonschema() is None


def test_nodes_and_routing_take_their_dependencies_from_the_runtime_context_never_a_closure() -> None:
    """Two graphs of different models share the very same node functions: what a run uses comes in
    through ``runtime.context``, so a node can be run, tested or resumed with any context."""
    graphs_built = [
        build_mentorcollab_graph(ScriptedBackend(answer), ScriptedBackend(MENTOR_ANSWER), tools=[tool_stub])
        for answer in (GENERATOR_ANSWER, "Another answer.")
    ]
    for step in STEPS:
        functions = {graph.builder.nodes[step].runnable.func for graph in graphs_built}
        assert functions == {STEP_NODES[step]}
        node = STEP_NODES[step]
        assert node.__closure__ is None and node.__qualname__ == node.__name__  # module-level, closes over nothing
        assert "runtime" in graphs_built[0].builder.nodes[step].runnable.func_accepts
    for graph in graphs_built:
        assert {branch.path.func for branches in graph.builder.branches.values() for branch in branches.values()} == {
            next_node
        }


def tool_stub(text: str) -> str:
    """Echo the text."""
    return text
