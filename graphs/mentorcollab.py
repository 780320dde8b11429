"""MentorCollab as a LangGraph graph: the method's steps as explicit nodes.

``build_mentorcollab_graph`` returns a compiled graph whose nodes are named after the engine's steps
(``prepare``, ``continue``, ``probe``, ``lookahead``, ``verify``, ``finish``) and joined by conditional
edges that follow ``engine.next_step``. Each node calls the engine's step function for its name: the
graph adds checkpointing, interrupts, streaming and tracing around the one implementation of the
method, it never re-implements a step. ``continue`` runs the generator for the whole gap to the next
probe, so a run takes one superstep per probe, never one per word or token.

The graph state is plain data (the engine's ``CollabState`` plus the request and the answer message);
the models and their KV caches live outside it, in a per-graph cache of cursors keyed by thread, and
are rebuilt from the state's text after a resume.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AIMessage, AIMessageChunk, AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages, push_message
from langgraph.types import interrupt
from pydantic import BaseModel, Field, ValidationError, model_validator
from typing_extensions import NotRequired

from mentorcollab_langchain.backends.base import Backend, ChatMessage
from mentorcollab_langchain.chat import answer_message as chat_answer_message
from mentorcollab_langchain.chat import text_chunk, to_engine_messages
from mentorcollab_langchain.engine.config import CollabConfig
from mentorcollab_langchain.engine.events import Decided, Event, Finished, MentorFailed, Probed, TextCommitted
from mentorcollab_langchain.backends.base import Confidence, Piece
from mentorcollab_langchain.engine.state import CollabState, Decision, Divergence, Span, Stats
from mentorcollab_langchain.engine.steps import STEPS, StepName, Team, commit_verdict, next_step, score_divergence
from mentorcollab_langchain.errors import MentorCollabError
from mentorcollab_langchain.verifiers import Verdict, Verifier, get_verifier

from graphs.tracing import annotate_node_span

NODES: tuple[StepName, ...] = ("prepare", "continue", "probe", "lookahead", "verify", "finish")
HUMAN = "human"
CHOICES = ("generator", "mentor")

# Where each node may go next (what engine.next_step can answer after that step): the edges the graph
# draws. ``finish`` always goes to END.
_NEXT: dict[str, tuple[StepName, ...]] = {
    "prepare": ("continue", "probe"),
    "continue": ("probe", "finish"),
    "probe": ("continue", "probe", "lookahead", "finish"),
    "lookahead": ("verify", "continue", "probe", "finish"),  # a failed mentor commits the generator's segment
    "verify": ("continue", "probe", "finish"),
}


class InvalidResumeError(MentorCollabError, ValueError):
    """The value given to resume the human verifier's interrupt is not a choice."""


class MentorCollabInput(TypedDict, total=False):
    """What the graph takes: the conversation (``messages``) or a ready prompt (``prompt``)."""

    messages: Annotated[list[AnyMessage], add_messages]
    prompt: str


class MentorCollabOutput(TypedDict, total=False):
    """What the graph returns: the conversation with the answer appended, and the answer itself."""

    messages: Annotated[list[AnyMessage], add_messages]
    answer: AIMessage


class MentorCollabState(TypedDict):
    """The graph's whole state: plain, serializable data, never a model or a cache."""

    messages: Annotated[list[AnyMessage], add_messages]
    prompt: NotRequired[str | None]
    # The prompt the cursors open on, fixed at ``prepare`` so every later node (and a resume in another
    # process) rebuilds the same cursors, whatever happens to ``messages`` meanwhile.
    request: NotRequired[list[ChatMessage] | str]
    collab: NotRequired[CollabState]
    answer_id: NotRequired[str]
    # The automatic verifier's verdict on the pending divergence, shown to the person (human verifier).
    machine_verdict: NotRequired[dict[str, Any] | None]
    # The decision attributes of the last node that ran (also set on its tracing span).
    step: NotRequired[dict[str, Any]]
    answer: NotRequired[AIMessage | None]


# The types a checkpoint of this graph holds beyond LangChain's messages (LangGraph's strict msgpack
# loading refuses any type not on its allowlist).
STATE_TYPES: frozenset[tuple[str, str]] = frozenset(
    (model.__module__, model.__name__) for model in (CollabState, Span, Piece, Confidence, Decision, Divergence, Stats)
)


# -- the answer message ----------------------------------------------------------------------


