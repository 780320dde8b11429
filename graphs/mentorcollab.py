"""MentorCollab as a LangGraph graph: the method's steps as explicit nodes.

The graph is the method's diagram. Its nodes are the engine's steps (``prepare``, ``continue``,
``probe``, ``lookahead``, ``verify``, ``finish``: ``graphs.nodes``), and after each one the engine's
``next_step`` picks the next, along the edges ``engine.steps.NEXT_STEPS`` says it can take::

    prepare -> continue -> probe -+-> (words agree) ----------------------------> continue ...
                                  +-> (diverge) -> lookahead -> verify -> commit -> continue ...
    any step that ends the answer -> finish -> END

``continue`` runs the generator for the whole gap to the next probe, so a run takes one superstep per
probe, never one per word or token. The state is plain data (``graphs.state``); the models, the
verifier and the open cursors reach the nodes as LangGraph's runtime context (``graphs.context``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langgraph.graph import END, START, StateGraph

from graphs import tools as graph_tools
from graphs.context import ContextBoundGraph, MentorCollabContext
from graphs.nodes import STEP_NODES
from graphs.state import MentorCollabInput, MentorCollabOutput, MentorCollabState
from graphs.teams import TeamCache
from mentorcollab_langchain.backends.base import Backend, require_backend
from mentorcollab_langchain.engine.config import CollabConfig
from mentorcollab_langchain.engine.steps import NEXT_STEPS, STEPS, StepName, next_step
from mentorcollab_langchain.errors import ConfigError
from mentorcollab_langchain.verifiers import Verifier, get_verifier

NODES: tuple[StepName, ...] = tuple(STEPS)


def next_node(state: MentorCollabState) -> StepName:
    """Where a run goes after any step: wherever the engine's ``next_step`` says, read from the state."""
    return next_step(state["collab"])


def build_mentorcollab_graph(
    generator: Backend,
    mentor: Backend,
    verifier: str | Verifier | None = None,
    config: CollabConfig | Mapping[str, Any] | None = None,
    checkpointer: Any = None,
    human_verifier: bool = False,
    *,
    exact_resume: bool = False,
    tools: Sequence[Any] = (),
    name: str = "mentorcollab",
) -> ContextBoundGraph:
    """The method as a compiled LangGraph graph.

    Args:
        generator, mentor: backends (``TransformersBackend``, remote or scripted) the graph opens
            cursors on; their weights are shared, their per-request caches stay out of the state.
        verifier: the automatic verifier (name or object); with ``human_verifier`` it still scores each
            divergence, and the person sees that score.
        config: the collaboration settings (the same ``CollabConfig`` the engine and chat model take, or a
            dict of its fields).
        checkpointer: any LangGraph checkpointer (in-memory, SQLite ...), or ``None`` to inherit the
            parent graph's when used as a subgraph.
        human_verifier: interrupt at ``verify`` with both candidate segments and the verifier's score;
            resume with ``Command(resume="generator" | "mentor")``.
        exact_resume: start every node from cursors rebuilt from the state's text, exactly as a
            resumed run does. By default the cursors keep their KV caches from node to node (the same
            computation as ``ChatMentorCollab``), and a resume rebuilds them in one prefill, which in
            floating point can differ in the last bits from the token-by-token cache and flip a
            near-tie greedy choice. With ``exact_resume`` an interrupted and resumed run repeats the
            uninterrupted one's arithmetic exactly, at the cost of one prefill per node and model.
        tools: tools the answers may call (LangChain tools, functions, pydantic classes or OpenAI dicts), as
            ``ChatMentorCollab.bind_tools`` takes them: the graph is then the model step of a tool-calling
            agent (``langgraph.prebuilt.ToolNode`` runs the calls). Each answer's ``tool_choice`` comes with
            its input (``graphs.tools``).
        name: the graph's name (its runs' name in traces).

    Input ``{"messages": [...]}`` or ``{"prompt": "..."}`` (and ``"tool_choice"``); output ``{"messages": [...,
    AIMessage], "answer": AIMessage}`` whose ``response_metadata["mentorcollab"]`` is the run's record. The graph
    runs with these arguments as its context; pass ``context=MentorCollabContext(...)`` to a call to
    run it with others.
    """
    require_backend("generator", generator)
    require_backend("mentor", mentor)
    if isinstance(config, Mapping):
        config = CollabConfig(**config)
    elif config is not None and not isinstance(config, CollabConfig):
        raise ConfigError(f"config must be a CollabConfig or a dict of its fields, got {type(config).__name__}")
    context = MentorCollabContext(
        generator=generator,
        mentor=mentor,
        verifier=get_verifier(verifier, generator=generator),
        config=config or CollabConfig(),
        teams=TeamCache(),
        exact_resume=exact_resume,
        human_verifier=human_verifier,
        tools=graph_tools.bound_tools(tools),
    )
    builder = StateGraph(
        MentorCollabState,
        context_schema=MentorCollabContext,
        input_schema=MentorCollabInput,
        output_schema=MentorCollabOutput,
    )
    for step in NODES:
        builder.add_node(step, STEP_NODES[step])
    builder.add_edge(START, "prepare")
    for step, after in NEXT_STEPS.items():
        if after:
            builder.add_conditional_edges(step, next_node, list(after))
        else:
            builder.add_edge(step, END)
    return ContextBoundGraph.bind(builder.compile(checkpointer=checkpointer, name=name), context)
