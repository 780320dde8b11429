"""The paper's learned verifier: a small MLP over the generator's hidden state at the verification prompt.

Self-consultation reads only two label probabilities from the generator's last layer, and a 135M
generator's labels say more about the letter than about the text (docs/results). The hidden state at
the very same position holds everything the generator read, the question, both segments and the
question asked about them, so a small classifier trained on divergences with known outcomes can read
what the label probabilities lose. Beside the hidden state it takes the generator's confidence at its
diverging word and the label margin of the paper's one-order question (free: the same forward pass
computes it).

A trained verifier is two files side by side: ``NAME.safetensors`` (the weights and the feature
standardisation, tensors only, so loading never unpickles anything) and ``NAME.json`` (the card: which
generator it belongs to, by name and sha256, the features, the threshold, the training data and command,
and the validation figures). Loading refuses a generator whose identity differs from the card's,
because hidden states of other weights mean nothing to the classifier.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mentorcollab_langchain.backends.base import Backend, Confidence
from mentorcollab_langchain.errors import ConfigError, UnknownModelError, VerifierMismatchError
from mentorcollab_langchain.models.identity import weights_sha256
from mentorcollab_langchain.verifiers.base import Verdict, VerifyRequest
from mentorcollab_langchain.verifiers.self_consult import SELF_CONSULT_QUESTION

CARD_FORMAT = "mentorcollab-mlp-verifier/1"
TRAINED_DIR = Path(__file__).parent / "trained"
"""The verifiers shipped in the package, one ``<generator>.safetensors`` + ``.json`` per generator."""

FEATURE_GROUPS = ("hidden", "confidence", "label_margin")
"""What a verifier may read, in this order:

- ``hidden``: the generator's last-layer hidden state at the end of the verification prompt;
- ``confidence``: the generator's ``top_probability``, ``top_share`` and ``entropy`` at the first token
  of its diverging word (where a probe policy read them, else read again at the divergence);
- ``label_margin``: log P("B") - log P("A") at the same position, the paper's self-consultation score
  with the mentor's segment as option (B).
"""


def verification_prompt(request: VerifyRequest) -> str:
    """The text the generator reads to judge: its context, then the paper's question with its own segment
    as option (A) and the mentor's as option (B)."""
    return request.text + SELF_CONSULT_QUESTION.format(first=request.generator_segment, second=request.mentor_segment)


def feature_names(groups: Sequence[str], hidden_size: int) -> list[str]:
    """The name of every input of a verifier reading ``groups``, in the order of its input vector."""
    names: list[str] = []
    for group in groups:
        if group == "hidden":
            names += [f"hidden_{index}" for index in range(hidden_size)]
        elif group == "confidence":
            names += ["top_probability", "top_share", "entropy"]
        elif group == "label_margin":
            names.append("label_margin")
        else:
            raise ConfigError(f"unknown verifier feature group {group!r}; choose from {', '.join(FEATURE_GROUPS)}")
    return names


def divergence_features(request: VerifyRequest, groups: Sequence[str]) -> list[float]:
    """The input vector for ``groups`` at one divergence, read from the generator's cursor.

    The hidden state and the label margin come from one forward pass over the verification prompt (the
    cursor keeps the logits of the position it last computed), so both are read before the confidence,
    which may move the cursor back to the divergence.
    """
    prompt = verification_prompt(request)
    values: dict[str, list[float]] = {}
    for group in sorted(groups, key=lambda name: name == "confidence"):
        if group == "hidden":
            values[group] = request.generator.hidden_state(prompt)
        elif group == "label_margin":
            logprob_a, logprob_b = request.generator.label_logprobs(prompt, ["A", "B"])
            values[group] = [logprob_b - logprob_a]
        elif group == "confidence":
            confidence = request.generator_confidence or _confidence_at(request)
            values[group] = [confidence.top_probability, confidence.top_share, confidence.entropy]
        else:
            raise ConfigError(f"unknown verifier feature group {group!r}; choose from {', '.join(FEATURE_GROUPS)}")
    return [value for group in groups for value in values[group]]


def _confidence_at(request: VerifyRequest) -> Confidence:
    """The generator's confidence at the divergence, for policies that did not read it (``random``)."""
    confidence = request.generator.next_word(request.text, 1, with_confidence=True).confidence
    if confidence is None:
        raise ConfigError("the generator's cursor gave no confidence; the mlp verifier needs it")
    return confidence


