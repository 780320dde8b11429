"""The open teams (cursor pairs) of a graph's runs, kept between nodes and never in the state.

A node runs one step and ends; its cursors must outlive it, or every node would re-read the prompt and
the answer so far. ``TeamCache`` keeps the team of each (thread, graph namespace, prompt) open from one
node to the next. It is never part of the state: after a resume (or an eviction) the team is simply
opened again and the cursors rebuild their caches from the state's text on first use.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from langchain_core.runnables import RunnableConfig

from graphs.state import Request
from mentorcollab_langchain.engine.team import Team

TeamKey = tuple[str, str, str]


class TeamCache:
    """Open teams per (thread, namespace, prompt), the least recently used forgotten beyond ``size``.

    ``use`` hands a node its run's team, opening it with the given function the first time; one node
    at a time uses a team (concurrent runs of one thread and prompt wait for each other), while other
    runs go on in parallel. ``release`` closes the team when its run is over.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._teams: OrderedDict[TeamKey, tuple[Team, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(request: Request, config: RunnableConfig) -> TeamKey:
        """The run a node belongs to: its thread, its graph's namespace and its prompt."""
        configurable = config.get("configurable", {})
        thread = str(configurable.get("thread_id", ""))
        # The task's namespace ends with its own "node:task-id" segment, new for every node: keep the
        # graph's part (empty at the top, "parent-node:task-id" inside a parent application).
        namespace = "|".join(str(configurable.get("checkpoint_ns", "")).split("|")[:-1])
        return (thread, namespace, json.dumps(request, sort_keys=True))

    @contextmanager
    def use(self, request: Request, config: RunnableConfig, open_team: Callable[[], Team]) -> Iterator[Team]:
        """The run's team, opened with ``open_team`` if this run has none yet, held for one node."""
        key = self.key(request, config)
        with self._lock:
            if key in self._teams:
                self._teams.move_to_end(key)
                entry = self._teams[key]
            else:
                entry = self._teams[key] = (open_team(), threading.Lock())
                while len(self._teams) > self.size:
                    # Forget the least recently used team; a node still using it keeps its reference,
                    # and its caches are freed with the last one.
                    self._teams.popitem(last=False)
        team, team_lock = entry
        with team_lock:
            yield team

    def release(self, request: Request, config: RunnableConfig) -> None:
        """Close the run's team, if it has one open (not while a node of the same run is using it)."""
        with self._lock:
            entry = self._teams.pop(self.key(request, config), None)
        if entry is not None:
            team, team_lock = entry
            with team_lock:
                team.close()

    def __len__(self) -> int:
        return len(self._teams)
