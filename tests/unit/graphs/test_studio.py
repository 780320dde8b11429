"""``langgraph.json`` and ``graphs/studio.py``: what ``langgraph dev`` and LangGraph Studio open.

The server itself (``langgraph-cli[inmem]``) is not a dev dependency, so the file is checked with the
CLI's own validation, and its graph is loaded the way the server loads a ``./file.py:variable`` path.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType
from typing import Any, get_type_hints

from langgraph.pregel import Pregel
from langgraph_cli.config import get_unknown_keys, validate_config_file

from graphs import NODES, MentorCollabContext, build_mentorcollab_graph
from mentorcollab_langchain.backends import ScriptedBackend, llama_cpp, transformers
from mentorcollab_langchain.engine import CollabConfig
from mentorcollab_langchain.models.registry import DEFAULT_GENERATOR, DEFAULT_MENTOR
from tests.paths import REPO

CONFIG_FILE = REPO / "langgraph.json"


def load_graph_module(spec: str) -> tuple[ModuleType, str]:
    """The module and variable of a ``./path.py:variable`` graph, imported from its file as the server does."""
    path, variable = spec.rsplit(":", maxsplit=1)
    module_spec = importlib.util.spec_from_file_location("studio_under_test", REPO / path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    try:
        module_spec.loader.exec_module(module)
    finally:
        del sys.modules[module_spec.name]
    return module, variable


def test_the_cli_accepts_the_config_and_it_names_the_mentorcollab_graph() -> None:
    raw = json.loads(CONFIG_FILE.read_text())
    assert get_unknown_keys(raw) == []
    validated = validate_config_file(CONFIG_FILE)  # raises click.UsageError on a config the CLI refuses
    assert validated["graphs"] == {"mentorcollab": "./graphs/studio.py:graph"}
    assert validated["dependencies"] == ["."]


def test_the_studio_graph_is_a_compiled_graph_of_the_default_models_and_loads_no_weights() -> None:
    loaded_before = (llama_cpp._LOADED.keys(), transformers._LOADED.keys())
    module, variable = load_graph_module(validate_config_file(CONFIG_FILE)["graphs"]["mentorcollab"])
    graph = getattr(module, variable)
    assert isinstance(graph, Pregel) and graph.checkpointer is None  # the server brings its checkpointer
    assert set(NODES) <= set(graph.nodes)
    context = graph.bound_context
    assert (context.generator.model_name, context.mentor.model_name) == (DEFAULT_GENERATOR, DEFAULT_MENTOR)
    assert (llama_cpp._LOADED.keys(), transformers._LOADED.keys()) == loaded_before
    # What Studio shows before any run: the input and output forms, no context form, the drawing.
    assert {"messages", "prompt"} <= set(graph.get_input_jsonschema()["properties"])
    assert {"messages", "answer"} <= set(graph.get_output_jsonschema()["properties"])
    assert graph.get_context_jsonschema() is None
    assert "probe" in graph.get_graph().draw_mermaid()


def test_a_servers_empty_context_runs_with_the_bound_one() -> None:
    """A LangGraph server passes ``context={}`` when its client sent none."""
    answer = "The cat sat on the mat."
    graph = build_mentorcollab_graph(ScriptedBackend(answer), ScriptedBackend(answer), config=CollabConfig(seed=1))
    assert graph.invoke({"prompt": "Tell me a story."}, context={})["answer"].content == answer


def test_the_context_class_resolves_its_type_hints() -> None:
    """A LangGraph server resolves them to build the graph's config form (a failure there is logged, and the
    form is lost)."""
    assert get_type_hints(MentorCollabContext)["tools"] == tuple[dict[str, Any], ...]
