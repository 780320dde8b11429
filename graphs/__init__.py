"""LangGraph face of MentorCollab: the method's steps as nodes that can be traced, checkpointed and steered."""

from graphs.mentorcollab import (
    NODES,
    InvalidResumeError,
    MentorCollabInput,
    MentorCollabOutput,
    MentorCollabState,
    answer_message,
    build_mentorcollab_graph,
    decision_log,
    parse_choice,
)
from graphs.tracing import annotate_node_span, in_memory_tracing, node_spans

__all__ = [
    "NODES",
    "InvalidResumeError",
    "MentorCollabInput",
    "MentorCollabOutput",
    "MentorCollabState",
    "annotate_node_span",
    "answer_message",
    "build_mentorcollab_graph",
    "decision_log",
    "in_memory_tracing",
    "node_spans",
    "parse_choice",
]