def answer_message(
    state: CollabState,
    *,
    request: list[ChatMessage] | str,
    config: CollabConfig,
    generator: Backend,
    mentor: Backend,
    verifier: Verifier,
    verifier_name: str | None = None,
    message_id: str | None = None,
) -> AIMessage:
    """The answer as the ``AIMessage`` that ``ChatMentorCollab`` gives for the same run (same content,
    ``response_metadata`` and ``usage_metadata``, from the chat model's own assembler)."""
    message = chat_answer_message(
        state, prompt=request, config=config, generator=generator, mentor=mentor, verifier_name=verifier_name or verifier.name
    )
    message.id = message_id
    return message


def _chunk(event: TextCommitted, answer_id: str) -> AIMessageChunk:
    """Committed text as the chunk ``ChatMentorCollab.stream`` gives (with its provenance entry)."""
    chunk = text_chunk(event)
    chunk.id = answer_id
    return chunk


# -- cursors, outside the state -----------------------------------------------------------------


class _Teams:
    """Open cursors per (thread, namespace, prompt), so a thread's cursors keep their KV caches between
    nodes. Never part of the state: after a resume (or an eviction) the cursors are simply reopened and
    rebuild their caches from the state's text on first use."""

    def __init__(self, generator: Backend, mentor: Backend, verifier: Verifier, config: CollabConfig, size: int = 8):
        self.generator, self.mentor, self.verifier, self.config = generator, mentor, verifier, config
        self.size = size
        self._teams: OrderedDict[tuple[str, ...], tuple[Team, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(request: list[ChatMessage] | str, config: RunnableConfig) -> tuple[str, ...]:
        configurable = config.get("configurable", {})
        thread = str(configurable.get("thread_id", ""))
        # The task's namespace ends with its own "node:task-id" segment, new for every node: keep the
        # graph's part (empty at the top, "parent-node:task-id" inside a parent application).
        namespace = "|".join(str(configurable.get("checkpoint_ns", "")).split("|")[:-1])
        return (thread, namespace, json.dumps(request, sort_keys=True))

    @contextmanager
    def use(self, request: list[ChatMessage] | str, config: RunnableConfig) -> Iterator[Team]:
        key = self._key(request, config)
        with self._lock:
            if key in self._teams:
                self._teams.move_to_end(key)
                entry = self._teams[key]
            else:
                team = Team(
                    generator=self.generator.open(request, self.config.prompt_style, self.config.sampling),
                    mentor=self.mentor.open(request, self.config.prompt_style, self.config.sampling),
                    verifier=self.verifier,
                    config=self.config,
                )
                entry = self._teams[key] = (team, threading.Lock())
                while len(self._teams) > self.size:
                    # Forget the least recently used pair; a node still using it keeps its reference,
                    # and its caches are freed with the last one.
                    self._teams.popitem(last=False)
        team, team_lock = entry
        with team_lock:  # one node at a time per cursor pair (concurrent runs of the same prompt)
            yield team

    def release(self, request: list[ChatMessage] | str, config: RunnableConfig) -> None:
        with self._lock:
            entry = self._teams.pop(self._key(request, config), None)
        if entry is not None:
            team, team_lock = entry
            with team_lock:  # not while another run of the same thread and prompt is inside a node
                team.generator.close()
                team.mentor.close()


# -- streaming and step attributes --------------------------------------------------------------


def _custom_event(event: Event) -> dict[str, Any]:
    """An engine event as the dict written to ``stream_mode="custom"``."""
    if isinstance(event, TextCommitted):
        return {"type": "text", "text": event.text, "source": event.source, "start": event.start, "end": event.end}
    if isinstance(event, Probed):
        return {
            "type": "probe",
            "position": event.position,
            "word_index": event.word_index,
            "generator_word": event.generator_word,
            "mentor_word": event.mentor_word,
            "diverged": event.diverged,
        }
    if isinstance(event, Decided):
        return {"type": "decision", **event.decision.model_dump()}
    if isinstance(event, MentorFailed):
        return {"type": "mentor_failed", "error": event.error}
    assert isinstance(event, Finished)
    return {"type": "finished", "reason": event.reason}


def _attributes(step: str, before: CollabState, after: CollabState, events: list[Event]) -> dict[str, Any]:
    """The decision attributes of one node: for the ``updates`` stream and the node's tracing span."""
    attributes: dict[str, Any] = {
        "mentorcollab.step": step,
        "mentorcollab.text_length": len(after.text),
        "mentorcollab.committed_chars": sum(len(e.text) for e in events if isinstance(e, TextCommitted)),
        "mentorcollab.words": after.stats.words - before.stats.words,
    }
    for event in events:
        if isinstance(event, Probed):
            attributes |= {
                "mentorcollab.probe.position": event.position,
                "mentorcollab.probe.word_index": event.word_index,
                "mentorcollab.generator_word": event.generator_word,
                "mentorcollab.mentor_word": event.mentor_word,
                "mentorcollab.diverged": event.diverged,
            }
        elif isinstance(event, Decided):
            decision = event.decision
            attributes |= {
                "mentorcollab.probe.position": decision.position,
                "mentorcollab.probe.word_index": decision.word_index,
                "mentorcollab.generator_word": decision.generator_word,
                "mentorcollab.mentor_word": decision.mentor_word,
                "mentorcollab.generator_segment": decision.generator_segment,
                "mentorcollab.mentor_segment": decision.mentor_segment,
                "mentorcollab.diverged": True,
                "mentorcollab.verifier": decision.verifier,
                "mentorcollab.choice": decision.choice,
            }
            if decision.score is not None:
                attributes["mentorcollab.verifier_score"] = decision.score
            # What the score was made from, e.g. both segments' log-probabilities under the mentor.
            attributes |= {f"mentorcollab.verifier_evidence.{name}": value for name, value in decision.evidence.items()}
        elif isinstance(event, MentorFailed):
            attributes["mentorcollab.mentor_error"] = event.error
    divergence = after.divergence
    if divergence is not None and divergence.mentor_segment is not None and step == "lookahead":
        attributes |= {
            "mentorcollab.probe.position": divergence.position,
            "mentorcollab.generator_segment": divergence.generator_segment.text if divergence.generator_segment else "",
            "mentorcollab.mentor_segment": divergence.mentor_segment.text,
        }
    if after.finished:
        attributes["mentorcollab.finish_reason"] = after.finish_reason
    if step == "finish":
        attributes |= {
            "mentorcollab.probes": after.stats.probes,
            "mentorcollab.divergences": after.stats.divergences,
            "mentorcollab.adoptions": after.stats.adoptions,
            "mentorcollab.mentor_share": after.stats.mentor_share,
        }
    return attributes


_RESUME_HINT = (
    "resume the human verifier with Command(resume='generator') to keep the generator's segment or "
    "Command(resume='mentor') to adopt the mentor's (or {'choice': ..., 'score': optional number})"
)


def parse_choice(value: Any) -> tuple[Literal["generator", "mentor"], float | None]:
    """A person's answer to the verify interrupt: ``"generator"`` or ``"mentor"`` (or ``{"choice": ...}``
    with an optional ``"score"``). Anything else is an ``InvalidResumeError`` that says what to send."""
    score = None
    choice = value
    if isinstance(value, HumanChoice):
        return value.choice, value.score
    if isinstance(value, dict):
        choice = value.get("choice")
        score = value.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
            raise InvalidResumeError(f"the score in a verify resume value must be a number, got {score!r}; {_RESUME_HINT}")
    if not isinstance(choice, str) or choice.strip().lower() not in CHOICES:
        raise InvalidResumeError(f"{_RESUME_HINT}; got {value!r}")
    return choice.strip().lower(), (None if score is None else float(score))  # type: ignore[return-value]


class HumanChoice(BaseModel):
    """The answer the verify interrupt expects (its ``response_schema``): which segment to commit."""

    choice: Literal["generator", "mentor"]
    score: float | None = Field(default=None, description="the person's own probability of adopting the mentor")

    @model_validator(mode="before")
    @classmethod
    def _from_resume_value(cls, value: Any) -> Any:
        choice, score = parse_choice(value)  # a ValueError here leaves the interrupt unanswered
        return {"choice": choice, "score": score}


# -- the graph -----------------------------------------------------------------------------------


def build_mentorcollab_graph(
    generator: Backend,
    mentor: Backend,
    verifier: str | Verifier | None = None,
    config: CollabConfig | None = None,
    checkpointer: Any = None,
    human_verifier: bool = False,
    *,
    exact_resume: bool = False,
    name: str = "mentorcollab",
):
    """The method as a compiled LangGraph graph.

    Args:
        generator, mentor: backends (``TransformersBackend``, remote or scripted) the graph opens
            cursors on; their weights are shared, their per-request caches stay out of the state.
        verifier: the automatic verifier (name or object); with ``human_verifier`` it still scores each
            divergence, and the person sees that score.
        config: the collaboration settings (the same ``CollabConfig`` the engine and chat model take).
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

    Input ``{"messages": [...]}`` or ``{"prompt": "..."}``; output ``{"messages": [..., AIMessage],
    "answer": AIMessage}`` whose ``response_metadata["mentorcollab"]`` is the run's record.
    """
    settings = config or CollabConfig()
    machine = get_verifier(verifier, generator=generator)
    teams = _Teams(generator, mentor, machine, settings)

    def run_step(step: StepName, state: MentorCollabState, config: RunnableConfig) -> dict[str, Any]:
        before = state["collab"]
        collab = before.model_copy(deep=True)  # never mutate the value the channel (and checkpoint) holds
        events: list[Event] = []
        update: dict[str, Any] = {}
        try:
            with teams.use(state["request"], config) as team:
                if step == "verify" and human_verifier:
                    steps = _human_verify(collab, team, state)
                else:
                    steps = STEPS[step](collab, team)
                emit = _Emitter(state["answer_id"])
                for event in steps:
                    events.append(event)
                    emit(event)
                if step == "lookahead" and human_verifier and collab.divergence is not None:
                    # Score the divergence here, so the verify node only asks the person, and resuming
                    # after the interrupt recomputes nothing.
                    verdict = score_divergence(collab, team)
                    update["machine_verdict"] = {"choice": verdict.choice, "score": verdict.score, "verifier": machine.name,
                                                 "evidence": dict(verdict.evidence)}
        finally:
            if exact_resume:
                teams.release(state["request"], config)
        attributes = _attributes(step, before, collab, events)
        if step == "lookahead" and "machine_verdict" in update:
            attributes["mentorcollab.verifier"] = machine.name
            attributes["mentorcollab.verifier_choice"] = update["machine_verdict"]["choice"]
            if update["machine_verdict"]["score"] is not None:
                attributes["mentorcollab.verifier_score"] = update["machine_verdict"]["score"]
            attributes |= {f"mentorcollab.verifier_evidence.{name}": value
                           for name, value in update["machine_verdict"]["evidence"].items()}
        annotate_node_span(attributes)
        return update | {"collab": collab, "step": attributes}

    def _human_verify(collab: CollabState, team: Team, state: MentorCollabState) -> Iterator[Event]:
        divergence = collab.divergence
        assert divergence is not None and divergence.mentor_segment is not None
        machine_verdict = state.get("machine_verdict") or {}
        payload = {
            "type": "mentorcollab.verify",
            "question": "Keep the generator's segment or adopt the mentor's?",
            "text": collab.text,
            "position": divergence.position,
            "generator_word": divergence.generator_word.text,
            "mentor_word": divergence.mentor_word.text,
            "generator_segment": (divergence.generator_segment or divergence.generator_word).text,
            "mentor_segment": divergence.mentor_segment.text,
            "verifier": machine_verdict.get("verifier", machine.name),
            "verifier_score": machine_verdict.get("score"),
            "verifier_choice": machine_verdict.get("choice"),
            "verifier_evidence": machine_verdict.get("evidence", {}),
            "choices": list(CHOICES),
        }
        try:
            # Validated inside interrupt(): a bad value is not saved, so the person can answer again.
            value = interrupt(payload, response_schema=HumanChoice)
        except ValidationError as error:
            problem = error.errors()[0].get("ctx", {}).get("error")
            raise (problem if isinstance(problem, InvalidResumeError) else InvalidResumeError(str(error))) from None
        choice, score = value.choice, value.score
        verdict = Verdict(choice, machine_verdict.get("score") if score is None else score, machine_verdict.get("evidence", {}))
        yield from commit_verdict(collab, team, verdict, verifier=HUMAN)

    def prepare_node(state: MentorCollabState, config: RunnableConfig) -> dict[str, Any]:
        prompt, messages = state.get("prompt"), state.get("messages") or []
        if not prompt and not messages:
            raise MentorCollabError("the MentorCollab graph needs a prompt: pass {'messages': [...]} or {'prompt': '...'}")
        request: list[ChatMessage] | str = prompt if prompt else to_engine_messages(messages)
        # A new request on the thread starts a new collaboration, whatever an earlier one left behind.
        fresh = {"request": request, "collab": CollabState(), "answer_id": f"mentorcollab-{uuid.uuid4()}"}
        update = run_step("prepare", {**state, **fresh}, config)  # type: ignore[arg-type]
        return update | fresh | {"collab": update["collab"], "prompt": None, "machine_verdict": None, "answer": None}

    def finish_node(state: MentorCollabState, config: RunnableConfig) -> dict[str, Any]:
        update = run_step("finish", state, config)
        teams.release(state["request"], config)
        message = answer_message(
            update["collab"],
            request=state["request"],
            config=settings,
            generator=generator,
            mentor=mentor,
            verifier=machine,
            verifier_name=HUMAN if human_verifier else machine.name,
            message_id=state["answer_id"],
        )
        return update | {"answer": message, "messages": [message], "machine_verdict": None}

    def node(step: StepName):
        def run(state: MentorCollabState, config: RunnableConfig) -> dict[str, Any]:
            return run_step(step, state, config)

        run.__name__ = f"{step}_node"
        return run

    def route(state: MentorCollabState) -> str:
        return next_step(state["collab"])

    builder = StateGraph(MentorCollabState, input_schema=MentorCollabInput, output_schema=MentorCollabOutput)
    builder.add_node("prepare", prepare_node)
    for step in ("continue", "probe", "lookahead", "verify"):
        builder.add_node(step, node(step))  # type: ignore[arg-type]
    builder.add_node("finish", finish_node)
    builder.add_edge(START, "prepare")
    for source, targets in _NEXT.items():
        builder.add_conditional_edges(source, route, list(targets))
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=checkpointer, name=name)


class _Emitter:
    """Writes engine events to the custom stream, and committed text to the messages stream.

    Only ``TextCommitted`` reaches ``stream_mode="messages"`` (as ``AIMessageChunk``s with the answer's
    id), so a rejected lookahead never shows there: lookahead text is not committed text.
    """

    def __init__(self, answer_id: str) -> None:
        self.answer_id = answer_id
        self.write = get_stream_writer()

    def __call__(self, event: Event) -> None:
        self.write(_custom_event(event))
        if isinstance(event, TextCommitted) and event.text:
            push_message(_chunk(event, self.answer_id), state_key=None)


# -- reading the history --------------------------------------------------------------------------


def decision_log(source: Any, config: RunnableConfig) -> list[dict[str, Any]]:
    """Every decision taken on a thread, read from its checkpoint history (oldest first).

    ``source`` is the compiled graph, a larger application that uses it as a subgraph, or the
    checkpointer itself; ``config`` names the thread. Checkpoints of every namespace are read, so the
    decisions of a MentorCollab subgraph are listed too. Each entry is the decision plus the run it
    belongs to (``answer_id``) and the first checkpoint that holds it (``checkpoint_ns``,
    ``checkpoint_id``): fork a run from just before any decision by resuming from an earlier checkpoint.
    """
    checkpointer = getattr(source, "checkpointer", source)
    if checkpointer is None or not hasattr(checkpointer, "list"):
        raise ValueError("decision_log needs a graph compiled with a checkpointer, or the checkpointer itself")
    if hasattr(checkpointer, "with_allowlist"):
        # A parent application's checkpointer allows its own state's types; under strict msgpack
        # loading our state's types must be allowed as well to read a subgraph's checkpoints.
        checkpointer = checkpointer.with_allowlist(STATE_TYPES)
    thread_id = config.get("configurable", {}).get("thread_id")
    if thread_id is None:
        raise ValueError("decision_log needs config={'configurable': {'thread_id': ...}}")
    checkpoints = sorted(
        checkpointer.list({"configurable": {"thread_id": thread_id}}),
        key=lambda saved: saved.config["configurable"]["checkpoint_id"],  # time-ordered ids
    )
    log: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for saved in checkpoints:
        values = saved.checkpoint.get("channel_values", {})
        collab, answer_id = values.get("collab"), values.get("answer_id")
        if not isinstance(collab, CollabState) or answer_id is None:
            continue
        for decision in collab.decisions[seen.get(answer_id, 0) :]:
            log.append(
                {
                    **decision.model_dump(),
                    "answer_id": answer_id,
                    "checkpoint_ns": saved.config["configurable"].get("checkpoint_ns", ""),
                    "checkpoint_id": saved.config["configurable"]["checkpoint_id"],
                }
            )
        seen[answer_id] = max(seen.get(answer_id, 0), len(collab.decisions))
    return log
