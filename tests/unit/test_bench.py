"""The benchmark's accounting and table (its figures come from real runs of `mentorcollab bench`)."""

from __future__ import annotations

from mentorcollab_langchain.backends import ScriptedBackend
from mentorcollab_langchain.bench import BenchCase, format_table, measure
from mentorcollab_langchain.engine import CollabConfig


def test_measure_counts_committed_tokens_and_mentor_work_per_case() -> None:
    generator = ScriptedBackend("one two three four five six seven eight")
    mentor = ScriptedBackend("one two 3 4 5 6 7 8")
    rows = measure(
        [BenchCase("alone", generator, generator, 0.0), BenchCase("together", generator, mentor, 1.0)],
        ["p1", "p2"],
        CollabConfig(max_new_tokens=6, segment_tokens=2),
    )
    assert [row.label for row in rows] == ["alone", "together"]
    assert rows[0].tokens == rows[1].tokens == 12  # 6 committed tokens for each of the two prompts
    assert rows[0].mentor_tokens_generated == 0 and rows[0].mentor_share == 0.0
    assert rows[1].mentor_tokens_generated > 0
    table = format_table(rows).splitlines()
    assert table[0].split()[:2] == ["setup", "tokens"] and table[1].split()[-3] == "1.00x"
