"""The algorithm: config, serializable state, step functions and the run loop (one implementation)."""

from mentorcollab_langchain.engine.config import CollabConfig
from mentorcollab_langchain.engine.events import Decided, Event, Finished, MentorFailed, Probed, TextCommitted
from mentorcollab_langchain.engine.run import collaborate, run_collaboration
from mentorcollab_langchain.engine.state import CollabState, Decision, Source, Span, Stats
from mentorcollab_langchain.engine.steps import next_step, run_steps
from mentorcollab_langchain.engine.team import Team, open_team

__all__ = [
    "CollabConfig",
    "CollabState",
    "Decided",
    "Decision",
    "Event",
    "Finished",
    "MentorFailed",
    "Probed",
    "Source",
    "Span",
    "Stats",
    "Team",
    "TextCommitted",
    "collaborate",
    "next_step",
    "open_team",
    "run_collaboration",
    "run_steps",
]
