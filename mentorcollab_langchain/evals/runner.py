"""Run methods over benchmark questions, one JSONL line per (question, method config), resumable.

Each result line is keyed by benchmark, split, question id and a hash of everything that defines the
method (role, models and the backends that ran them, verifier, collaboration config, prompt kind and
prompt version). A rerun skips the keys already in the file, so an interrupted eval resumes where it
stopped, and a changed setting gets a new hash instead of mixing with old results.
Each line also records the numerics its models ran with (library versions, prompt batching); they stay
out of the hash, so results resume across an upgrade, and a resume that would mix them warns.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from mentorcollab_langchain.backends.base import Backend
from mentorcollab_langchain.engine import CollabConfig, run_collaboration
from mentorcollab_langchain.errors import ConfigError
from mentorcollab_langchain.evals.data import Question
from mentorcollab_langchain.evals.extract import score
from mentorcollab_langchain.evals.prompts import PROMPT_VERSION, BuiltPrompt, PromptKind, build_prompt
from mentorcollab_langchain.verifiers import DEFAULT_VERIFIER, PAPER_VERIFIER

Role = Literal["generator", "mentor", "collab"]
METHOD_NAMES = ("generator", "mentor", "mentorcollab", "faithful", "previous-default")
# The defaults before the uncertain policy and the mentor-margin verifier, kept for comparison.
PREVIOUS_DEFAULT = {"probe_policy": "random", "probe_rate": 0.1}
PREVIOUS_VERIFIER = "self-consult-both-orders"
SWEEP_PROBE_RATES = (0.02, 0.05, 0.1, 0.2)
SWEEP_SEGMENT_TOKENS = (4, 8, 16)
SWEEP_VERIFIERS = ("self-consult", "self-consult-both-orders", "always-mentor")
# A model answering alone: nothing is ever probed, whatever the base config's policy.
ALONE = {"probe_policy": "random", "probe_rate": 0.0}
# The collaboration settings a method's label names when they differ from the defaults.
LABELLED_SETTINGS = ("probe_policy", "probe_rate", "uncertainty_signal", "uncertainty_threshold", "segment_tokens")
# Settings added after results were recorded, at the value that runs as before they existed. A method's key
# leaves them out at that value, so results recorded before them keep their hash and still resume.
SETTINGS_ADDED_LATER = {"grammar": None, "probe_first_word": False, "read_ahead": False, "max_mentor_tokens_read": None}


# How a question's probe seed is made from the method's seed. With one seed for every question, every
# question is probed at the same word positions (seed 0, p=0.1: words 6, 30, 32, ...), so a one-word
# multiple-choice answer is never probed at all. Each question gets its own seed instead.
SEEDING = "per-question:sha256(seed:question_id)"


def question_seed(seed: int, question_id: str) -> int:
    """The probe seed of one question: deterministic, different across questions, reproducible."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{question_id}".encode()).digest()[:4], "big")


@dataclass(frozen=True)
class ModelInfo:
    """Which model ran a role, and on what (``transformers``, ``llama.cpp``, or a server URL).

    ``numerics`` names what the backend's arithmetic depends on (library versions, prompt batching): another
    llama.cpp or torch can flip a greedy near-tie. It is recorded with every answer but kept out of a
    method's key, so results resume across an upgrade, and a resume that would mix them says so.
    """

    name: str
    backend: str
    numerics: str = ""

    def identity(self) -> dict[str, str]:
        """What a method's key holds of the model: its name and what ran it."""
        return {"name": self.name, "backend": self.backend}


