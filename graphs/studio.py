"""The MentorCollab graph with the default models, as ``langgraph dev`` and LangGraph Studio open it.

``langgraph.json`` at the repository root names ``graph`` here. Importing this module loads no weights:
the backends load their models on the first run, so the server starts at once and a run's first
``prepare`` pays the load. The graph is compiled without a checkpointer, since the server brings its
own, and with its context bound (``graphs.context``): a client sends only the input
(``{"messages": [...]}`` or ``{"prompt": "..."}``), never models.
"""

from __future__ import annotations

from graphs.mentorcollab import build_mentorcollab_graph
from mentorcollab_langchain.backends.choose import make_backend
from mentorcollab_langchain.models.registry import DEFAULT_GENERATOR, DEFAULT_MENTOR

graph = build_mentorcollab_graph(make_backend(DEFAULT_GENERATOR), make_backend(DEFAULT_MENTOR))
