"""The method's steps, the only implementation of MentorCollab in this package.

Each step takes the request's ``CollabState`` (plain data, changed in place) and the ``Team`` (the two
cursors, the verifier and the config), and yields events as it goes. ``next_step`` reads the state and
names the step to run next, so the run loop below, the LangGraph graph and anyone stepping by hand all
follow the same route:

    prepare -> continue -> probe -+-> (words agree) ----------------------------> continue ...
                                  +-> (diverge) -> lookahead -> verify -> commit -> continue ...
    any step that ends the answer -> finish

``continue`` runs the generator alone for the whole gap to the next probe (drawn once, from the seed),
so a graph built on these steps takes one superstep per probe, never one per word. A content-aware
probe policy (``engine.policies``) may end the gap early at a word it wants probed; that word is held
in the state and the probe takes it from there instead of asking the generator again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

from mentorcollab_langchain.backends.base import Cursor, Piece
from mentorcollab_langchain.engine.config import CollabConfig
from mentorcollab_langchain.engine.events import Decided, Event, Finished, MentorFailed, Probed, TextCommitted
from mentorcollab_langchain.engine.policies import NO_MORE_PROBES
from mentorcollab_langchain.engine.state import CollabState, Decision, Divergence, Source, Span
from mentorcollab_langchain.engine.team import Team
from mentorcollab_langchain.errors import ContextTooLongError, MentorCollabError
from mentorcollab_langchain.verifiers.base import Verdict, VerifyRequest

StepName = Literal["prepare", "continue", "probe", "lookahead", "verify", "finish"]


def next_step(state: CollabState) -> StepName:
    """The step to run next, read from the state alone (so a resumed run takes the same route)."""
    if state.finished:
        return "finish"
    if not state.prepared:
        return "prepare"
    if state.divergence is not None:
        return "verify" if state.divergence.mentor_segment is not None else "lookahead"
    return "probe" if state.words_until_probe == 0 or state.pending_word is not None else "continue"


# What ``next_step`` can answer right after each step, and nothing more: the edges a graph of these
# steps draws. ``probe`` may follow ``probe`` (a gap of zero words), and a ``lookahead`` whose mentor
# fails commits the generator's segment, so the run goes on without ``verify`` (never to ``probe``:
# the mentor is out of the run). ``finish`` ends the run.
NEXT_STEPS: dict[StepName, tuple[StepName, ...]] = {
    "prepare": ("continue", "probe"),
    "continue": ("probe", "finish"),
    "probe": ("continue", "probe", "lookahead", "finish"),
    "lookahead": ("verify", "continue", "finish"),
    "verify": ("continue", "probe", "finish"),
    "finish": (),
}


# -- the steps ---------------------------------------------------------------------------------


def prepare(state: CollabState, team: Team) -> Iterator[Event]:
    """Draw the first probe gap."""
    _draw_gap(state, team)
    state.prepared = True
    yield from ()


def continue_words(state: CollabState, team: Team) -> Iterator[Event]:
    """The generator writes alone, word by word, until the next probe position, a word the probe policy
    wants probed (held back for the probe), or the end."""
    while not state.finished and state.words_until_probe > 0:
        word = _generator_word(state, team, phase="continue")
        state.words_until_probe -= 1
        if _probing(state) and team.policy.probe_word(word, team.config):
            state.pending_word = word
            return
        yield from _commit(state, team.config, word, "generator")


def probe(state: CollabState, team: Team) -> Iterator[Event]:
    """Both models propose their next word; agreement commits it, divergence opens a lookahead."""
    generator_word = state.pending_word or _generator_word(state, team, phase="probe")
    state.pending_word = None
    if not generator_word.tokens and not generator_word.eos:  # the generator's context is full
        yield from _commit(state, team.config, generator_word, "generator")
        return
    try:
        with _timed(state, team, "probe"):
            state.probing_stopped = _reading_past_budget(state, team)
            if state.probing_stopped is None:
                state.stats.probes += 1
                mentor_word = team.mentor.next_word(state.text, _word_budget(state, team.config))
    except MentorCollabError as error:  # a backend's typed failure; a programming error still raises
        yield from _mentor_failed(state, team.config, error)
    if state.probing_stopped is not None:  # the mentor failed, or may not read what this probe needs
        yield from _commit(state, team.config, generator_word, "generator")
        _draw_gap(state, team)
        return
    state.stats.mentor_calls += 1
    state.stats.mentor_tokens_generated += mentor_word.cost
    # A mentor word the answer's grammar forbids (from a mentor that cannot decode under it) is nothing the
    # generator could adopt, so it opens no divergence.
    diverged = not team.config.words_match(generator_word.text, mentor_word.text) and _fits_grammar(
        team, state.text + mentor_word.text
    )
    yield Probed(state.stats.words - 1, len(state.text), generator_word.text, mentor_word.text, diverged)
    if not diverged:
        yield from _commit(state, team.config, generator_word, "generator")
        _draw_gap(state, team)
        return
    state.stats.divergences += 1
    state.divergence = Divergence(
        position=len(state.text),
        word_index=state.stats.words - 1,
        generator_word=generator_word,
        mentor_word=mentor_word,
    )


def lookahead(state: CollabState, team: Team) -> Iterator[Event]:
    """Each model extends its own first word (reused, not recomputed) to a segment of ``segment_tokens``."""
    divergence = _pending(state)
    length = min(team.config.segment_tokens, _remaining_tokens(state, team.config))
    with _timed(state, team, "lookahead"):
        divergence.generator_segment, spent = _extend(
            team.generator, state.text, divergence.generator_word, length, team.config.stop
        )
    state.stats.generator_tokens_generated += spent
    state.stats.generator_calls += 1
    try:
        with _timed(state, team, "lookahead"):
            mentor_segment, spent = _extend(team.mentor, state.text, divergence.mentor_word, length, team.config.stop)
        divergence.mentor_segment = _within_grammar(team, state.text, mentor_segment, divergence.mentor_word)
    except MentorCollabError as error:  # a backend's typed failure; a programming error still raises
        yield from _mentor_failed(state, team.config, error)
        yield from commit_verdict(state, team, Verdict("generator"), verifier="mentor-failed")
        return
    state.stats.mentor_calls += 1
    state.stats.mentor_tokens_generated += spent


def score_divergence(state: CollabState, team: Team) -> Verdict:
    """Ask the verifier about the pending divergence, without committing anything."""
    divergence = _pending(state)
    assert divergence.generator_segment is not None and divergence.mentor_segment is not None
    request = VerifyRequest(
        text=state.text,
        generator_segment=divergence.generator_segment.text,
        mentor_segment=divergence.mentor_segment.text,
        generator=team.generator,
        mentor=team.mentor,
        generator_confidence=divergence.generator_word.confidence,
    )
    with _timed(state, team, "verify"):
        verdict = team.verifier.decide(request)
    state.stats.verifier_calls += 1
    return verdict


def commit_verdict(state: CollabState, team: Team, verdict: Verdict, verifier: str) -> Iterator[Event]:
    """Record the decision, commit the chosen segment and draw the gap to the next probe."""
    divergence = _pending(state)
    generator_segment = divergence.generator_segment or divergence.generator_word
    mentor_segment = divergence.mentor_segment or divergence.mentor_word
    decision = Decision(
        position=divergence.position,
        word_index=divergence.word_index,
        generator_word=divergence.generator_word.text,
        mentor_word=divergence.mentor_word.text,
        generator_segment=generator_segment.text,
        mentor_segment=mentor_segment.text,
        score=verdict.score,
        evidence=dict(verdict.evidence),
        choice=verdict.choice,
        verifier=verifier,
    )
    state.decisions.append(decision)
    state.divergence = None
    if verdict.choice == "mentor":
        state.stats.adoptions += 1
    yield Decided(decision)
    chosen_segment = mentor_segment if verdict.choice == "mentor" else generator_segment
    yield from _commit(state, team.config, chosen_segment, verdict.choice)
    _draw_gap(state, team)


def verify(state: CollabState, team: Team) -> Iterator[Event]:
    """The verifier decides and its choice is committed.

    A verifier that consults the mentor (``mentor-margin``) fails when the mentor does: that is recorded
    as a mentor failure and the generator keeps its segment, as when the mentor fails in a lookahead.
    """
    try:
        verdict = score_divergence(state, team)
    except MentorCollabError as error:
        yield from _mentor_failed(state, team.config, error)
        yield from commit_verdict(state, team, Verdict("generator"), verifier="mentor-failed")
        return
    yield from commit_verdict(state, team, verdict, team.verifier.name)


def finish(state: CollabState, team: Team) -> Iterator[Event]:
    """Release the text held back for stop strings and report the end."""
    yield from _release(state, team.config)
    yield Finished(state.finish_reason or "eos")


STEPS: dict[StepName, Callable[[CollabState, Team], Iterator[Event]]] = {
    "prepare": prepare,
    "continue": continue_words,
    "probe": probe,
    "lookahead": lookahead,
    "verify": verify,
    "finish": finish,
}


def run_steps(state: CollabState, team: Team) -> Iterator[Event]:
    """The whole method: run steps in the order ``next_step`` gives until the answer is finished."""
    while True:
        step = next_step(state)
        yield from STEPS[step](state, team)
        if step == "finish":
            return


# -- committing text ---------------------------------------------------------------------------


def _commit(state: CollabState, config: CollabConfig, piece: Piece, source: Source) -> Iterator[Event]:
    """Append a piece to the answer, account for it, apply the stop rules, stream what is safe."""
    start = len(state.text)
    state.text += piece.text
    if piece.text:
        last = state.spans[-1] if state.spans else None
        if last is not None and last.source == source and last.end == start:
            last.end = len(state.text)
        else:
            state.spans.append(Span(start=start, end=len(state.text), source=source))
    if source == "mentor":
        state.stats.mentor_tokens_committed += piece.tokens
    else:
        state.stats.generator_tokens_committed += piece.tokens
    state.recent_steps = [*state.recent_steps, piece.text][-3:]

    stop_at = _first_stop(state.text, config.stop, search_from=state.emitted)
    if stop_at is not None:
        _uncount_cut_tokens(state, piece, source, kept=max(stop_at - start, 0))
        _cut(state, stop_at)
        state.finish_reason = "stop"
    elif piece.stopped:  # a segment its model cut before a stop string: the answer ends with it
        state.finish_reason = "stop"
    elif piece.eos:
        state.finish_reason = "eos"
    elif state.stats.tokens_committed >= config.max_new_tokens or not piece.tokens:
        # No tokens and no end: the budget left cannot hold the next whole character.
        state.finish_reason = "length"
    elif config.repetition_guard and _repeats(state.recent_steps):
        state.finish_reason = "repetition"
    yield from _release(state, config)


def _release(state: CollabState, config: CollabConfig) -> Iterator[TextCommitted]:
    """Stream committed text, holding back a tail that could still grow into a stop string."""
    safe = len(state.text) if state.finished else len(state.text) - _stop_prefix_length(state.text, config.stop)
    for span in state.spans:
        start, end = max(span.start, state.emitted), min(span.end, safe)
        if start < end:
            yield TextCommitted(state.text[start:end], span.source, start, end)
            state.emitted = end


def _first_stop(text: str, stops: tuple[str, ...], search_from: int) -> int | None:
    found = [index for stop in stops if stop and (index := text.find(stop, search_from)) >= 0]
    return min(found) if found else None


def _stop_prefix_length(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that is the beginning of some stop string."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest


def _cut(state: CollabState, at: int) -> None:
    state.text = state.text[:at]
    state.spans = [span for span in state.spans if span.start < at]
    if state.spans:
        state.spans[-1].end = min(state.spans[-1].end, at)


def _uncount_cut_tokens(state: CollabState, piece: Piece, source: Source, kept: int) -> None:
    """Take the tokens of the piece's text cut off at a stop string out of its source's count.

    Only text is shared between the models, so the kept tokens are estimated by the kept share of the
    piece's characters (at least one token when any text is kept). Without this, a mentor segment that
    runs past the stop string would count its whole length and inflate the mentor's share of the answer.
    """
    if not piece.text or kept >= len(piece.text):
        return
    dropped = piece.tokens - (max(1, round(piece.tokens * kept / len(piece.text))) if kept else 0)
    if source == "mentor":
        state.stats.mentor_tokens_committed -= dropped
    else:
        state.stats.generator_tokens_committed -= dropped


def _repeats(recent_steps: list[str]) -> bool:
    return len(recent_steps) == 3 and bool(recent_steps[0].strip()) and len(set(recent_steps)) == 1


# -- helpers -----------------------------------------------------------------------------------


def _draw_gap(state: CollabState, team: Team) -> None:
    """Ask the probe policy how many words the generator writes before the next scheduled probe (none
    before the first word when ``probe_first_word`` asks for it).

    Only the counter ``gaps_drawn`` needs to be checkpointed: the policy draws the k-th gap from
    ``(seed, k)``. Once the mentor is out of the run, no gap ends and no word is probed.
    """
    if state.probing_stopped is None:
        state.probing_stopped = _spent_budget(state, team.config)
    if state.probing_stopped is not None:
        state.words_until_probe = NO_MORE_PROBES
    elif state.gaps_drawn == 0 and team.config.probe_first_word:
        state.words_until_probe = 0
    else:
        state.words_until_probe = team.policy.words_until_probe(team.config, state.gaps_drawn)
    state.gaps_drawn += 1


def _probing(state: CollabState) -> bool:
    """Whether the mentor may still be probed (no failure and no spent budget has stopped it)."""
    return state.probing_stopped is None


# Each per-request budget: its setting, the count it caps, and what the reason calls it.
_BUDGETS = (
    ("max_mentor_calls", "mentor_calls", "call"),
    ("max_mentor_tokens", "mentor_tokens_generated", "token"),
    ("max_mentor_tokens_read", "mentor_tokens_read", "reading"),
)


def _spent_budget(state: CollabState, config: CollabConfig) -> str | None:
    """Why the mentor's per-request budget forbids another probe, or None while it allows one."""
    for setting, count, name in _BUDGETS:
        budget, spent = getattr(config, setting), getattr(state.stats, count)
        if budget is not None and spent >= budget:
            return f"mentor {name} budget spent ({spent} of {setting}={budget})"
    return None