def build_network(inputs: int, hidden_units: int, dropout: float = 0.0) -> torch.nn.Sequential:
    """One hidden layer: enough to combine a few directions of the hidden state with the confidence
    figures, small enough (about 19k weights for a 576-wide generator) to train in seconds on CPU."""
    return torch.nn.Sequential(
        torch.nn.Linear(inputs, hidden_units),
        torch.nn.GELU(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(hidden_units, 1),
    )


# -- the verifier ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifierFiles:
    """Where a trained verifier lives: the weights and the card next to them."""

    weights: Path
    card: Path

    @classmethod
    def at(cls, path: str | Path) -> VerifierFiles:
        """``path`` names the weights, the card, or their common stem."""
        stem = Path(path).expanduser()
        if stem.suffix in (".safetensors", ".json"):
            stem = stem.with_suffix("")
        return cls(stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json"))


class MLPVerifier:
    """Adopt the mentor's segment when the MLP's P(adopt) is above the threshold on the card."""

    def __init__(self, network: torch.nn.Sequential, mean: torch.Tensor, std: torch.Tensor, card: Mapping[str, Any],
                 name: str = "mlp") -> None:
        self.network = network.eval()
        self.mean = mean
        self.std = std
        self.card = dict(card)
        self.features: tuple[str, ...] = tuple(card["features"])
        self.threshold = float(card["threshold"])
        self.hidden_size = int(card["hidden_size"])
        self.name = name

    def probability(self, values: Sequence[float]) -> tuple[float, float]:
        """(P(adopt the mentor), raw logit) for one input vector."""
        if len(values) != self.mean.numel():
            raise VerifierMismatchError(
                f"the verifier expects {self.mean.numel()} inputs ({', '.join(self.features)} with hidden size "
                f"{self.hidden_size}); the generator gave {len(values)}: it is not the generator this verifier was "
                f"trained for ({self.card['generator']['name']})"
            )
        inputs = (torch.tensor(values, dtype=torch.float32) - self.mean) / self.std
        with torch.inference_mode():
            logit = float(self.network(inputs.unsqueeze(0))[0, 0])
        return 1.0 / (1.0 + math.exp(-logit)), logit

    def decide(self, request: VerifyRequest) -> Verdict:
        values = divergence_features(request, self.features)
        probability, logit = self.probability(values)
        evidence = {"logit": logit, "threshold": self.threshold}
        evidence |= {f"feature:{group}": 1.0 for group in self.features}
        evidence |= _named_small_features(self.features, values, self.hidden_size)
        return Verdict("mentor" if probability > self.threshold else "generator", probability, evidence)

    # -- files ---------------------------------------------------------------------------------

    def save(self, path: str | Path) -> VerifierFiles:
        """Write the weights as safetensors and the card as JSON (nothing that needs unpickling)."""
        files = VerifierFiles.at(path)
        files.weights.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"network.{key}": value.detach().contiguous().float() for key, value in self.network.state_dict().items()
        }
        tensors |= {"input_mean": self.mean.contiguous(), "input_std": self.std.contiguous()}
        save_file(tensors, str(files.weights), metadata={"format": CARD_FORMAT})
        files.card.write_text(json.dumps(self.card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return files

    @classmethod
    def load(cls, path: str | Path, generator: Backend | str, name: str = "mlp") -> MLPVerifier:
        """Load a trained verifier for ``generator`` (a backend or a model name), refusing a mismatch.

        Raises ``VerifierMismatchError`` when the generator's name-independent identity (sha256 of its
        weights) differs from the card's, and ``ConfigError`` when the files are missing or malformed.
        """
        files = VerifierFiles.at(path)
        for file in (files.weights, files.card):
            if not file.is_file():
                raise ConfigError(
                    f"no trained verifier at {file}: a verifier is {files.weights.name} plus {files.card.name}"
                )
        card = json.loads(files.card.read_text(encoding="utf-8"))
        if card.get("format") != CARD_FORMAT:
            raise ConfigError(f"{files.card} is not a {CARD_FORMAT} card (format: {card.get('format')!r})")
        model = generator if isinstance(generator, str) else generator.model_name
        expected = card["generator"]["sha256"]
        try:
            found = weights_sha256(model)
        except UnknownModelError as error:
            raise VerifierMismatchError(f"cannot check the generator against a verifier: {error}") from None
        if found != expected:
            raise VerifierMismatchError(
                f"the verifier {files.weights} was trained for the generator {card['generator']['name']!r} "
                f"(sha256 {expected[:16]}…); the generator here is {model!r} (sha256 {found[:16]}…). Train one for "
                f"it with: mentorcollab train-verifier --generator {model}"
            )
        tensors = load_file(str(files.weights))
        mean, std = tensors.pop("input_mean"), tensors.pop("input_std")
        network = build_network(mean.numel(), int(card["hidden_units"]))
        network.load_state_dict({key.removeprefix("network."): value for key, value in tensors.items()})
        return cls(network, mean, std, card, name=name)


def _named_small_features(groups: Sequence[str], values: Sequence[float], hidden_size: int) -> dict[str, float]:
    """The inputs worth naming in the evidence: everything but the hidden state's coordinates."""
    names = feature_names(groups, hidden_size)
    return {name: float(value) for name, value in zip(names, values, strict=True) if not name.startswith("hidden_")}


def shipped_verifier_path(generator: str) -> Path:
    """The shipped verifier's files for a packaged generator."""
    return TRAINED_DIR / f"{generator}.safetensors"


def load_named(spec: str, generator: Backend | str | None) -> MLPVerifier:
    """``mlp`` (the verifier shipped for the generator) or ``mlp:PATH`` (one trained by the user).

    Without a generator (a name being validated), ``mlp`` means the default generator's verifier; the
    engine and the chat model pass the generator, so the card's sha256 is always checked before a run.
    """
    from mentorcollab_langchain.models.registry import DEFAULT_GENERATOR

    if isinstance(generator, str):
        model = generator
    else:
        model = generator.model_name if generator is not None else DEFAULT_GENERATOR
    if spec.startswith("mlp:"):
        return MLPVerifier.load(spec.removeprefix("mlp:"), generator if generator is not None else model, name=spec)
    path = shipped_verifier_path(model)
    if not path.is_file():
        shipped = sorted(file.stem for file in TRAINED_DIR.glob("*.safetensors"))
        raise ConfigError(
            f"no mlp verifier ships for the generator {model!r} (shipped: {', '.join(shipped) or 'none'}); train "
            f"one with `mentorcollab train-verifier --generator {model}` and pass it as mlp:PATH"
        )
    return MLPVerifier.load(path, generator if generator is not None else model, name="mlp")
