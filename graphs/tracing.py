"""Tracing: each node of the graph is a span that carries its decision's attributes.

LangGraph already reports every node as a LangChain run, so any LangChain tracer (LangSmith, its
OpenTelemetry mode, OpenInference's LangChain instrumentor for Phoenix or any OTel backend) sees one
span per node. ``annotate_node_span`` adds the MentorCollab attributes of the node (probe position, both
words, diverged, verifier score, choice ...) to that span while the node runs:

- as the run's metadata, for every LangChain tracer (LangSmith shows it on the run; its OTel mode exports
  it as ``langsmith.metadata.*``; OpenInference exports it in the ``metadata`` attribute);
- as first-class span attributes (``mentorcollab.*``) where the tracer holds an OpenTelemetry span per
  run (OpenInference's ``get_span``).

``in_memory_tracing`` records spans offline into an in-memory exporter (tests, the example); see
docs/tracing.md for pointing the same spans at LangSmith or a local Phoenix server.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tracers.base import BaseTracer

from mentorcollab_langchain.engine.steps import STEPS

AttributeValue = str | bool | int | float


def _clean(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """OpenTelemetry takes str, bool, int and float values only; drop the rest (None)."""
    return {key: value for key, value in attributes.items() if isinstance(value, str | bool | int | float)}


def annotate_node_span(attributes: Mapping[str, Any]) -> None:
    """Attach ``attributes`` to the span (run) of the node that is running now; a no-op untraced."""
    config = var_child_runnable_config.get()
    if not isinstance(config, dict):
        return
    manager = config.get("callbacks")
    run_id = getattr(manager, "parent_run_id", None)
    if run_id is None:
        return
    values = _clean(attributes)
    for handler in getattr(manager, "handlers", []):
        if isinstance(handler, BaseTracer) and (run := handler.run_map.get(str(run_id))) is not None:
            # Replace, never mutate: the metadata dict may be shared with the node's config.
            run.extra = {**(run.extra or {}), "metadata": {**(run.extra or {}).get("metadata", {}), **values}}
        get_span = getattr(handler, "get_span", None)
        if callable(get_span) and (span := get_span(run_id)) is not None and span.is_recording():
            span.set_attributes(values)


@contextmanager
def in_memory_tracing() -> Iterator[Any]:
    """Record the spans of LangChain/LangGraph runs in memory with OpenInference, offline.

    Yields an ``InMemorySpanExporter``; ``exporter.get_finished_spans()`` lists the spans. Needs
    ``opentelemetry-sdk`` and ``openinference-instrumentation-langchain``.
    """
    from openinference.instrumentation.langchain import LangChainInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def node_spans(spans: Any, nodes: tuple[str, ...] = tuple(STEPS)) -> list[Any]:
    """The spans of the graph's nodes (those that carry ``mentorcollab.step``), in start order."""
    found = [span for span in spans if span.name in nodes and "mentorcollab.step" in (span.attributes or {})]
    return sorted(found, key=lambda span: span.start_time)
