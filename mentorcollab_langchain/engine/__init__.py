"""The algorithm: config, serializable state, step functions and the run loop (one implementation)."""

from mentorcollab_langchain.engine.config import CollabConfig
from mentorcollab_langchain.engine.events import Decided, Event, Finished, MentorFailed, Probed, TextCommitted
from mentorcollab_langchain.engine.run import collaborate, run_collaboration
from mentorcollab_langchain.engine.state import Candidate, CollabState, Decision, Span, Stats
from mentorcollab_langchain.engine.steps import Team, next_step, run_steps

__all__ = [
    "Candidate",
    "CollabConfig",
    "CollabState",
    "Decided",
    "Decision",
    "Event",
    "Finished",
    "MentorFailed",
    "Probed",
    "Span",
    "Stats",
    "Team",
    "TextCommitted",
    "collaborate",
    "next_step",
    "run_collaboration",
    "run_steps",
]
