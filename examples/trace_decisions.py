"""Trace MentorCollab's decisions: the graph as a subgraph of a small LangGraph app, offline.

    python examples/trace_decisions.py
    python examples/trace_decisions.py --mentor qwen2.5-coder-1.5b-instruct --max-new-tokens 64

What it does:
1. builds the MentorCollab graph (nodes prepare, continue, probe, lookahead, verify, finish) and uses it
   as the ``mentorcollab`` node of a larger application whose first node frames the question;
2. runs the application with a SQLite checkpointer, recording every node as an OpenTelemetry span in
   memory (OpenInference's LangChain instrumentor; see docs/tracing.md for LangSmith or Phoenix);
3. prints the answer with the mentor's characters marked, the decision log read back from the
   checkpoint history, the node spans with their decision attributes, and the graph as Mermaid.

Everything runs on this machine from the packaged models; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# Load checkpoints with LangGraph's strict allowlist: only the types the state schema names come back.
os.environ.setdefault("LANGGRAPH_STRICT_MSGPACK", "true")

try:
    import graphs  # noqa: F401
except ModuleNotFoundError:  # run from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, MessagesState, StateGraph

from graphs import build_mentorcollab_graph, decision_log, in_memory_tracing, node_spans
from mentorcollab_langchain.backends import TransformersBackend
from mentorcollab_langchain.engine import CollabConfig

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)


def build_app(generator: TransformersBackend, mentor: TransformersBackend, config: CollabConfig, checkpointer):
    """A larger application: a framing node, then MentorCollab as a subgraph."""
    collab = build_mentorcollab_graph(generator, mentor, config=config)  # inherits the app's checkpointer

    def frame(state: MessagesState) -> dict:
        return {"messages": [SystemMessage("Answer step by step, in plain sentences.")]}

    app = StateGraph(MessagesState)
    app.add_node("frame", frame)
    app.add_node("mentorcollab", collab)
    app.add_edge(START, "frame")
    app.add_edge("frame", "mentorcollab")
    app.add_edge("mentorcollab", END)
    return app.compile(checkpointer=checkpointer), collab


def marked(text: str, spans: list[dict]) -> str:
    """The answer with the mentor's characters in [[double brackets]]."""
    return "".join(
        f"[[{text[span['start']:span['end']]}]]" if span["source"] == "mentor" else text[span["start"] : span["end"]]
        for span in spans
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", default="smollm2-135m-instruct")
    parser.add_argument("--mentor", default="gemma3-270m")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--probe-rate", type=float, default=0.4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database", help="SQLite checkpoint file (default: a temporary one)")
    parser.add_argument("--thread", default="trace-decisions")
    arguments = parser.parse_args()

    config = CollabConfig(
        probe_rate=arguments.probe_rate, segment_tokens=8, seed=arguments.seed, max_new_tokens=arguments.max_new_tokens
    )
    generator, mentor = TransformersBackend(arguments.generator), TransformersBackend(arguments.mentor)
    folder = None if arguments.database else tempfile.TemporaryDirectory()
    database = arguments.database or str(Path(folder.name) / "checkpoints.sqlite")
    thread = {"configurable": {"thread_id": arguments.thread}}

    with SqliteSaver.from_conn_string(database) as saver:
        app, collab = build_app(generator, mentor, config, saver)
        print(f"generator {arguments.generator}, mentor {arguments.mentor}, checkpoints in {database}\n")
        began = time.perf_counter()
        with in_memory_tracing() as exporter:
            for _namespace, chunk in app.stream(
                {"messages": [HumanMessage(arguments.question)]}, thread, stream_mode="custom", subgraphs=True
            ):
                if chunk["type"] == "text":
                    shown = chunk["text"] if chunk["source"] == "generator" else f"[[{chunk['text']}]]"
                    print(shown, end="", flush=True)
        print(f"\n\n({time.perf_counter() - began:.1f} s)")

        answer = app.get_state(thread).values["messages"][-1]
        record = answer.response_metadata["mentorcollab"]
        stats = record["stats"]
        print("\n== answer (mentor text in [[ ]]) ==")
        print(marked(record["text"], record["spans"]))
        print(
            f"\nprobes {stats['probes']}, divergences {stats['divergences']}, adoptions {stats['adoptions']}, "
            f"mentor share {stats['mentor_share']:.0%}, finish {record['finish_reason']}"
        )

        print("\n== decision log, from the checkpoint history ==")
        for number, decision in enumerate(decision_log(app, thread), 1):
            score = "n/a" if decision["score"] is None else f"{decision['score']:.3f}"
            print(
                f"{number}. at char {decision['position']}: generator {decision['generator_word']!r} vs mentor "
                f"{decision['mentor_word']!r}; {decision['verifier']} score {score} -> {decision['choice']}\n"
                f"   generator segment {decision['generator_segment']!r}\n"
                f"   mentor segment    {decision['mentor_segment']!r}\n"
                f"   checkpoint {decision['checkpoint_ns']} / {decision['checkpoint_id']}"
            )

        print("\n== node spans (OpenTelemetry, in memory) ==")
        for span in node_spans(exporter.get_finished_spans()):
            attributes = {
                key.removeprefix("mentorcollab."): value
                for key, value in span.attributes.items()
                if key.startswith("mentorcollab.") and key not in {"mentorcollab.step", "mentorcollab.text_length"}
            }
            shown = ", ".join(f"{key}={value!r}" for key, value in attributes.items())
            print(f"{span.name:<10} {(span.end_time - span.start_time) / 1e9:6.2f} s  {shown}")

        print("\n== the MentorCollab graph (Mermaid) ==")
        print(collab.get_graph().draw_mermaid())
        print("== the application, subgraph expanded (Mermaid) ==")
        print(app.get_graph(xray=True).draw_mermaid())
    if folder is not None:
        folder.cleanup()


if __name__ == "__main__":
    main()
