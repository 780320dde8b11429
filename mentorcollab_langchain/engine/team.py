"""The team: the two models' open cursors, the verifier and the config that one request works with.

The state is plain data; the team is everything heavy beside it. ``open_team`` is the one way to build
it, for the run loop (``engine.run``) and the LangGraph graph alike, so both open the cursors the same
way. A team is never stored: after a resume it is opened again and the cursors rebuild their caches
from the state's text.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from types import TracebackType
from typing import NoReturn

from mentorcollab_langchain.backends.base import Backend, Cursor, ForeseesReading, Prompt, takes_grammar
from mentorcollab_langchain.engine.config import CollabConfig
from mentorcollab_langchain.engine.policies import NO_MORE_PROBES, ProbePolicy, get_probe_policy
from mentorcollab_langchain.engine.read_ahead import read_ahead
from mentorcollab_langchain.errors import ConfigError, MentorCollabError
from mentorcollab_langchain.verifiers import Verifier, get_verifier


@dataclass
class Team:
    """The heavy, per-request parts of a run: never stored in the state, rebuilt after a resume.

    ``policy`` defaults to the one ``config.probe_policy`` names. ``counted`` remembers how many tokens
    each cursor had read (and found cached) when the engine last looked, by stats field, so what a step
    causes is added to the stats exactly once (a rebuilt cursor starts from zero). Use it as a context manager, or call
    ``close`` to free both cursors' caches.
    """

    generator: Cursor
    mentor: Cursor
    verifier: Verifier
    config: CollabConfig
    policy: ProbePolicy | None = None
    counted: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.policy = get_probe_policy(self.policy or self.config.probe_policy)
        if self.config.grammar is not None and not hasattr(self.generator, "grammar_prefix_length"):
            raise ConfigError(
                "a grammar needs a generator whose cursor follows it (grammar_prefix_length): run the generator in "
                "process (llama.cpp or transformers)"
            )
        if self.policy.needs_confidence and not _takes_confidence(self.generator):
            raise ConfigError(
                f"the {self.policy.name!r} probe policy reads the generator's confidence, but its cursor's "
                "next_word takes no with_confidence; give it one, or use probe_policy='random'"
            )

    def close(self) -> None:
        """Close both cursors (the mentor's even if closing the generator's fails)."""
        try:
            self.generator.close()
        finally:
            self.mentor.close()

    def __enter__(self) -> Team:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def open_team(
    prompt: Prompt,
    generator: Backend,
    mentor: Backend,
    *,
    verifier: str | Verifier | None = None,
    config: CollabConfig | None = None,
    policy: ProbePolicy | None = None,
) -> Team:
    """Open a cursor on each model for ``prompt`` and join them with the verifier and the config.

    ``verifier`` is a name (resolved for this generator) or an object; ``policy`` replaces the one
    ``config.probe_policy`` names. When ``config.reads_ahead`` the mentor starts reading the prompt right
    away, in the background (``engine.read_ahead``), unless no word of the run can be probed. If anything
    fails after the generator's cursor opened, it is closed.
    """
    config = config or CollabConfig()
    policy = get_probe_policy(policy or config.probe_policy)
    judge = get_verifier(verifier, generator=generator)
    generator_cursor = _open(generator, "generator", prompt, config)
    try:
        mentor_cursor: Cursor = _open(mentor, "mentor", prompt, config)
        if config.reads_ahead and not never_probes(config, policy) and _may_read_prompt(mentor_cursor, config):
            mentor_cursor = read_ahead(mentor_cursor)
    except MentorCollabError as error:
        if config.on_mentor_error == "raise":
            generator_cursor.close()
            raise
        mentor_cursor = UnopenedCursor(error)  # e.g. a prompt too long for the mentor's context
    except BaseException:
        generator_cursor.close()
        raise
    try:
        return Team(generator=generator_cursor, mentor=mentor_cursor, verifier=judge, config=config, policy=policy)
    except BaseException:
        generator_cursor.close()
        mentor_cursor.close()
        raise


def never_probes(config: CollabConfig, policy: ProbePolicy) -> bool:
    """Whether no word of a run can be probed: no first-word probe, no scheduled probe, and a policy that reads
    no confidence (the models alone, as the evaluation and the bench run them: ``probe_rate=0``, random).

    Such a run never asks its mentor anything, so reading the prompt ahead for it would only take the cores
    from the generator and count mentor reading that no probe used.
    """
    return (
        not config.probe_first_word
        and not policy.needs_confidence
        and policy.words_until_probe(config, 0) == NO_MORE_PROBES
    )


def _may_read_prompt(mentor: Cursor, config: CollabConfig) -> bool:
    """Whether ``max_mentor_tokens_read`` leaves the mentor room to read the prompt: where it does not, no probe
    will be made (``steps._reading_past_budget``), so reading ahead would only spend the budget."""
    budget = config.max_mentor_tokens_read
    return budget is None or not isinstance(mentor, ForeseesReading) or mentor.tokens_to_read("") <= budget


def _open(backend: Backend, role: str, prompt: Prompt, config: CollabConfig) -> Cursor:
    """The backend's cursor for this run, under the run's grammar where it can decode under one.

    A mentor that cannot (a remote one) writes freely: the engine keeps its words to the grammar with the
    generator's cursor. The generator must follow the grammar itself.
    """
    if config.grammar is not None and takes_grammar(backend):
        return backend.open(prompt, config.prompt_style, config.sampling, grammar=config.grammar)
    if config.grammar is not None and role == "generator":
        raise ConfigError(
            f"the generator {backend.model_name!r} cannot decode under a grammar (its open() takes none); run it in "
            "process (llama.cpp or transformers), or drop the grammar, structured output or forced tool call"
        )
    return backend.open(prompt, config.prompt_style, config.sampling)


class UnopenedCursor:
    """The mentor's place when its cursor could not be opened and ``on_mentor_error`` is ``fallback``.

    Every call raises the error that opening met, so the first probe records it as a mentor failure
    and the generator goes on alone, exactly as when the mentor fails mid-run.
    """

    tokens_read = 0

    def __init__(self, error: MentorCollabError) -> None:
        self.error = error

    def _fail(self, *args: object, **options: object) -> NoReturn:
        raise self.error

    next_word = generate = label_logprobs = score_continuation = hidden_state = _fail

    def close(self) -> None:
        pass


def _takes_confidence(cursor: Cursor) -> bool:
    parameters = inspect.signature(cursor.next_word).parameters.values()
    return any(p.name == "with_confidence" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
