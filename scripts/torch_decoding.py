"""Does a static KV cache, or compiled decoding, make the torch path decode faster here?

The transformers backend decodes eagerly over a ``DynamicCache``, one forward pass per token. On a GPU
most of a small model's step is Python and kernel-launch overhead, which a static cache plus
``torch.compile`` (CUDA graphs, ``mode="reduce-overhead"``) is known to remove; on a CPU the compiled
kernels compete with oneDNN's. This measures the three ways on the machine at hand, greedy from the same
prompt, and prints tokens/s, the ratio to what the backend does, the compile time, and whether the
tokens stayed the same:

    python scripts/torch_decoding.py [--model smollm2-135m-instruct] [--device auto] [--dtype auto]
                                     [--tokens 64] [--threads 1] [--no-compile]

``scripts/gpu-check.sh`` runs it on CUDA; the CPU figures are in the README's speed section.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

PROMPT_TOKENS = 300


@dataclass(frozen=True)
class Decoding:
    """One way of decoding, measured: its tokens/s after the prompt, its greedy tokens, its warm-up seconds."""

    name: str
    tokens_per_second: float
    tokens: list[int]
    warmup_seconds: float


def decode(
    network, make_cache: Callable[[], object], step: Callable, prompt: torch.Tensor, tokens: int
) -> tuple[float, list[int]]:
    """Greedy ``tokens`` after ``prompt`` (read in one eager pass): tokens/s of the steps, and the tokens."""
    cache = make_cache()
    written = []
    with torch.inference_mode():
        logits = network(input_ids=prompt, cache=cache, use_cache=True, logits_to_keep=1).logits
        token = logits[:, -1].argmax(-1, keepdim=True)
        _synchronize(prompt.device)
        began = time.perf_counter()
        for _ in range(tokens):
            logits = step(input_ids=token, cache=cache, use_cache=True).logits
            token = logits[:, -1].argmax(-1, keepdim=True)
            written.append(int(token))  # reading the token back is part of every real step
        _synchronize(prompt.device)
    return tokens / (time.perf_counter() - began), written


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: str, device: str, dtype: str, tokens: int, compile_step: bool) -> list[Decoding]:
    """Each way of decoding ``model``: eager over a dynamic cache (the backend's), eager over a static one,
    and (``compile_step``) compiled over a static one. Each runs twice; the second run is timed."""
    from transformers import DynamicCache, StaticCache

    from mentorcollab_langchain.backends.transformers import load_model

    loaded = load_model(model, device, dtype)
    network, config = loaded.network, loaded.network.config
    prompt = torch.tensor([list(range(100, 100 + PROMPT_TOKENS))], device=loaded.device)
    cache_tokens = PROMPT_TOKENS + tokens + 1

    def static() -> object:
        return StaticCache(config=config, max_cache_len=cache_tokens)

    ways: list[tuple[str, Callable[[], object], Callable]] = [
        ("eager, dynamic cache (the backend's)", lambda: DynamicCache(config=config), network.forward),
        ("eager, static cache", static, network.forward),
    ]
    if compile_step:
        mode = "reduce-overhead" if loaded.device.type == "cuda" else "default"
        ways.append((f"compiled ({mode}), static cache", static, torch.compile(network.forward, mode=mode)))
    found = []
    for name, make_cache, step in ways:
        began = time.perf_counter()
        decode(network, make_cache, step, prompt, tokens)  # warm-up: compiling, allocators, caches
        warmup = time.perf_counter() - began
        rate, written = decode(network, make_cache, step, prompt, tokens)
        found.append(Decoding(name, rate, written, warmup))
    return found


def table(found: list[Decoding]) -> str:
    """The measurements as a table, each against the first (what the backend does)."""
    base = found[0]
    lines = [f"{'decoding':<40} {'tok/s':>8} {'vs backend':>11} {'warm-up s':>10}  same tokens"]
    for way in found:
        same = sum(a == b for a, b in zip(way.tokens, base.tokens, strict=True))
        ratio = way.tokens_per_second / base.tokens_per_second
        lines.append(f"{way.name:<40} {way.tokens_per_second:8.1f} {ratio:10.2f}x {way.warmup_seconds:10.1f}  "
                     f"{same} of {len(base.tokens)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave out the compiled way (it compiles for a minute)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    found = measure(args.model, args.device, args.dtype, args.tokens, not args.no_compile)
    print(f"{args.model}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.tokens} tokens after a {PROMPT_TOKENS}-token prompt")
    print(table(found))


if __name__ == "__main__":
    main()
