"""The published evaluation tables rebuild exactly from the committed per-question records."""

from __future__ import annotations

from pathlib import Path

from mentorcollab_langchain.evals.report import build_report
from tests.paths import RESULTS


def _without_source_line(text: str) -> list[str]:
    """The report minus the line naming the folder it was rebuilt from (an absolute path in the test)."""
    return [line for line in text.splitlines() if not line.startswith("Rebuilt from the result JSONL")]


def test_the_published_report_rebuilds_from_the_committed_records(tmp_path: Path) -> None:
    report, image = build_report(RESULTS / "data", tmp_path)
    published = (RESULTS / "report.md").read_text(encoding="utf-8")
    assert _without_source_line(report.read_text(encoding="utf-8")) == _without_source_line(published)
    assert image.exists() and image.stat().st_size > 10_000


def test_the_results_readme_quotes_the_rebuilt_summary(tmp_path: Path) -> None:
    report, _ = build_report(RESULTS / "data", tmp_path)
    summary = report.read_text(encoding="utf-8").split("## Summary\n\n", 1)[1].split("\n\n", 1)[0]
    assert summary in (RESULTS / "README.md").read_text(encoding="utf-8")
