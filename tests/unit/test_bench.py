"""The benchmark's accounting, cost model and table, on scripted models whose work is known exactly (its
figures come from real runs of ``mentorcollab bench``, which ``tests/unit/cli/test_commands.py`` makes)."""

from __future__ import annotations

import threading

import pytest

from mentorcollab_langchain.backends import ScriptedBackend
from mentorcollab_langchain.backends.scripted import ScriptedCursor
from mentorcollab_langchain.bench import (
    AloneRow,
    BenchResult,
    CollabRow,
    ConcurrencyRow,
    FirstProbe,
    format_table,
    measure_alone,
    measure_bandwidth,
    measure_collab,
    measure_concurrency,
    measure_first_probe,
)
from mentorcollab_langchain.engine import CollabConfig
from mentorcollab_langchain.evals.prompts import BuiltPrompt

PROMPTS = [BuiltPrompt("p1", "raw", ()), BuiltPrompt("p2", "raw", ())]
GENERATOR = AloneRow("g alone", weight_bytes=2_000_000_000, read_tokens=100, read_seconds=1.0,
                     written_tokens=50, write_seconds=5.0)
MENTOR = AloneRow("m alone", weight_bytes=None, read_tokens=100, read_seconds=4.0, written_tokens=10, write_seconds=5.0)


class PromptReader(ScriptedBackend):
    """A scripted model whose cursors read a 7-token prompt ahead, as the real ones do."""

    def open(self, *args: object, **options: object) -> ScriptedCursor:
        cursor = super().open(*args, **options)

        def read_prompt(stop: threading.Event) -> None:
            cursor.tokens_read += 7

        cursor.read_prompt = read_prompt  # type: ignore[attr-defined]
        return cursor


def test_per_token_costs_and_the_bandwidth_share_come_from_the_alone_figures() -> None:
    assert GENERATOR.read_cost == pytest.approx(0.01) and GENERATOR.write_cost == pytest.approx(0.1)
    assert GENERATOR.tokens_per_second == pytest.approx(10.0) and GENERATOR.seconds == pytest.approx(6.0)
    assert GENERATOR.bandwidth_share(40.0) == pytest.approx(2e9 * 10 / 40e9)  # 50% of 40 GB/s
    assert MENTOR.bandwidth_share(40.0) is None  # weights unknown: no share claimed


def test_the_cost_model_adds_each_models_reading_and_writing_at_its_alone_costs() -> None:
    collab = CollabRow("c", seconds=12.0, tokens=60, generator_read=100, generator_written=40,
                       mentor_read=200, mentor_written=4, probes=3)
    # generator: 100 x 0.01 + 40 x 0.1 = 5; mentor: 200 x 0.04 + 4 x 0.5 = 10
    assert collab.predicted_seconds(GENERATOR, MENTOR) == pytest.approx(15.0)
    table = format_table(BenchResult("today, here", 40.0, [GENERATOR, MENTOR], [(collab, GENERATOR, MENTOR)]))
    lines = table.splitlines()
    assert lines[0] == "mentorcollab bench, today, here" and lines[1].split()[:3] == ["setup", "tokens", "seconds"]
    assert "0.80x cost model (15.0 s), 1.33x mentor alone; 3 probes" in lines[4]
    assert lines[2].split() == ["g", "alone", "50", "6.0", "10.0", "10.0", "100.0", "50%"]
    assert lines[3].split()[-1] == "-"  # no weights, no bandwidth share


def test_measure_alone_reads_the_prompt_then_writes_until_the_budget_or_the_end() -> None:
    row = measure_alone("alone", PromptReader("one two three"), PROMPTS, CollabConfig(max_new_tokens=2), 10)
    assert row.read_tokens == 2 * 7 and row.written_tokens == 2 * 2
    row = measure_alone("alone", PromptReader("one two three"), PROMPTS, CollabConfig(max_new_tokens=9), 10)
    assert row.written_tokens == 2 * 3  # the script ends after three words


def test_measure_collab_counts_what_each_model_read_and_wrote() -> None:
    config = CollabConfig(probe_policy="random", probe_rate=1.0, max_new_tokens=4, segment_tokens=2, read_ahead=True)
    row = measure_collab("c", ScriptedBackend("one two three four"), PromptReader("one 2 three four"), PROMPTS, config)
    assert row.tokens == 2 * 4 and row.probes >= 2
    assert row.mentor_written > 0 and row.mentor_read >= 2 * 7  # the mentor's read-ahead counts as reading


def test_requests_at_once_give_the_same_answers_as_one_at_a_time() -> None:
    config = CollabConfig(probe_policy="random", probe_rate=0.5, max_new_tokens=4)
    prompts = PROMPTS * 4
    row = measure_concurrency(ScriptedBackend("one two three four"), PromptReader("one 2 three four"), prompts, config)
    assert row.requests == 8 and row.tokens == 8 * 4 and row.same_answers
    table = format_table(BenchResult("m", 1.0, [], [], concurrency=ConcurrencyRow(8, 32, 4.0, 1.0, True)))
    assert "0.25x one at a time; same answers" in table.splitlines()[-2]


def test_the_first_probe_is_timed_where_it_happens_or_reported_missing() -> None:
    every_word = CollabConfig(probe_policy="random", probe_rate=1.0, max_new_tokens=4)
    probe = measure_first_probe(ScriptedBackend("one two"), PromptReader("one two"), PROMPTS[0], every_word)
    assert probe is not None and probe.words_before == 0 and probe.latency >= 0.0
    never = every_word.model_copy(update={"probe_rate": 0.0})
    assert measure_first_probe(ScriptedBackend("one two"), PromptReader("one two"), PROMPTS[0], never) is None
    cases = [("without read-ahead", FirstProbe(2.0, 3, 0.5)), ("with read-ahead", FirstProbe(0.5, 3, 0.6)),
             ("cached", FirstProbe(0.1, 2, 0.3, mentor_cached=1280))]
    lines = format_table(BenchResult("m", 1.0, [], [], first_probe=(1400, cases))).splitlines()
    assert "0.25x without read-ahead; after 3 words" in lines[-3]
    assert lines[-2].endswith("0.05x without read-ahead; after 2 words, 0.3 s; mentor found 1280 tokens cached")


def test_the_bandwidth_is_measured_in_gigabytes_per_second() -> None:
    assert 0.1 < measure_bandwidth(megabytes=16, repeats=2) < 10_000