def _reading_past_budget(state: CollabState, team: Team) -> str | None:
    """Why the mentor may not read what a probe at ``state.text`` needs, or None while what is left of
    ``max_mentor_tokens_read`` pays for it (a mentor cursor that cannot foresee its reading is only stopped
    once the budget is spent, by ``_spent_budget``)."""
    budget = team.config.max_mentor_tokens_read
    # A mentor reading ahead answers once its reading has ended (and raises what the reading failed with).
    tokens_to_read = getattr(team.mentor, "tokens_to_read", None) if budget is not None else None
    if tokens_to_read is None:
        return None
    needed = tokens_to_read(state.text)
    _count_reading(state, team)  # what the read-ahead read is spent already
    left = budget - state.stats.mentor_tokens_read
    if needed <= left:
        return None
    return f"mentor reading budget too small for the next probe ({needed} tokens to read, {left} of " \
        f"max_mentor_tokens_read={budget} left)"


def _remaining_tokens(state: CollabState, config: CollabConfig) -> int:
    return max(config.max_new_tokens - state.stats.tokens_committed, 0)


def _word_budget(state: CollabState, config: CollabConfig) -> int:
    return min(config.max_word_tokens, _remaining_tokens(state, config))


def _generator_word(state: CollabState, team: Team, phase: str) -> Piece:
    """The generator's next word. A full context ends the answer (an empty word commits as ``length``,
    keeping the text so far); any other typed failure ends the run with ``error`` and is raised."""
    try:
        with _timed(state, team, phase):
            if team.policy.needs_confidence and _probing(state):
                piece = team.generator.next_word(state.text, _word_budget(state, team.config), with_confidence=True)
            else:  # asked as before confidences existed, so cursors written without them still work
                piece = team.generator.next_word(state.text, _word_budget(state, team.config))
    except ContextTooLongError as error:
        state.errors.append(f"{type(error).__name__}: {error}")
        return Piece("", 0)
    except MentorCollabError as error:
        state.errors.append(f"{type(error).__name__}: {error}")
        state.finish_reason = "error"
        raise
    state.stats.words += 1
    state.stats.generator_calls += 1
    state.stats.generator_tokens_generated += piece.cost
    return piece


