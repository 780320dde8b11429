"""LangGraph face of MentorCollab: the method's steps as nodes that can be traced, checkpointed and steered.

``mentorcollab`` builds the graph from ``nodes`` (one function per step), ``state`` (what a checkpoint
holds) and ``context`` (what the nodes run with); ``human`` is the person as verifier, ``history``
reads the decisions back, ``tracing`` puts them on spans, ``tools`` offers tools to the answers (the graph
as an agent's model step), and ``studio`` is the graph ``langgraph.json`` names.
"""

from graphs.context import MentorCollabContext
from graphs.history import decision_log
from graphs.human import HumanChoice, InvalidResumeError, parse_choice
from graphs.mentorcollab import NODES, build_mentorcollab_graph
from graphs.state import MentorCollabInput, MentorCollabOutput, MentorCollabState, ToolChoice
from graphs.tracing import annotate_node_span, in_memory_tracing, node_spans

__all__ = [
    "NODES",
    "HumanChoice",
    "InvalidResumeError",
    "MentorCollabContext",
    "MentorCollabInput",
    "MentorCollabOutput",
    "MentorCollabState",
    "ToolChoice",
    "annotate_node_span",
    "build_mentorcollab_graph",
    "decision_log",
    "in_memory_tracing",
    "node_spans",
    "parse_choice",
]
