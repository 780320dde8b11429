"""The mentor reading its prompt ahead: every mentor call waits for it, its failure is the first call's,
and closing stops it. A scripted cursor whose reading the test holds open forces each situation; the
real cursors' ``read_prompt`` is tested in ``tests/unit/backends/test_read_prompt.py`` and the unchanged
answers on real models in ``tests/integration/engine/test_read_ahead.py``."""

from __future__ import annotations

import threading

import pytest

from mentorcollab_langchain.backends import ScriptedBackend
from mentorcollab_langchain.backends.scripted import ScriptedCursor
from mentorcollab_langchain.engine import CollabConfig, CollabState, MentorFailed, collaborate, open_team, run_steps
from mentorcollab_langchain.engine.config import READ_AHEAD_MIN_TOKENS
from mentorcollab_langchain.engine.read_ahead import ReadingAhead
from mentorcollab_langchain.errors import BackendError, ContextTooLongError

PROBE_EVERY_WORD = CollabConfig(probe_policy="random", probe_rate=1.0)


class ReadingCursor(ScriptedCursor):
    """A scripted cursor whose ``read_prompt`` reads one token per step until the test opens ``release``
    (or ``stop`` is set), and then fails with ``failure`` if one is given."""

    def __init__(self, backend: ReadingBackend) -> None:
        super().__init__(backend)
        self.reading = threading.Event()  # set once read_prompt has started
        self.read_done = threading.Event()
        self.stopped_early = False
        self.closed = False
        self.calls_while_reading = 0

    def read_prompt(self, stop: threading.Event) -> None:
        self.reading.set()
        try:
            while not self.backend.release.wait(0.001):
                self.tokens_read += 1
                if stop.is_set():
                    self.stopped_early = True
                    return
            if self.backend.failure is not None:
                raise self.backend.failure
        finally:
            self.read_done.set()

    def next_word(self, text: str, max_tokens: int, with_confidence: bool = False):
        self.calls_while_reading += not self.read_done.is_set()
        return super().next_word(text, max_tokens, with_confidence)

    def close(self) -> None:
        assert self.read_done.is_set() or not self.reading.is_set(), "closed while it was still reading"
        self.closed = True


class ReadingBackend(ScriptedBackend):
    def __init__(self, answer: str, failure: Exception | None = None) -> None:
        super().__init__(answer, name="reading")
        self.release = threading.Event()
        self.failure = failure
        self.cursors: list[ReadingCursor] = []

    def open(self, *args: object, **options: object) -> ReadingCursor:
        super().open(*args, **options)
        self.cursors.append(ReadingCursor(self))
        return self.cursors[-1]


def test_the_mentor_reads_while_the_generator_writes_and_its_first_call_waits_for_the_reading() -> None:
    mentor = ReadingBackend("one two three four")
    state = CollabState()
    with open_team("q", ScriptedBackend("one two three four"), mentor, config=PROBE_EVERY_WORD) as team:
        cursor = mentor.cursors[0]
        assert isinstance(team.mentor, ReadingAhead) and cursor.reading.wait(5)
        assert team.mentor.tokens_read >= 0 and not cursor.read_done.is_set()  # the count never waits
        threading.Timer(0.05, mentor.release.set).start()  # the reading ends while the first probe waits
        list(run_steps(state, team))
    assert state.text == "one two three four" and state.stats.mentor_calls == state.stats.probes > 0
    assert cursor.calls_while_reading == 0 and not cursor.stopped_early and cursor.closed
    # What the mentor read ahead is accounted once, as reading, like any other tokens it read.
    assert state.stats.mentor_tokens_read == cursor.tokens_read > 0


def test_without_read_ahead_the_mentor_reads_nothing_before_it_is_asked() -> None:
    mentor = ReadingBackend("one two")
    config = PROBE_EVERY_WORD.model_copy(update={"read_ahead": False})
    with open_team("q", ScriptedBackend("one two"), mentor, config=config) as team:
        assert team.mentor is mentor.cursors[0]
        list(run_steps(CollabState(), team))
    assert not mentor.cursors[0].reading.is_set()


@pytest.mark.parametrize(
    ("config", "reads_ahead"),
    [
        (CollabConfig(probe_policy="random", probe_rate=0.0), False),  # a model alone, as evals run it
        (CollabConfig(probe_policy="random", probe_rate=0.0, probe_first_word=True), True),
        (CollabConfig(probe_policy="uncertain", probe_rate=0.0), True),  # probes where the generator is unsure
        (CollabConfig(probe_policy="random", probe_rate=0.01), True),
        # A multiple-choice letter's budget: written before reading ahead could hide anything, unless asked for.
        (CollabConfig(max_new_tokens=16), False),
        (CollabConfig(max_new_tokens=16, read_ahead=True), True),
        (CollabConfig(max_new_tokens=READ_AHEAD_MIN_TOKENS), True),
        (CollabConfig(read_ahead=False), False),
    ],
)
def test_which_runs_read_ahead(config: CollabConfig, reads_ahead: bool) -> None:
    """Only a run that can probe, with an answer long enough for the reading to hide something, unless told."""
    mentor = ReadingBackend("one two")
    mentor.release.set()
    with open_team("q", ScriptedBackend("one two"), mentor, config=config) as team:
        assert isinstance(team.mentor, ReadingAhead) is reads_ahead


def test_a_failed_reading_is_the_first_mentor_calls_failure_and_the_generator_goes_on() -> None:
    mentor = ReadingBackend("one two three", failure=ContextTooLongError("the prompt fills the mentor's context"))
    mentor.release.set()
    state = CollabState()
    events = list(collaborate("q", ScriptedBackend("one two three"), mentor, config=PROBE_EVERY_WORD, state=state))
    failures = [event for event in events if isinstance(event, MentorFailed)]
    assert len(failures) == 1 and "ContextTooLongError: the prompt fills" in failures[0].error
    assert state.text == "one two three" and state.stats.probes == 1 and state.stats.mentor_calls == 0
    assert mentor.calls == 0, "the failed reading, not a mentor call, is the failure"


def test_under_raise_a_failed_reading_stops_the_run_with_its_error() -> None:
    mentor = ReadingBackend("one two", failure=BackendError("the server is down"))
    mentor.release.set()
    config = PROBE_EVERY_WORD.model_copy(update={"on_mentor_error": "raise"})
    state = CollabState()
    with pytest.raises(BackendError, match="the server is down"):
        list(collaborate("q", ScriptedBackend("one two"), mentor, config=config, state=state))
    assert state.finish_reason == "error" and mentor.cursors[0].closed


def test_after_its_failure_is_raised_the_cursor_answers_again() -> None:
    mentor = ReadingBackend("one two", failure=BackendError("a hiccup"))
    mentor.release.set()
    reading = ReadingAhead(mentor.open("q"))
    with pytest.raises(BackendError, match="a hiccup"):
        reading.next_word("", 4)
    assert reading.next_word("", 4).text == "one"
    reading.close()


def test_closing_a_team_stops_the_reading_and_closes_the_cursor_after_it() -> None:
    mentor = ReadingBackend("one two")  # never released: only closing ends the reading
    team = open_team("q", ScriptedBackend("one two"), mentor, config=PROBE_EVERY_WORD)
    cursor = mentor.cursors[0]
    assert cursor.reading.wait(5)
    team.close()
    assert cursor.stopped_early and cursor.closed
