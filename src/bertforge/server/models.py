"""A served model directory: its checkpoint loaded once and one pipeline per task it can do.

What a directory can do is decided in one place, `model.capabilities.checkpoint_tasks` (by the head
weights it holds: a randomly initialised head would answer nonsense); every model also embeds,
tokenizes and shows attention maps. Each `run_*` method takes one micro-batch of inputs (from
one or several requests) and returns one result per input: the pipeline's own answer, so the
server and `bertforge.pipeline` answer alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertforge.pipelines import pipeline_class
from bertforge.pipelines.base import Pipeline
from bertforge.pipelines.loading import LoadedCheckpoint, load_checkpoint
from bertforge.pipelines.text_classification import label_names
from bertforge.tasks.squad import doc_stride_for

# endpoint -> pipeline task; /v1/tokenize needs only the tokenizer, which every model has
ENDPOINT_TASKS = {
    "embeddings": "sentence-embedding",
    "attention": "attention",
    "fill-mask": "fill-mask",
    "next-sentence": "next-sentence",
    "classify": "text-classification",
    "ner": "token-classification",
    "qa": "question-answering",
}
ATTENTION_MAX_TOKENS = 128  # layers × heads × tokens² numbers go back to the page


@dataclass
class ServedModel:
    name: str
    checkpoint: LoadedCheckpoint
    pipelines: dict[str, Pipeline]  # endpoint -> its pipeline, all sharing the checkpoint's model

    @property
    def directory(self) -> Path:
        return self.checkpoint.path

    @property
    def tokenizer(self):
        return self.checkpoint.tokenizer

    @property
    def config(self):
        return self.checkpoint.model.config

    @property
    def architecture(self) -> str:
        return type(self.checkpoint.model).__name__

    @property
    def tasks(self) -> tuple[str, ...]:
        return ("embeddings", "tokenize", *(task for task in self.pipelines if task != "embeddings"))

    @property
    def max_length(self) -> int:
        return self.pipelines["embeddings"].max_length

    def describe(self) -> dict:
        info = {"id": self.name, "object": "model", "owned_by": "bertforge", "architecture": self.architecture,
                "capabilities": list(self.tasks), "max_length": self.max_length,
                "num_layers": self.config.num_hidden_layers, "num_heads": self.config.num_attention_heads,
                "embedding_dim": self.config.hidden_size}
        if "classify" in self.pipelines or "ner" in self.pipelines:
            info["labels"] = label_names(self.config)
        return info

    # ---- batched calls (where inference.py runs the models) ------------------------------
    def run_embeddings(self, texts: list[str]) -> list:
        """(sentence vector as a NumPy array, token count) per text: the pooling and normalisation of the
        checkpoint's sentence-transformers configuration, as the sentence-embedding pipeline does by default."""
        embed = self.pipelines["embeddings"]
        vectors = embed(texts)
        return list(zip(vectors, embed.token_counts))  # the counts of the pipeline's own tokenizing

    def run_fill_mask(self, texts: list[str], top_k: int) -> list:
        return self.pipelines["fill-mask"](texts, top_k=top_k)

    def run_next_sentence(self, pairs: list[tuple[str, str]]) -> list[dict]:
        return self.pipelines["next-sentence"](pairs)

    def run_classify(self, items: list[tuple[str, str | None]]) -> list[list[dict]]:
        # single texts and pairs cannot share one tokenizer call
        classify = self.pipelines["classify"]
        results: list = [None] * len(items)
        for has_pair in (False, True):
            rows = [i for i, (_, pair) in enumerate(items) if (pair is not None) == has_pair]
            if rows:
                answers = classify([items[i][0] for i in rows], [items[i][1] for i in rows] if has_pair else None,
                                   top_k=None)
                for i, answer in zip(rows, answers):
                    results[i] = answer
        return results

    def run_ner(self, texts: list[str]) -> list[list[dict]]:
        """Entities of each whole text: one longer than the model's length is read in windows overlapping by
        128 pieces (fewer for a short-window model), the stride of the QA windows, so that no entity is lost
        to a cut that the answer could not show."""
        ner = self.pipelines["ner"]
        return ner(texts, stride=doc_stride_for(ner.max_length))

    def run_qa(self, items: list[tuple[str, str]]) -> list[dict]:
        return self.pipelines["qa"](question=[q for q, _ in items], context=[c for _, c in items])

    # ---- single calls ---------------------------------------------------------------------
    def check_attention(self, layer: int | None, head: int | None) -> tuple[str, str] | None:
        """(field, message) for a layer or head this model does not have, else None."""
        for value, limit, what in ((layer, self.config.num_hidden_layers, "layer"),
                                   (head, self.config.num_attention_heads, "head")):
            if value is not None and not 0 <= value < limit:
                return what, f"{what} must be in 0..{limit - 1} for model {self.name!r}, got {value}"
        return None

    def run_attention(self, text: str, layer: int | None, head: int | None) -> dict:
        """The maps of `layer` and `head` (None: all), which `check_attention` has passed."""
        attention = self.pipelines["attention"]
        maps = attention(text)
        layers = list(range(maps.weights.shape[0])) if layer is None else [layer]
        heads = list(range(maps.weights.shape[1])) if head is None else [head]
        selected = maps.weights[layers][:, heads]
        return {"tokens": maps.tokens, "layers": layers, "heads": heads,
                "attentions": np.round(selected.astype(np.float64), 4).tolist(), "truncated": attention.truncated > 0}

    def run_tokenize(self, texts: list[str]) -> list[dict]:
        batch = self.tokenizer(texts, return_offsets_mapping=True)
        return [{"tokens": self.tokenizer.convert_ids_to_tokens(ids), "input_ids": ids,
                 "offsets": [list(o) for o in offsets]}
                for ids, offsets in zip(batch["input_ids"], batch["offset_mapping"])]


def load_served_model(name: str, directory: str | Path, device: str = "cpu", dtype: str = "float32") -> ServedModel:
    """Load a checkpoint directory once and make a pipeline for every task its weights allow."""
    checkpoint = load_checkpoint(directory, device, dtype)
    pipelines = {}
    for endpoint, task in ENDPOINT_TASKS.items():
        if task in checkpoint.tasks:
            options = {"max_length": min(ATTENTION_MAX_TOKENS, checkpoint.model.config.max_position_embeddings)} \
                if endpoint == "attention" else {}
            pipelines[endpoint] = pipeline_class(task)(loaded=checkpoint, **options)
    return ServedModel(name, checkpoint, pipelines)
