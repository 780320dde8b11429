"""Run one request end to end: open a cursor on each model, run the steps, close the cursors."""

from __future__ import annotations

from collections.abc import Iterator

from mentorcollab_langchain.backends.base import Backend, Prompt
from mentorcollab_langchain.engine.config import CollabConfig
from mentorcollab_langchain.engine.events import Event
from mentorcollab_langchain.engine.policies import ProbePolicy
from mentorcollab_langchain.engine.state import CollabState
from mentorcollab_langchain.engine.steps import run_steps
from mentorcollab_langchain.engine.team import open_team
from mentorcollab_langchain.verifiers import Verifier


def collaborate(
    prompt: Prompt,
    generator: Backend,
    mentor: Backend,
    *,
    verifier: str | Verifier | None = None,
    config: CollabConfig | None = None,
    state: CollabState | None = None,
    probe_policy: ProbePolicy | None = None,
) -> Iterator[Event]:
    """Yield the events of one collaboration as they happen.

    Pass your own ``state`` to read the record afterwards, or a checkpointed one to resume it: the
    cursors rebuild their caches from its text. ``probe_policy`` replaces the policy that
    ``config.probe_policy`` names with your own object.
    """
    state = state if state is not None else CollabState()
    with open_team(prompt, generator, mentor, verifier=verifier, config=config, policy=probe_policy) as team:
        yield from run_steps(state, team)


def run_collaboration(
    prompt: Prompt,
    generator: Backend,
    mentor: Backend,
    *,
    verifier: str | Verifier | None = None,
    config: CollabConfig | None = None,
) -> CollabState:
    """Run one collaboration to the end and return its state (text, spans, decisions, stats)."""
    state = CollabState()
    for _ in collaborate(prompt, generator, mentor, verifier=verifier, config=config, state=state):
        pass
    return state
