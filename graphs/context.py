"""The run's dependencies (models, verifier, settings, open cursors), given to the nodes as LangGraph context.

The nodes are plain module-level functions; what they run with comes from ``runtime.context``, a
``MentorCollabContext``, not from closures. Heavy things live here and never in the state, so a
checkpoint holds only data.

A user calls ``build_mentorcollab_graph(generator, mentor, ...)`` and then ``graph.invoke(...)``
without passing any context, and may add the graph as a node of a larger application, which runs it
with no context of ours (a parent passes its own, or none). LangGraph 1.2 has no supported way to bind
a default context to a compiled graph (``compile()`` takes none; see langgraph issue #7990, which
proposes ``compile(context=...)``). So the builder returns a ``ContextBoundGraph``: the compiled graph
with its context bound, which every run uses unless the caller passes a ``MentorCollabContext`` of its
own (``invoke``, ``batch`` and a parent graph all run a graph through ``stream``/``astream``, and a
graph's own context wins over a parent's in LangGraph's ``Runtime.merge``). A LangGraph server
(``langgraph dev``, ``graphs/studio.py``) passes ``context={}`` when its client sent none: that too
runs with the bound context, since a client cannot send models as JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from graphs import tools
from graphs.human import HUMAN
from graphs.state import Request
from graphs.teams import TeamCache
from graphs.tools import Tools
from mentorcollab_langchain.backends.base import Backend, Prompt, takes_grammar
from mentorcollab_langchain.engine.config import CollabConfig
from mentorcollab_langchain.engine.team import Team, open_team
from mentorcollab_langchain.verifiers import Verifier


@dataclass(frozen=True)
class MentorCollabContext:
    """What the graph's nodes run with: everything a run needs that is not data.

    ``verifier`` is the automatic verifier (with ``human_verifier`` it still scores each divergence
    for the person); ``teams`` keeps each run's cursors open between nodes; ``exact_resume`` reopens
    them for every node instead (see ``build_mentorcollab_graph``); ``tools`` are the tools the answers
    may call (OpenAI's format, ``graphs.tools``).
    """

    generator: Backend
    mentor: Backend
    verifier: Verifier
    config: CollabConfig = field(default_factory=CollabConfig)
    teams: TeamCache = field(default_factory=TeamCache)
    exact_resume: bool = False
    human_verifier: bool = False
    tools: Tools = ()  # the name, not ``tools.Tools``: the field shadows the module where hints are resolved

    @property
    def verifier_name(self) -> str:
        """Who decides the divergences, as the answer's record names it."""
        return HUMAN if self.human_verifier else self.verifier.name

    def prompt(self, request: Request, tool_choice: str | None) -> Prompt:
        """What the cursors open on: ``request`` with the tools its answer is offered."""
        return tools.prompt(request, self.tools, tool_choice)

    def open_team(self, request: Request, tool_choice: str | None = None) -> Team:
        """Open a cursor on each model for ``request``, as the engine's run loop does; a forced tool call
        also stops at its closing tag; the answer decodes under the tools' grammar and, left to choose, has its
        first word probed, as the chat model's does."""
        answer = tools.answer_format(self.tools, tool_choice)
        update: dict[str, Any] = {"stop": tuple(dict.fromkeys((*self.config.stop, *answer.stop)))}
        if answer.grammar is not None and takes_grammar(self.generator):
            update["grammar"] = answer.grammar
        if answer.probe_first_word:
            update["probe_first_word"] = True
        config = self.config.model_copy(update=update)
        return open_team(
            self.prompt(request, tool_choice), self.generator, self.mentor, verifier=self.verifier, config=config
        )


class ContextBoundGraph(CompiledStateGraph):
    """A compiled graph that runs with ``bound_context`` whenever the caller passes no context."""

    def __init__(self, *, bound_context: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # how Pregel.copy (and so with_config) rebuilds a graph
        self.bound_context = bound_context

    @classmethod
    def bind(cls, graph: CompiledStateGraph, context: Any) -> ContextBoundGraph:
        """``graph`` with ``context`` bound to it; ``graph`` itself is left as it was."""
        # A shallow copy of everything compile() set up, its private parts included (rebuilding
        # through __init__, as Pregel.copy does, would drop the strict-msgpack allowlist).
        bound = cls.__new__(cls)
        bound.__dict__.update({key: value for key, value in graph.__dict__.items() if key != "__orig_class__"})
        bound.bound_context = context
        return bound

    def get_context_jsonschema(self) -> dict[str, Any] | None:
        """None: the bound context holds models and open cursors, nothing a client could send as JSON, so
        a LangGraph server shows the graph as taking no context instead of failing to build a schema."""
        return None

    def _context(self, context: Any) -> Any:
        """The caller's context, or the bound one where the caller gave none (``None``, or the empty
        dict a LangGraph server passes for a client that sent no context)."""
        return self.bound_context if context is None or context == {} else context

    def stream(
        self, input: Any, config: RunnableConfig | None = None, *, context: Any = None, **kwargs: Any
    ) -> Iterator[Any]:
        """``CompiledStateGraph.stream`` with the bound context unless ``context`` is given."""
        return super().stream(input, config, context=self._context(context), **kwargs)

    def astream(
        self, input: Any, config: RunnableConfig | None = None, *, context: Any = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """``CompiledStateGraph.astream`` with the bound context unless ``context`` is given."""
        return super().astream(input, config, context=self._context(context), **kwargs)
