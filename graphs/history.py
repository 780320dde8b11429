"""Reading a thread's decisions back from its checkpoints, for review, audit or forking a run."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig

from graphs.state import STATE_TYPES
from mentorcollab_langchain.engine.state import CollabState


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
