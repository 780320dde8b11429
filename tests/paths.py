"""Where the tests find the repository's own files (examples, published results), wherever a test sits."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
RESULTS = REPO / "docs" / "results"
TUNING = RESULTS / "tuning"
