"""The graph's open cursors (``graphs.teams.TeamCache``): concurrent runs, release and eviction.

The cache keeps each run's team (its two cursors) open from one node to the next, keyed by thread,
graph namespace and prompt, and forgets the least recently used team beyond its size. These tests run
the graph from several threads at once on scripted models whose answers depend on the prompt, so a run
that got another run's cursors, or a cursor closed under a run, would show in the answer.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from graphs import MentorCollabContext, build_mentorcollab_graph
from graphs.teams import TeamCache
from mentorcollab_langchain.backends import ScriptedBackend
from mentorcollab_langchain.backends.base import Piece
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.engine import CollabConfig, Team, run_collaboration
from mentorcollab_langchain.errors import BackendError
from mentorcollab_langchain.verifiers import get_verifier

CONFIG = CollabConfig(probe_rate=0.5, segment_tokens=3, seed=1, max_new_tokens=60)
STORIES = 3
RUNS_PER_STORY = 2  # two threads ask for each story: the same prompt on different thread_ids


def prompt(story: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Tell me story {story}."}]


def generator_answer(story: int) -> str:
    return f"Story {story}: the cat sat on the mat and then it slept all day long in the warm sun."


def mentor_answer(story: int) -> str:
    return f"Story {story}: the dog ran in the park and then it barked all night long at the cold moon."


class Cursors:
    """What a backend's cursors did: every cursor opened, which OS threads used it, how many are open."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened: list[TrackedCursor] = []
        self.open_now = 0
        self.most_open = 0

    def add(self, cursor: TrackedCursor) -> None:
        with self.lock:
            self.opened.append(cursor)
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)

    def closed(self) -> None:
        with self.lock:
            self.open_now -= 1


class TrackedCursor:
    """A scripted cursor that refuses to work once closed and remembers the OS threads that used it."""

    def __init__(self, inner: Any, story: int, backend: StoryBackend) -> None:
        self.inner, self.story, self.backend, self.cursors = inner, story, backend, backend.cursors
        self.tokens_read = 0
        self.closed = False
        self.threads: set[int] = set()
        self.cursors.add(self)

    def _use(self) -> None:
        if self.closed:
            raise BackendError(f"story {self.story}: the cursor was closed")  # as llama.cpp's cursor does
        self.threads.add(threading.get_ident())
        self.backend.arrive()

    def next_word(self, text: str, max_tokens: int, with_confidence: bool = False) -> Piece:
        self._use()
        return self.inner.next_word(text, max_tokens, with_confidence)

    def generate(self, text: str, max_tokens: int, stop: Sequence[str] = ()) -> Piece:
        self._use()
        return self.inner.generate(text, max_tokens, stop)

    def score_continuation(self, text: str, continuation: str) -> Any:
        self._use()
        return self.inner.score_continuation(text, continuation)

    def label_logprobs(self, text: str, labels: Sequence[str]) -> list[float]:
        self._use()
        return self.inner.label_logprobs(text, labels)

    def hidden_state(self, text: str) -> list[float]:
        self._use()
        return self.inner.hidden_state(text)

    def close(self) -> None:
        assert not self.closed, "a cursor was closed twice"
        self.closed = True
        self.cursors.closed()


class StoryBackend:
    """A scripted model whose answer depends on the story the prompt asks for."""

    def __init__(self, name: str, answer: Any, barrier: threading.Barrier | None = None) -> None:
        self.name, self.answer, self.barrier = name, answer, barrier
        self.cursors = Cursors()
        self.arrived: set[int] = set()

    @property
    def model_name(self) -> str:
        return self.name

    def open(self, request: Any, style: str = "chat", sampling: Sampling = GREEDY) -> TrackedCursor:
        story = int(request[-1]["content"].split()[-1].rstrip("."))
        inner = ScriptedBackend(self.answer(story), name=f"{self.name}-{story}").open(request, style, sampling)
        return TrackedCursor(inner, story, self)

    def arrive(self) -> None:
        """Each run's first model call (one OS thread per run) waits until every run is in flight."""
        with self.cursors.lock:
            first = threading.get_ident() not in self.arrived
            self.arrived.add(threading.get_ident())
        if first and self.barrier is not None:
            self.barrier.wait()


