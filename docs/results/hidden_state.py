"""Does the generator's hidden state know when its answer is wrong, where its probabilities do not?

``confidence.md`` measured that the generator's probabilities at the answer slot rank its wrong answers
about as well as a coin (AUC 0.38 to 0.53). Probes of a model's hidden state often know more than its
output distribution says, so this trains a linear probe (logistic regression) on the generator's last
hidden state at the answer slot to predict that its answer is wrong, on multiple-choice questions no
evaluation samples, and measures its AUC on two held-out tuning sets beside the ``top_share`` doubt:

- trained on ARC-Easy validation (570), OpenBookQA validation (500) and CommonsenseQA validation from
  position 500 on (721);
- tested on ARC-Challenge validation (299) and CommonsenseQA validation 100 to 399 (300, the calibration
  slice).

The evaluation samples (ARC-Challenge test 0 to 199, CommonsenseQA validation 0 to 99 and 400 to 499)
are read by neither. The generator runs on transformers (float32, the packaged SmolLM2 converted from
its GGUF), prompted as ``mentorcollab eval`` prompts it; its answer is its top token at the slot.

    python docs/results/hidden_state.py collect docs/results/hidden_state   # runs the generator
    python docs/results/hidden_state.py report > docs/results/hidden_state.md

``collect`` writes ``answers.jsonl`` (each question's id, gold, answer and ``top_share``) and
``states.safetensors`` (the hidden states, float16, in the same order); ``report`` reads only those.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent
auc = runpy.run_path(str(RESULTS / "confidence.py"))["auc"]  # the AUC confidence.md reports, ties counting half
# (benchmark, split, offset, limit): what the probe learns from, and what it is tested on.
TRAIN = (("arc_easy", "validation", 0, None), ("openbookqa", "validation", 0, None), ("csqa", "validation", 500, None))
TEST = (("arc_challenge", "validation", 0, None), ("csqa", "validation", 100, 300))
PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)  # L2 strengths tried by cross-validation on the training set
FOLDS = 5


def collect(folder: Path) -> None:
    """Run the generator over every training and test question; write its answers and hidden states."""
    from safetensors.torch import save_file

    from mentorcollab_langchain.backends import TransformersBackend
    from mentorcollab_langchain.backends.local import confidence_of
    from mentorcollab_langchain.evals.data import load_questions
    from mentorcollab_langchain.evals.extract import extract_choice
    from mentorcollab_langchain.evals.prompts import build_prompt
    from mentorcollab_langchain.models.registry import DEFAULT_GENERATOR

    generator = TransformersBackend(DEFAULT_GENERATOR, device="cpu", dtype="float32")
    network, tokenizer = generator.loaded.network, generator.loaded.tokenizer
    folder.mkdir(parents=True, exist_ok=True)
    records, states = [], []
    slices = [("train", entry) for entry in TRAIN] + [("test", entry) for entry in TEST]
    for role, (benchmark, split, offset, limit) in slices:
        for question in load_questions(benchmark, split, limit, offset=offset):
            built = build_prompt(question, "fewshot")
            ids = torch.tensor([generator.prompt_ids(built.prompt, built.style)])
            with torch.inference_mode():
                output = network(input_ids=ids, output_hidden_states=True, logits_to_keep=1)
            logits = output.logits[0, -1]
            answer = extract_choice(tokenizer.decode([int(logits.argmax())]))
            records.append({"role": role, "benchmark": benchmark, "split": split, "question_id": question.id,
                            "gold": question.gold, "answer": answer,
                            "top_share": confidence_of(logits.numpy()).top_share})
            states.append(output.hidden_states[-1][0, -1].to(torch.float16))
            if len(records) % 100 == 0:
                print(f"{len(records)} questions read ({benchmark} {split})", file=sys.stderr, flush=True)
    with (folder / "answers.jsonl").open("w", encoding="utf-8") as file:
        file.writelines(json.dumps(record) + "\n" for record in records)
    save_file({"states": torch.stack(states)}, str(folder / "states.safetensors"))


def _read(folder: Path) -> tuple[list[dict], torch.Tensor]:
    from safetensors.torch import load_file

    records = [json.loads(line) for line in (folder / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    return records, load_file(str(folder / "states.safetensors"))["states"].float()


def fit(features: torch.Tensor, labels: torch.Tensor, penalty: float) -> torch.Tensor:
    """Logistic regression weights (bias last) under an L2 penalty on the weights, by L-BFGS."""
    inputs = _with_bias(features)
    weights = torch.zeros(inputs.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(inputs @ weights, labels.float())
        value = value + penalty * weights[:-1].square().sum() / len(features)
        value.backward()
        return value

    optimizer.step(loss)
    return weights.detach()


def score(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return _with_bias(features) @ weights


def _with_bias(features: torch.Tensor) -> torch.Tensor:
    return torch.cat([features, torch.ones(len(features), 1)], dim=1)


def report(folder: Path) -> None:
    records, states = _read(folder)
    in_train = torch.tensor([record["role"] == "train" for record in records])
    wrong = torch.tensor([record["answer"] != record["gold"] for record in records])
    mean, spread = states[in_train].mean(0), states[in_train].std(0) + 1e-6
    features = (states - mean) / spread  # standardised on the training set alone
    train_features, train_wrong = features[in_train], wrong[in_train]
    generator = torch.Generator().manual_seed(0)
    fold = torch.randperm(len(train_features), generator=generator) % FOLDS
    validated = {}
    for penalty in PENALTIES:
        scores = torch.empty(len(train_features))
        for k in range(FOLDS):
            weights = fit(train_features[fold != k], train_wrong[fold != k], penalty)
            scores[fold == k] = score(train_features[fold == k], weights)
        validated[penalty] = auc(scores.tolist(), train_wrong.tolist())
    penalty = max(validated, key=validated.get)
    weights = fit(train_features, train_wrong, penalty)
    print("# Does the generator's hidden state know when its answer is wrong?\n")
    print("Made by `docs/results/hidden_state.py` (its docstring says how); the evaluation samples are not read.\n")
    print(f"Linear probe on the last hidden state at the answer slot, trained on {int(in_train.sum())} questions "
          f"(L2 penalty {penalty:g}, chosen by {FOLDS}-fold cross-validation there: AUC {validated[penalty]:.2f}). "
          "AUC for the generator being wrong; 0.5 is a coin.\n")
    print("| held-out questions | n | generator wrong | AUC, top_share doubt | AUC, hidden-state probe |")
    print("|---|---|---|---|---|")
    for benchmark, split, offset, _ in TEST:
        chosen = torch.tensor([record["role"] == "test" and record["benchmark"] == benchmark for record in records])
        doubt = [-record["top_share"] for record, taken in zip(records, chosen.tolist(), strict=True) if taken]
        probe = score(features[chosen], weights).tolist()
        labels = wrong[chosen].tolist()
        last = offset + len(labels) - 1
        print(f"| {benchmark} {split} {offset}–{last} | {len(labels)} | {sum(labels)} | "
              f"{auc(doubt, labels):.2f} | {auc(probe, labels):.2f} |")


if __name__ == "__main__":
    {"collect": lambda: collect(Path(sys.argv[2])), "report": lambda: report(RESULTS / "hidden_state")}[sys.argv[1]]()