def _extend(cursor: Cursor, text: str, word: Piece, length: int, stop: Sequence[str]) -> tuple[Piece, int]:
    """Continue a model's own first word to ``length`` tokens (the word itself is not recomputed).

    The segment ends at a stop string, as the answer would: a verifier compares what each model would
    add to the answer, not text past its end (on a one-letter answer, the next few-shot question).
    Returns the segment and how many tokens the model generated for the continuation.
    """
    if word.eos or word.tokens >= length:
        return word, 0
    try:
        more = cursor.generate(text + word.text, length - word.tokens, stop=stop)
    except ContextTooLongError:  # the model's context is full: its segment ends with its word
        return word, 0
    segment = Piece(word.text + more.text, word.tokens + more.tokens, eos=more.eos, stopped=more.stopped)
    return segment, more.cost


def _fits_grammar(team: Team, text: str) -> bool:
    """Whether the grammar of the run (if any) accepts all of the answer ``text``."""
    return team.config.grammar is None or team.generator.grammar_prefix_length(text) == len(text)


def _within_grammar(team: Team, text: str, segment: Piece, word: Piece) -> Piece:
    """The mentor's ``segment`` cut to what the grammar accepts after ``text``, never shorter than its
    ``word`` (which the probe checked). A mentor decoding under the grammar is never cut; a remote one may
    write past the answer's format, and that text must not be adopted. The kept tokens are estimated by the
    kept share of characters, as for a cut at a stop string."""
    if team.config.grammar is None:
        return segment
    accepted = team.generator.grammar_prefix_length(text + segment.text)
    if accepted == len(text + segment.text):
        return segment
    kept = max(accepted - len(text), len(word.text))
    tokens = max(word.tokens, round(segment.tokens * kept / len(segment.text)))
    return Piece(segment.text[:kept], tokens, generated=segment.cost, confidence=segment.confidence)