@dataclass(frozen=True)
class Method:
    """One way of answering: the generator alone, the mentor alone, or a collaboration setting.

    ``config`` holds everything but the prompt style and stop strings, which come from the prompt kind
    per question. ``prompt`` is the prompt kind (chat or fewshot).
    """

    label: str
    role: Role
    config: CollabConfig
    prompt: PromptKind
    verifier: str = DEFAULT_VERIFIER

    def key(self, generator: ModelInfo, mentor: ModelInfo) -> dict[str, Any]:
        """Everything that defines this method's results, as plain data."""
        models = {role: info.identity() for role, info in self._models(generator, mentor)}
        config = self.config.model_dump(mode="json", exclude={"prompt_style", "stop"})
        if self.role != "collab":
            kept = ("max_new_tokens", "max_word_tokens", "repetition_guard")
            config = {name: value for name, value in config.items() if name in kept}
        else:
            config["read_ahead"] = self.config.reads_ahead  # what the run does, set or left to the budget
            config = {name: value for name, value in config.items()
                      if name not in SETTINGS_ADDED_LATER or value != SETTINGS_ADDED_LATER[name]}
            config["seeding"] = SEEDING
        return {
            "role": self.role,
            "models": models,
            "verifier": self.verifier if self.role == "collab" else None,
            "config": config,
            "prompt": self.prompt,
            "prompt_version": PROMPT_VERSION,
        }

    def numerics(self, generator: ModelInfo, mentor: ModelInfo) -> dict[str, str]:
        """The numerics of the models this method runs, by role."""
        return {role: info.numerics for role, info in self._models(generator, mentor)}

    def _models(self, generator: ModelInfo, mentor: ModelInfo) -> list[tuple[str, ModelInfo]]:
        """The models this method runs, by role: a model alone runs only itself."""
        return [(role, info) for role, info in (("generator", generator), ("mentor", mentor))
                if self.role in (role, "collab")]

    def config_hash(self, generator: ModelInfo, mentor: ModelInfo) -> str:
        canonical = json.dumps(self.key(generator, mentor), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def make_methods(
    names: Iterable[str], base: CollabConfig, prompt: PromptKind, verifier: str = DEFAULT_VERIFIER
) -> list[Method]:
    """The named methods over one base config (``faithful`` uses the paper's settings and raw prompts)."""
    methods = []
    for name in names:
        if name == "generator":
            methods.append(Method("generator", "generator", base.model_copy(update=ALONE), prompt))
        elif name == "mentor":
            methods.append(Method("mentor", "mentor", base.model_copy(update=ALONE), prompt))
        elif name == "mentorcollab":
            methods.append(Method(_collab_label(base, verifier), "collab", base, prompt, verifier))
        elif name == "faithful":
            kept = {"max_new_tokens": base.max_new_tokens, "seed": base.seed, "read_ahead": base.read_ahead}
            faithful = CollabConfig.faithful(**kept)
            methods.append(Method("faithful", "collab", faithful, "fewshot", PAPER_VERIFIER))
        elif name == "previous-default":
            previous = base.model_copy(update=PREVIOUS_DEFAULT)
            methods.append(Method("previous-default", "collab", previous, prompt, PREVIOUS_VERIFIER))
        else:
            raise ConfigError(f"unknown method {name!r}; choose from {', '.join(METHOD_NAMES)}")
    return methods


def label_for_key(key: dict[str, Any]) -> str | None:
    """A default-named collaboration's label from its method key, against today's defaults.

    Reports relabel with this, so results recorded before a default changed name what they ran.
    """
    if key.get("role") != "collab":
        return None
    recorded = key.get("config", {})
    config = {name: value for name, value in recorded.items() if name in LABELLED_SETTINGS}
    if "probe_policy" not in recorded:  # recorded before probe policies existed: the paper's random probes
        config["probe_policy"] = "random"
    return _collab_label(CollabConfig(**config), key.get("verifier") or DEFAULT_VERIFIER)


def _collab_label(config: CollabConfig, verifier: str) -> str:
    """``mentorcollab``, with the settings that differ from the defaults, e.g. ``mentorcollab (p=1)``.

    Only the settings of the policy in use are named: a random policy's label never mentions thresholds.
    """
    defaults = CollabConfig()
    names = {"probe_policy", "probe_rate", "segment_tokens"}
    names |= {"uncertainty_signal", "uncertainty_threshold"} if config.probe_policy == "uncertain" else set()
    short = {"probe_policy": "", "probe_rate": "p=", "uncertainty_signal": "", "uncertainty_threshold": "t=",
             "segment_tokens": "seg="}
    changed = [f"{short[name]}{getattr(config, name):g}" if isinstance(getattr(config, name), float)
               else f"{short[name]}{getattr(config, name)}"
               for name in LABELLED_SETTINGS if name in names and getattr(config, name) != getattr(defaults, name)]
    if verifier != DEFAULT_VERIFIER:
        changed.append(verifier)
    return f"mentorcollab ({', '.join(changed)})" if changed else "mentorcollab"


def sweep_methods(
    base: CollabConfig,
    prompt: PromptKind,
    probe_rates: Sequence[float] = SWEEP_PROBE_RATES,
    segment_tokens: Sequence[int] = SWEEP_SEGMENT_TOKENS,
    verifiers: Sequence[str] = SWEEP_VERIFIERS,
) -> list[Method]:
    """The generator baseline plus one collaboration per (probe rate, segment length, verifier)."""
    methods = make_methods(["generator"], base, prompt)
    for verifier in verifiers:
        for rate in probe_rates:
            for segment in segment_tokens:
                config = base.model_copy(update={"probe_rate": rate, "segment_tokens": segment})
                methods.append(Method(f"p{rate:g}-s{segment}-{verifier}", "collab", config, prompt, verifier))
    return methods


def result_key(record: dict[str, Any]) -> tuple[str, str, str, str]:
    return (record["benchmark"], record["split"], str(record["question_id"]), record["config_hash"])


def read_results(path: Path) -> list[dict[str, Any]]:
    """The records in a JSONL file (or every ``*.jsonl`` under a folder); a torn last line is skipped."""
    files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path] if path.exists() else []
    records = []
    for file in files:
        with file.open(encoding="utf-8") as lines:
            for line in lines:
                line = line.strip()
                if not line:
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut short by an interrupted write
    return records


