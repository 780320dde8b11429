"""How a node reports what happened: the streams and the attributes of its tracing span.

The engine's events are written as they happen to ``stream_mode="custom"`` (as dicts), and committed
text also to ``stream_mode="messages"`` (as the chat model's chunks). When the node ends, the decision
attributes it computed from its events go to the ``updates`` stream (the state's ``step``) and to the
node's tracing span.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph.message import push_message
from langgraph.types import StreamWriter

from mentorcollab_langchain.chat import text_chunk
from mentorcollab_langchain.engine.events import Decided, Event, Finished, MentorFailed, Probed, TextCommitted
from mentorcollab_langchain.engine.state import CollabState


def custom_event(event: Event) -> dict[str, Any]:
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


class Emitter:
    """Writes engine events to the custom stream, and committed text to the messages stream.

    Only ``TextCommitted`` reaches ``stream_mode="messages"`` (as ``AIMessageChunk``s with the answer's
    id), so a rejected lookahead never shows there: lookahead text is not committed text. Without
    ``stream_text`` (an answer offered tools) the messages stream gets only the finished answer, whose
    calls are read by then: text streamed under its id would hide them, LangGraph sending a message
    once per id.
    """

    def __init__(self, write: StreamWriter, answer_id: str, stream_text: bool = True) -> None:
        self.write = write
        self.answer_id = answer_id
        self.stream_text = stream_text

    def __call__(self, event: Event) -> None:
        self.write(custom_event(event))
        if self.stream_text and isinstance(event, TextCommitted) and event.text:
            chunk = text_chunk(event)
            chunk.id = self.answer_id
            push_message(chunk, state_key=None)


def step_attributes(step: str, before: CollabState, after: CollabState, events: list[Event]) -> dict[str, Any]:
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
            attributes |= evidence_attributes(decision.evidence)
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


def evidence_attributes(evidence: dict[str, Any]) -> dict[str, Any]:
    """A verifier's evidence (what its score was made from) as span attributes."""
    return {f"mentorcollab.verifier_evidence.{name}": value for name, value in evidence.items()}