def _pending(state: CollabState) -> Divergence:
    if state.divergence is None:
        raise RuntimeError("no divergence is pending: lookahead and verify follow a diverging probe")
    return state.divergence


def _mentor_failed(state: CollabState, config: CollabConfig, error: Exception) -> Iterator[Event]:
    message = f"{type(error).__name__}: {error}"
    state.stats.mentor_errors += 1
    state.errors.append(message)
    yield MentorFailed(message)
    if config.on_mentor_error == "raise":
        state.finish_reason = "error"
        raise error
    state.probing_stopped = f"mentor failed: {message}"


@contextmanager
def _timed(state: CollabState, team: Team, phase: str) -> Iterator[None]:
    """Account the wall time of a phase, and the tokens each model read or found cached during it."""
    began = time.perf_counter()
    try:
        yield
    finally:
        state.stats.seconds[phase] = state.stats.seconds.get(phase, 0.0) + time.perf_counter() - began
        _count_reading(state, team)


def _count_reading(state: CollabState, team: Team) -> None:
    """Add to the stats the tokens each model read (and found cached) since the engine last looked."""
    for role, cursor in (("generator", team.generator), ("mentor", team.mentor)):
        for count in ("tokens_read", "tokens_cached"):
            field = f"{role}_{count}"
            total = getattr(cursor, count, 0)  # a cursor that does not count it reports none
            new, team.counted[field] = total - team.counted.get(field, 0), total
            setattr(state.stats, field, getattr(state.stats, field) + new)
