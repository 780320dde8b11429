"""The graph's nodes: one module-level function per step of the method.

Each node calls the engine's step of its name (``engine.steps.STEPS``) on a copy of the state's
``CollabState``, with the run's team from ``runtime.context``, and returns the new state: the graph
adds checkpointing, interrupts, streaming and tracing around the one implementation of the method, it
never re-implements a step. A node takes ``(state, runtime, config)``; ``config`` names the thread,
which picks the run's team. To run one alone, give it a ``Runtime(context=MentorCollabContext(...))``
and call it inside a runnable (a ``RunnableLambda``), where LangGraph's ``push_message`` finds the
config it streams committed text with (tests/unit/graphs/test_graph_nodes.py does so).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from graphs import human, tools
from graphs.context import MentorCollabContext
from graphs.events import Emitter, step_attributes
from graphs.state import MentorCollabState, Request
from graphs.tracing import annotate_node_span
from mentorcollab_langchain.chat import answer_message, to_engine_messages
from mentorcollab_langchain.engine import steps as engine
from mentorcollab_langchain.engine.events import Event
from mentorcollab_langchain.engine.state import CollabState
from mentorcollab_langchain.engine.steps import StepName
from mentorcollab_langchain.engine.team import Team
from mentorcollab_langchain.errors import MentorCollabError

Node = Callable[[MentorCollabState, Runtime[MentorCollabContext], RunnableConfig], dict[str, Any]]


def prepare(
    state: MentorCollabState, runtime: Runtime[MentorCollabContext], config: RunnableConfig
) -> dict[str, Any]:
    """Start a collaboration for the request (a new one on the thread starts afresh) and draw the first gap.

    With tools offered, the request is always a conversation (a ``prompt`` becomes its user message), which
    the tools travel with; a forced call asks for itself in the system message and starts the answer."""
    prompt, messages = state.get("prompt"), state.get("messages") or []
    if not prompt and not messages:
        raise MentorCollabError("the MentorCollab graph needs a prompt: pass {'messages': [...]} or {'prompt': '...'}")
    bound = runtime.context.tools
    choice = tools.normalize_choice(bound, state.get("tool_choice"))
    answer = tools.answer_format(bound, choice)
    request: Request
    if prompt and not tools.offered(bound, choice):
        request = prompt
    else:
        request = to_engine_messages([HumanMessage(prompt)] if prompt else messages, [answer.instruction])
    fresh = {
        "request": request,
        "tool_choice": choice,
        "collab": CollabState(text=answer.prefix, emitted=len(answer.prefix)),
        "answer_id": f"mentorcollab-{uuid.uuid4()}",
    }
    with _step("prepare", {**state, **fresh}, runtime, config) as run:  # type: ignore[arg-type]
        run.play(engine.prepare)
    return fresh | run.update() | {"prompt": None, "machine_verdict": None, "answer": None}


def continue_words(
    state: MentorCollabState, runtime: Runtime[MentorCollabContext], config: RunnableConfig
) -> dict[str, Any]:
    """The generator writes alone for the whole gap to the next probe: one node per gap, not per word."""
    with _step("continue", state, runtime, config) as run:
        run.play(engine.continue_words)
    return run.update()


def probe(
    state: MentorCollabState, runtime: Runtime[MentorCollabContext], config: RunnableConfig
) -> dict[str, Any]:
    """Both models propose their next word; agreement commits it, divergence opens a lookahead."""
    with _step("probe", state, runtime, config) as run:
        run.play(engine.probe)
    return run.update()


def lookahead(
    state: MentorCollabState, runtime: Runtime[MentorCollabContext], config: RunnableConfig
) -> dict[str, Any]:
    """Each model extends its word to a segment. For a human verifier, the automatic verifier scores the
    divergence here, so that ``verify`` only asks the person and resuming it recomputes nothing."""
    verdict = None
    with _step("lookahead", state, runtime, config) as run:
        run.play(engine.lookahead)
        if runtime.context.human_verifier and run.collab.divergence is not None:
            verdict = human.machine_verdict(run.collab, run.team)
    if verdict is None:
        return run.update()
    return run.update(human.verdict_attributes(verdict)) | {"machine_verdict": verdict}


def verify(
    state: MentorCollabState, runtime: Runtime[MentorCollabContext], config: RunnableConfig
) -> dict[str, Any]:
    """The verifier decides the divergence and its choice is committed; a human verifier is asked
    through an interrupt instead (``graphs.human``)."""
    with _step("verify", state, runtime, config) as run:
        if runtime.context.human_verifier:
            run.play(partial(human.decide, verdict=state.get("machine_verdict")))
        else:
            run.play(engine.verify)
    return run.update()


def finish(
    state: MentorCollabState, runtime: Runtime[MentorCollabContext], config: RunnableConfig
) -> dict[str, Any]:
    """Release the held-back text, close the run's cursors and give the answer as the chat model does (with
    the tool calls it wrote), clearing the tool choice that was this answer's alone."""
    context = runtime.context
    choice = state.get("tool_choice")
    with _step("finish", state, runtime, config) as run:
        run.play(engine.finish)
    context.teams.release(state["request"], config)
    update = run.update()
    message = answer_message(
        update["collab"],
        prompt=context.prompt(state["request"], choice),
        config=context.config,
        generator=context.generator,
        mentor=context.mentor,
        verifier_name=context.verifier_name,
        message_id=state["answer_id"],
    )
    message = tools.with_tool_calls(message, context.tools, choice)
    return update | {"answer": message, "messages": [message], "machine_verdict": None, "tool_choice": None}


# The node of each step, in the engine's order (``engine.steps.STEPS``).
STEP_NODES: dict[StepName, Node] = {
    "prepare": prepare,
    "continue": continue_words,
    "probe": probe,
    "lookahead": lookahead,
    "verify": verify,
    "finish": finish,
}


class _StepRun:
    """One node's work: engine steps played on a copy of the state's ``CollabState`` with the run's team.

    The copy keeps the value the channel (and the checkpoint) holds untouched; events are streamed as
    they come, and ``update`` turns what happened into the node's state update and span attributes.
    """

    def __init__(self, step: StepName, state: MentorCollabState, team: Team, emit: Emitter) -> None:
        self.step, self.team, self.emit = step, team, emit
        self.before = state["collab"]
        self.collab = self.before.model_copy(deep=True)
        self.events: list[Event] = []

    def play(self, step: Callable[[CollabState, Team], Iterator[Event]]) -> None:
        for event in step(self.collab, self.team):
            self.events.append(event)
            self.emit(event)

    def update(self, extra_attributes: dict[str, Any] | None = None) -> dict[str, Any]:
        attributes = step_attributes(self.step, self.before, self.collab, self.events) | (extra_attributes or {})
        annotate_node_span(attributes)
        return {"collab": self.collab, "step": attributes}


@contextmanager
def _step(
    step: StepName, state: MentorCollabState, runtime: Runtime[MentorCollabContext], config: RunnableConfig
) -> Iterator[_StepRun]:
    """The node's run with its thread's team; with ``exact_resume`` the team is closed after the node."""
    context = runtime.context
    request, choice = state["request"], state.get("tool_choice")
    emit = Emitter(runtime.stream_writer, state["answer_id"], stream_text=not tools.offered(context.tools, choice))
    try:
        with context.teams.use(request, config, partial(context.open_team, request, choice)) as team:
            yield _StepRun(step, state, team, emit)
    finally:
        if context.exact_resume:
            context.teams.release(request, config)