def expected_text(story: int) -> str:
    return run_collaboration(prompt(story), ScriptedBackend(generator_answer(story)),
                             ScriptedBackend(mentor_answer(story)), verifier="always-mentor", config=CONFIG).text


def runs() -> list[tuple[int, str]]:
    """(story, thread_id) of every run: each story on two thread_ids."""
    return [(story, f"story-{story}-run-{copy}") for story in range(STORIES) for copy in range(RUNS_PER_STORY)]


def concurrent_graph_runs(cache_size: int) -> tuple[dict[str, str], StoryBackend, StoryBackend, TeamCache]:
    """Every run of ``runs()`` at once, each in its own thread; the answer of each thread_id."""
    everyone = runs()
    barrier = threading.Barrier(len(everyone), timeout=20)  # broken (and the test failed) if the runs serialize
    generator = StoryBackend("gen", generator_answer, barrier)
    mentor = StoryBackend("men", mentor_answer)
    teams = TeamCache(size=cache_size)
    context = MentorCollabContext(generator=generator, mentor=mentor, verifier=get_verifier("always-mentor"),
                                  config=CONFIG, teams=teams)
    graph = build_mentorcollab_graph(generator, mentor, verifier="always-mentor", config=CONFIG,
                                     checkpointer=InMemorySaver())

    def answer(story: int, thread_id: str) -> str:
        result = graph.invoke({"messages": prompt(story)}, {"configurable": {"thread_id": thread_id}}, context=context)
        return result["answer"].content

    with ThreadPoolExecutor(max_workers=len(everyone)) as pool:
        futures = {thread_id: pool.submit(answer, story, thread_id) for story, thread_id in everyone}
        answers = {thread_id: future.result(timeout=60) for thread_id, future in futures.items()}
    return answers, generator, mentor, teams


@pytest.mark.parametrize("cache_size", [8, 2], ids=["all-teams-fit", "teams-evicted-mid-run"])
def test_concurrent_runs_on_different_threads_get_their_own_cursors_and_the_sequential_answers(
    cache_size: int,
) -> None:
    answers, generator, mentor, teams = concurrent_graph_runs(cache_size)
    assert answers == {thread_id: expected_text(story) for story, thread_id in runs()}
    assert len(set(answers.values())) == STORIES  # the stories really differ, so a borrowed cursor would show
    for backend in (generator, mentor):
        opened = backend.cursors.opened
        if cache_size >= len(runs()):
            assert len(opened) == len(runs()), "one team per run: opened once, kept between nodes"
        else:
            assert len(opened) >= len(runs())  # an evicted run's next node opens its team again
        # Each cursor served one run only: one story, and the one OS thread that ran that run's graph.
        assert all(len(cursor.threads) == 1 for cursor in opened if cursor.threads)
        assert {cursor.story for cursor in opened} == set(range(STORIES))
        assert all(cursor.closed for cursor in opened), "a team was left open (released or evicted, never closed)"
        assert backend.cursors.open_now == 0
    assert generator.cursors.most_open > 1, "the runs did not overlap"
    assert len(teams) == 0  # every run released its team at finish


# -- the cache alone ---------------------------------------------------------------------------


class FakeCursor:
    tokens_read = 0

    def __init__(self) -> None:
        self.closed = 0

    def next_word(self, text: str, max_tokens: int, with_confidence: bool = False) -> Piece:
        return Piece("", 0, eos=True)

    def close(self) -> None:
        self.closed += 1


def fake_team() -> Team:
    return Team(FakeCursor(), FakeCursor(), get_verifier("never-mentor"), CollabConfig())  # type: ignore[arg-type]


