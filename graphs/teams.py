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


class _Entry:
    """One run's open team, the lock that lets one node at a time use it, and who is using it.

    ``users`` counts the nodes holding the team (at most one works with it, others wait for the lock);
    ``retired`` says the cache let go of it (released or evicted), so the last user closes it.
    """

    __slots__ = ("closed", "lock", "retired", "team", "users")

    def __init__(self, team: Team) -> None:
        self.team = team
        self.lock = threading.Lock()
        self.users = 0
        self.retired = False
        self.closed = False


class TeamCache:
    """Open teams per (thread, namespace, prompt), the least recently used forgotten beyond ``size``.

    ``use`` hands a node its run's team, opening it with the given function the first time; one node
    at a time uses a team (concurrent runs of one thread and prompt wait for each other), while other
    runs go on in parallel. ``release`` closes the team when its run is over. A team the cache forgets
    (released, or evicted beyond ``size``) is closed at once, or by the last node still using it, never
    under a node: an evicted run's next node simply opens its team again.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._teams: OrderedDict[TeamKey, _Entry] = OrderedDict()
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
        idle: list[_Entry] = []
        with self._lock:
            entry = self._teams.get(key)
            if entry is not None:
                self._teams.move_to_end(key)
            else:
                entry = self._teams[key] = _Entry(open_team())
            entry.users += 1  # before any eviction below, so the team is not closed under this node
            while len(self._teams) > self.size:
                # Forget the least recently used team: closed now if no node holds it, else by its last user.
                idle += self._retire(self._teams.popitem(last=False)[1])
        try:
            _close(idle)
            with entry.lock:
                yield entry.team
        finally:
            with self._lock:
                entry.users -= 1
                done = self._retire(entry) if entry.retired else []
            _close(done)

    def release(self, request: Request, config: RunnableConfig) -> None:
        """Close the run's team, if it has one open (once no node of the same run is using it)."""
        with self._lock:
            entry = self._teams.pop(self.key(request, config), None)
            done = self._retire(entry) if entry is not None else []
        _close(done)

    @staticmethod
    def _retire(entry: _Entry) -> list[_Entry]:
        """Mark a team the cache no longer holds; it is returned, to be closed, once nobody uses it (call
        with the cache's lock held, and close what it returns after letting the lock go)."""
        entry.retired = True
        if entry.users or entry.closed:
            return []
        entry.closed = True
        return [entry]

    def __len__(self) -> int:
        return len(self._teams)


def _close(entries: list[_Entry]) -> None:
    """Close each team (all of them, even if closing one fails)."""
    for index, entry in enumerate(entries):
        try:
            entry.team.close()
        except BaseException:
            _close(entries[index + 1 :])
            raise
