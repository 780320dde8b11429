"""``mentorcollab bench``: the whole speed story in one run and one table (``mentorcollab_langchain.bench``).

In order: each model alone on llama.cpp in process, on transformers (unless ``--skip-torch``) and the
mentor behind a llama.cpp server that the command starts and stops itself (unless ``--no-remote``);
MentorCollab at the engine's defaults on llama.cpp in process (and with the served mentor); the same
requests one at a time and at once (unless ``--skip-concurrency``); the first probe's latency with and
without read-ahead on a long few-shot prompt (unless ``--skip-first-probe``). The prompts are GSM8K
questions in chat form (``--questions``). The default run takes some minutes on a 2-core CPU;
``--questions 1 --concurrency 2 --max-new-tokens 8 --skip-torch --no-remote --skip-first-probe`` is a
quick check that every part works.
"""

from __future__ import annotations

import argparse
import sys

from mentorcollab_langchain.cli.loading import progress, quiet_transformers
from mentorcollab_langchain.cli.settings import add_config_arguments, config_overrides

BENCH_DEFAULTS = {"max_new_tokens": 96}
"""GSM8K answers are longer; everything else stays at the engine's defaults, which is what is measured."""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``bench`` sub-command to the main parser's sub-commands."""
    from mentorcollab_langchain.models import DEFAULT_GENERATOR, DEFAULT_MENTOR

    parser = commands.add_parser("bench", help="measure the speed of each setup in one run, in one table")
    parser.add_argument("--generator", default=DEFAULT_GENERATOR, help="packaged model name")
    parser.add_argument("--mentor", default=DEFAULT_MENTOR, help="packaged model name")
    parser.add_argument("--threads", type=int, help="llama.cpp threads per model (default: the cores)")
    parser.add_argument("--dtype", default="auto", help="transformers dtype: auto (bfloat16), float32 or bfloat16")
    parser.add_argument("--questions", type=int, default=4, help="GSM8K questions per case (default: 4)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests run at once (default: 8)")
    parser.add_argument("--skip-torch", action="store_true", help="skip the models alone on transformers")
    parser.add_argument("--no-remote", action="store_true", help="skip the setups with a llama.cpp-served mentor")
    parser.add_argument("--skip-concurrency", action="store_true", help="skip the requests at once")
    parser.add_argument("--skip-first-probe", action="store_true", help="skip the first probe's latency")
    add_config_arguments(parser, defaults=BENCH_DEFAULTS)
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    """Load the models, measure every part asked for, print the table."""
    import tempfile
    from contextlib import ExitStack
    from pathlib import Path

    from mentorcollab_langchain import bench
    from mentorcollab_langchain.backends import LlamaCppBackend, TransformersBackend
    from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
    from mentorcollab_langchain.engine import CollabConfig
    from mentorcollab_langchain.evals.data import load_questions
    from mentorcollab_langchain.evals.prompts import build_prompt
    from mentorcollab_langchain.models import PACKAGED_MODELS
    from mentorcollab_langchain.serving import llama_server

    config = CollabConfig(**(BENCH_DEFAULTS | config_overrides(args)))
    questions = load_questions("gsm8k", limit=max(args.questions, args.concurrency))
    prompts = [build_prompt(question, "chat") for question in questions]
    quiet_transformers()
    with ExitStack() as stack, progress("benchmark", sys.stderr) as report:
        report("measuring the memory bandwidth")
        bandwidth = bench.measure_bandwidth()
        machine = f"{bench.describe_machine(bandwidth)}\nMentorCollab settings: {bench.describe_settings(config)}"
        llama = {name: LlamaCppBackend(name, n_threads=args.threads, report=report)
                 for name in (args.generator, args.mentor)}

        def alone(label: str, backend: object, weights: int | None) -> bench.AloneRow:
            report(f"measuring {label}")
            bench.measure_alone(label, backend, prompts[:1], config.model_copy(update={"max_new_tokens": 4}), None)
            return bench.measure_alone(label, backend, prompts[: args.questions], config, weights)

        def collab(label: str, generator: object, mentor: object) -> bench.CollabRow:
            report(f"measuring {label}")
            return bench.measure_collab(label, generator, mentor, prompts[: args.questions], config)

        gguf_bytes = {name: PACKAGED_MODELS[name].size for name in llama}
        generator_alone = alone(f"{args.generator} alone, llama.cpp", llama[args.generator], gguf_bytes[args.generator])
        mentor_alone = alone(f"{args.mentor} alone, llama.cpp", llama[args.mentor], gguf_bytes[args.mentor])
        rows = [generator_alone, mentor_alone]
        collabs = [(collab("MentorCollab, llama.cpp", llama[args.generator], llama[args.mentor]),
                    generator_alone, mentor_alone)]
        if not args.skip_torch:
            for name in (args.generator, args.mentor):
                torch_backend = TransformersBackend(name, device="cpu", dtype=args.dtype, report=report)
                network = torch_backend.loaded.network
                weights = sum(parameter.numel() * parameter.element_size() for parameter in network.parameters())
                rows.append(alone(f"{name} alone, torch {str(network.dtype).removeprefix('torch.')}",
                                  torch_backend, weights))
        if not args.no_remote:
            report("starting a llama.cpp server for the mentor")
            log = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "llama-server.log"
            server = stack.enter_context(llama_server(args.mentor, log, threads=args.threads or 2))
            remote = OpenAICompatibleBackend(server.url, model="mentor", tokenizer=args.mentor)
            served_alone = alone(f"{args.mentor} alone, llama.cpp server", remote, gguf_bytes[args.mentor])
            rows.append(served_alone)
            collabs.append((collab("MentorCollab, served mentor", llama[args.generator], remote),
                            generator_alone, served_alone))
        concurrency = None
        if not args.skip_concurrency:
            report(f"measuring {args.concurrency} requests one at a time, then at once")
            concurrency = bench.measure_concurrency(llama[args.generator], llama[args.mentor],
                                                    prompts[: args.concurrency], config)
        first_probe = None
        if not args.skip_first_probe:
            long_prompt = bench.long_fewshot_prompt()
            tokens = len(llama[args.mentor].prompt_ids(long_prompt.prompt, long_prompt.style))
            probes = {}
            for read_ahead in (False, True):
                report(f"measuring the first probe on a {tokens}-token prompt, read_ahead={read_ahead}")
                probes[read_ahead] = bench.measure_first_probe(
                    llama[args.generator], llama[args.mentor], long_prompt,
                    config.model_copy(update={"read_ahead": read_ahead}),
                )
            first_probe = (tokens, probes[False], probes[True])
    print(bench.format_table(bench.BenchResult(machine, bandwidth, rows, collabs, concurrency, first_probe)))
    return 0