@dataclass
class ModelPair:
    """The loaded backends and what they are, for the records."""

    generator: Backend
    mentor: Backend
    generator_info: ModelInfo
    mentor_info: ModelInfo


def question_config(config: CollabConfig, question: Question, built: BuiltPrompt) -> CollabConfig:
    """``config`` as one question runs it: the prompt's style, the benchmark's stops and the question's seed."""
    return config.model_copy(update={
        "prompt_style": built.style,
        "stop": tuple(config.stop) + built.stop,
        "seed": question_seed(config.seed, question.id),
    })


def answer(question: Question, method: Method, models: ModelPair) -> dict[str, Any]:
    """Run one method on one question and return its result record (errors are recorded, not raised)."""
    built = build_prompt(question, method.prompt)
    config = question_config(method.config, question, built)
    if method.role == "generator":
        writer, helper = models.generator, models.generator
    elif method.role == "mentor":
        writer, helper = models.mentor, models.mentor
    else:
        writer, helper = models.generator, models.mentor
    began = time.perf_counter()
    error = None
    try:
        state = run_collaboration(built.prompt, writer, helper, verifier=method.verifier, config=config)
        response, stats, finish = state.text, state.stats, state.finish_reason
        decisions = [decision.model_dump(mode="json") for decision in state.decisions]
    except Exception as failure:  # noqa: BLE001 - one broken question must not end the eval
        response, stats, finish, error = "", None, "error", f"{type(failure).__name__}: {failure}"
        decisions = []
    seconds = time.perf_counter() - began
    predicted, correct = score(question.kind, response, question.gold, question.labels, question.choices)
    return {
        "benchmark": question.benchmark,
        "split": question.split,
        "question_id": question.id,
        "config_hash": method.config_hash(models.generator_info, models.mentor_info),
        "method": method.label,
        "method_key": method.key(models.generator_info, models.mentor_info),
        "numerics": method.numerics(models.generator_info, models.mentor_info),
        "gold": question.gold,
        "predicted": predicted,
        "parsed": predicted is not None,
        "correct": bool(correct),
        "response": response,
        "finish_reason": finish,
        "error": error,
        "seconds": seconds,
        "seed": config.seed,
        "stats": _normalized_stats(method.role, stats),
        "decisions": decisions,  # each divergence: both words and segments, verifier score, choice
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _normalized_stats(role: Role, stats: Any) -> dict[str, Any]:
    """The cost figures seen from the roles: when the mentor writes alone, its tokens are mentor tokens.

    Tokens read (prompt, catch-ups, scoring) are recorded beside tokens generated: on few-shot prompts
    reading is most of the mentor's compute. A question whose run failed has no accounting, so its
    reading is recorded as unknown (``None``), not as zero.
    """
    if stats is None:
        return {"tokens_committed": 0, "mentor_tokens_committed": 0, "mentor_share": 0.0, "mentor_tokens_generated": 0,
                "generator_tokens_generated": 0, "mentor_tokens_read": None, "generator_tokens_read": None,
                "probes": 0, "divergences": 0, "adoptions": 0, "mentor_calls": 0, "mentor_errors": 0}
    figures = {
        "tokens_committed": stats.tokens_committed,
        "mentor_tokens_committed": stats.mentor_tokens_committed,
        "mentor_share": stats.mentor_share,
        "mentor_tokens_generated": stats.mentor_tokens_generated,
        "generator_tokens_generated": stats.generator_tokens_generated,
        "mentor_tokens_read": stats.mentor_tokens_read,
        "generator_tokens_read": stats.generator_tokens_read,
        "probes": stats.probes,
        "divergences": stats.divergences,
        "adoptions": stats.adoptions,
        "mentor_calls": stats.mentor_calls,
        "mentor_errors": stats.mentor_errors,
        "phase_seconds": dict(stats.seconds),
    }
    if role == "mentor":
        figures |= {
            "mentor_tokens_committed": stats.tokens_committed,
            "mentor_share": 1.0 if stats.tokens_committed else 0.0,
            "mentor_tokens_generated": stats.generator_tokens_generated,
            "generator_tokens_generated": 0,
            "mentor_tokens_read": stats.generator_tokens_read,
            "generator_tokens_read": 0,
            "mentor_calls": stats.generator_calls,
        }
    return figures


def _end_torn_line(path: Path) -> None:
    """After an interrupted write the file may end mid-line: end it, so new lines stay whole."""
    if path.exists() and path.stat().st_size:
        with path.open("rb") as source:
            source.seek(-1, 2)
            last = source.read(1)
        if last != b"\n":
            with path.open("ab") as sink:
                sink.write(b"\n")


@dataclass
class Progress:
    """Running tally of one method on one benchmark, for the progress bar."""

    done: int = 0
    correct: int = 0
    unparsed: int = 0
    seconds: float = 0.0
    resumed: int = 0

    def add(self, record: dict[str, Any], resumed: bool = False) -> None:
        self.done += 1
        self.correct += int(record["correct"])
        self.unparsed += int(not record["parsed"])
        self.seconds += record["seconds"]
        self.resumed += int(resumed)

    @property
    def accuracy(self) -> float:
        return self.correct / self.done if self.done else 0.0


@dataclass
class EvalRun:
    """Questions × methods into one JSONL file, resuming what the file already holds."""

    out_file: Path
    models: ModelPair
    show_progress: bool = True
    log: Callable[[str], None] = print
    tallies: dict[tuple[str, str], Progress] = field(default_factory=dict)

    def run(self, questions: Sequence[Question], methods: Sequence[Method]) -> list[dict[str, Any]]:
        self.out_file.parent.mkdir(parents=True, exist_ok=True)
        existing = {result_key(record): record for record in read_results(self.out_file)}
        _end_torn_line(self.out_file)
        written = []
        for method in methods:
            config_hash = method.config_hash(self.models.generator_info, self.models.mentor_info)
            benchmark = questions[0].benchmark if questions else "?"
            tally = self.tallies.setdefault((benchmark, method.label), Progress())
            todo, resumed = [], []
            for question in questions:
                done = existing.get((question.benchmark, question.split, question.id, config_hash))
                if done is not None:
                    tally.add(done, resumed=True)
                    resumed.append(done)
                else:
                    todo.append(question)
            if tally.resumed:
                self.log(f"{benchmark} / {method.label} [{config_hash}]: {tally.resumed} answers already in "
                         f"{self.out_file}, {len(todo)} to go")
            if todo:
                self._warn_of_other_numerics(method, resumed, benchmark)
            bar = self._bar(len(questions), tally, f"{benchmark} {method.label}")
            try:
                for question in todo:
                    record = answer(question, method, self.models)
                    with self.out_file.open("a", encoding="utf-8") as sink:
                        sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                    written.append(record)
                    tally.add(record)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(self._postfix(tally), refresh=False)
                    else:
                        self.log(f"{benchmark} {method.label} {tally.done}/{len(questions)} "
                                 + " ".join(f"{k}={v}" for k, v in self._postfix(tally).items()))
            finally:
                if bar is not None:
                    bar.close()
        return written

    def _warn_of_other_numerics(self, method: Method, resumed: Sequence[dict[str, Any]], benchmark: str) -> None:
        """Say so when the answers about to be added would sit beside answers computed with other numerics."""
        today = method.numerics(self.models.generator_info, self.models.mentor_info)
        other = Counter(json.dumps(record.get("numerics", "not recorded"), sort_keys=True)
                        for record in resumed if record.get("numerics") != today)
        if other:
            named = "; ".join(f"{count} with {numerics}" for numerics, count in other.most_common())
            self.log(f"{benchmark} / {method.label}: warning: {other.total()} of the answers already in "
                     f"{self.out_file} were computed with other numerics ({named}; today: "
                     f"{json.dumps(today, sort_keys=True)}), which can flip a greedy near-tie; give --out a new "
                     "file to keep them apart")

    @staticmethod
    def _postfix(tally: Progress) -> dict[str, str]:
        return {
            "acc": f"{tally.accuracy:.1%}",
            "unparsed": str(tally.unparsed),
            "s/q": f"{tally.seconds / tally.done:.1f}" if tally.done else "-",
        }

    def _bar(self, total: int, tally: Progress, title: str):  # tqdm or None
        if not self.show_progress:
            return None
        from tqdm import tqdm

        bar = tqdm(total=total, initial=tally.done, desc=title, unit="q", dynamic_ncols=True)
        bar.set_postfix(self._postfix(tally), refresh=True)
        return bar
