"""Where the tests find the repository's own files (examples, published results), wherever a test sits."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
RESULTS = REPO / "docs" / "results"
TUNING = RESULTS / "tuning"


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py`` imported as a module (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