def closed(team: Team) -> tuple[int, int]:
    return team.generator.closed, team.mentor.closed  # type: ignore[attr-defined]


def config(thread_id: str) -> dict:
    return {"configurable": {"thread_id": thread_id}}


def use(cache: TeamCache, thread_id: str) -> Team:
    """Use a thread's team for one node and return it (opened if the cache had none)."""
    with cache.use("a prompt", config(thread_id), fake_team) as team:
        return team


def test_a_bounded_cache_never_holds_more_teams_than_its_size_and_closes_those_it_evicts() -> None:
    cache = TeamCache(size=3)
    teams = [use(cache, f"thread-{index}") for index in range(20)]
    assert len(cache) == 3
    assert [closed(team) for team in teams[:17]] == [(1, 1)] * 17, "an evicted team's cursors were not closed"
    assert [closed(team) for team in teams[17:]] == [(0, 0)] * 3
    # The least recently used goes first: using thread-17 again keeps it, and thread-18 is evicted next.
    assert use(cache, "thread-17") is teams[17]
    use(cache, "thread-new")
    assert closed(teams[18]) == (1, 1) and closed(teams[17]) == (0, 0)


def test_release_closes_the_runs_team_once_and_forgets_it() -> None:
    cache = TeamCache()
    team = use(cache, "one")
    other = use(cache, "two")
    cache.release("a prompt", config("one"))
    assert closed(team) == (1, 1) and len(cache) == 1
    cache.release("a prompt", config("one"))  # nothing left to release: nothing closes twice
    assert closed(team) == (1, 1) and closed(other) == (0, 0)
    assert use(cache, "one") is not team  # the run's next node opens a fresh team


def test_a_team_evicted_or_released_while_a_node_uses_it_is_closed_only_when_the_node_is_done() -> None:
    cache = TeamCache(size=1)
    with cache.use("a prompt", config("busy"), fake_team) as busy:
        use(cache, "other")  # evicts the busy run's team while its node still works with it
        assert closed(busy) == (0, 0), "closed under a node that was using it"
        assert len(cache) == 1
    assert closed(busy) == (1, 1)  # closed as the node let go of it
    with cache.use("a prompt", config("busy"), fake_team) as again:
        assert again is not busy
        cache.release("a prompt", config("busy"))  # the run ends (another caller) while the node works
        assert closed(again) == (0, 0)
    assert closed(again) == (1, 1)


def test_interrupted_runs_beyond_the_cache_size_resume_to_their_answers() -> None:
    """Runs paused at a human verifier keep their teams; past the cache's size the oldest are evicted
    (and closed), and resuming an evicted run reopens its cursors from the checkpointed text."""
    generator, mentor = StoryBackend("gen", generator_answer), StoryBackend("men", mentor_answer)
    context = MentorCollabContext(generator=generator, mentor=mentor, verifier=get_verifier("always-mentor"),
                                  config=CONFIG, teams=TeamCache(size=2), human_verifier=True)
    graph = build_mentorcollab_graph(generator, mentor, config=CONFIG, checkpointer=InMemorySaver(),
                                     human_verifier=True)
    paused = [f"paused-{story}" for story in range(STORIES + 2)]
    for index, thread_id in enumerate(paused):
        result = graph.invoke({"messages": prompt(index % STORIES)}, config(thread_id), context=context)
        assert "__interrupt__" in result
        assert len(context.teams) <= 2
    assert sum(not cursor.closed for cursor in generator.cursors.opened) == 2  # only the teams the cache holds
    for index, thread_id in enumerate(paused):
        while "__interrupt__" in (result := graph.invoke(Command(resume="mentor"), config(thread_id),
                                                         context=context)):
            pass
        assert result["answer"].content == expected_text(index % STORIES)
    assert len(context.teams) == 0
    assert all(cursor.closed for cursor in generator.cursors.opened + mentor.cursors.opened)
