"""What a served model directory can do, and the batched calls behind each endpoint.

A directory's `config.json` names its architecture; we load that head and offer a task only
when the head's weights were in the checkpoint (a randomly initialised head would answer
nonsense). Every model also offers what its encoder alone gives: embeddings, tokenization
and attention maps. Each `run_*` method takes a list of inputs (the micro-batch) and returns
one result per input, or an exception instance for an input that cannot be served.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from bertforge.errors import CheckpointError, InputError
from bertforge.model import ARCHITECTURES, BertModel
from bertforge.pipelines.base import resolve_device
from bertforge.tokenization import BertTokenizer

log = logging.getLogger(__name__)

ENCODER_TASKS = ("embeddings", "tokenize", "attention")
# head weight prefix -> the tasks it enables
HEAD_TASKS = {"mlm": ("fill-mask",), "nsp": ("next-sentence",)}
ARCHITECTURE_TASKS = {
    "BertForSequenceClassification": ("classify",),
    "BertForTokenClassification": ("ner",),
    "BertForQuestionAnswering": ("qa",),
}
ATTENTION_MAX_TOKENS = 128  # layers × heads × tokens² numbers go back to the page
QA_MAX_ANSWER_TOKENS = 30
QA_STRIDE = 128


@dataclass
class ServedModel:
    name: str
    directory: Path
    model: torch.nn.Module
    tokenizer: BertTokenizer
    architecture: str
    tasks: tuple[str, ...]
    max_length: int
    normalize_embeddings: bool
    cls_pooling: bool
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def describe(self) -> dict:
        info = {"id": self.name, "object": "model", "owned_by": "bertforge", "architecture": self.architecture,
                "capabilities": list(self.tasks), "max_length": self.max_length,
                "num_layers": self.model.config.num_hidden_layers,
                "num_heads": self.model.config.num_attention_heads,
                "embedding_dim": self.model.config.hidden_size}
        if any(task in self.tasks for task in ("classify", "ner")):
            info["labels"] = [self.model.config.id2label[i] for i in sorted(self.model.config.id2label)] \
                if self.model.config.id2label else None
        return info

    # ---- helpers -------------------------------------------------------------------------
    def _encode(self, text, text_pair=None, **kwargs):
        kwargs.setdefault("truncation", True if text_pair is None else "longest_first")
        return self.tokenizer(text, text_pair, padding=True, max_length=self.max_length, return_tensors="pt",
                              **kwargs)

    def _bert_inputs(self, batch) -> dict:
        return {name: batch[name].to(self.device) for name in ("input_ids", "attention_mask", "token_type_ids")}

    def token_count(self, text: str) -> int:
        return len(self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"])

    # ---- encoder tasks -------------------------------------------------------------------
    def run_embeddings(self, texts: list[str]) -> list:
        """Sentence vectors: the pooling of the checkpoint's sentence-transformers config (mean of
        the token vectors unless it says CLS), L2-normalised when it lists a Normalize module."""
        batch = self._encode(texts)
        inputs = self._bert_inputs(batch)
        with torch.inference_mode():
            hidden = self.model.bert(**inputs).last_hidden_state.float()
        if self.cls_pooling:
            vectors = hidden[:, 0]
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.normalize_embeddings:
            vectors = F.normalize(vectors, dim=-1)
        counts = batch["attention_mask"].sum(1).tolist()
        return [(vector.cpu(), int(count)) for vector, count in zip(vectors, counts)]

    def run_tokenize(self, texts: list[str]) -> list[dict]:
        batch = self.tokenizer(texts, return_offsets_mapping=True)
        return [{"tokens": self.tokenizer.convert_ids_to_tokens(ids), "input_ids": ids,
                 "offsets": [list(o) for o in offsets]}
                for ids, offsets in zip(batch["input_ids"], batch["offset_mapping"])]

    def run_attention(self, text: str, layer: int | None, head: int | None) -> dict:
        config = self.model.config
        for value, limit, what in ((layer, config.num_hidden_layers, "layer"),
                                   (head, config.num_attention_heads, "head")):
            if value is not None and not 0 <= value < limit:
                raise InputError(f"{what} must be in 0..{limit - 1} for model {self.name!r}, got {value}")
        batch = self.tokenizer(text, truncation=True, max_length=min(self.max_length, ATTENTION_MAX_TOKENS),
                               return_tensors="pt")
        with torch.inference_mode():
            out = self.model.bert(**self._bert_inputs(batch), output_attentions=True)
        maps = torch.stack([a[0].float() for a in out.attentions])  # (layers, heads, seq, seq)
        layers = range(len(maps)) if layer is None else [layer]
        heads = range(maps.shape[1]) if head is None else [head]
        selected = maps[list(layers)][:, list(heads)]
        ids = batch["input_ids"][0].tolist()
        return {"tokens": self.tokenizer.convert_ids_to_tokens(ids), "layers": list(layers), "heads": list(heads),
                "attentions": selected.round(decimals=4).tolist(),
                "truncated": len(ids) < self.token_count(text)}

    # ---- pre-training heads --------------------------------------------------------------
    def check_fill_mask(self, text: str) -> None:
        ids = self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]
        if self.tokenizer.mask_token_id not in ids:
            raise InputError(f"no {self.tokenizer.mask_token} token in the text (within the first "
                             f"{self.max_length} tokens)")

    def run_fill_mask(self, texts: list[str], top_k: int) -> list:
        """Hugging Face's fill-mask output: per text a list of {score, token, token_str, sequence},
        or a list of such lists when the text has several masks."""
        batch = self._encode(texts)
        inputs = self._bert_inputs(batch)
        with torch.inference_mode():
            logits = self.model(**inputs).prediction_logits
        results = []
        for row, ids in enumerate(inputs["input_ids"]):
            positions = (ids == self.tokenizer.mask_token_id).nonzero().flatten().tolist()
            if not positions:
                results.append(InputError(f"no {self.tokenizer.mask_token} token in the text"))
                continue
            real = ids[: int(inputs["attention_mask"][row].sum())].tolist()
            per_mask = []
            for position in positions:
                probs = logits[row, position].float().softmax(-1)
                scores, candidates = probs.topk(top_k)
                options = []
                for score, token_id in zip(scores.tolist(), candidates.tolist()):
                    filled = list(real)
                    filled[position] = token_id
                    piece = self.tokenizer.convert_ids_to_tokens(token_id)
                    # as transformers: a lone continuation piece keeps its ##, and with several masks
                    # the sequence keeps the special tokens (the other masks among them)
                    options.append({"score": score, "token": token_id,
                                    "token_str": piece if piece.startswith("##") else self.tokenizer.decode([token_id]),
                                    "sequence": self.tokenizer.decode(filled, skip_special_tokens=len(positions) == 1)})
                per_mask.append(options)
            results.append(per_mask[0] if len(per_mask) == 1 else per_mask)
        return results

    def run_next_sentence(self, pairs: list[tuple[str, str]]) -> list[dict]:
        """P(B follows A); class 0 is "is next" in BERT's NSP head."""
        batch = self._encode([a for a, _ in pairs], [b for _, b in pairs])
        with torch.inference_mode():
            out = self.model(**self._bert_inputs(batch))
        probs = out.seq_relationship_logits.float().softmax(-1)[:, 0].tolist()
        return [{"is_next": p, "not_next": 1 - p, "label": "is_next" if p >= 0.5 else "not_next"} for p in probs]

    # ---- fine-tuned heads ----------------------------------------------------------------
    def _label(self, index: int) -> str:
        id2label = self.model.config.id2label or {}
        return id2label.get(index, f"LABEL_{index}")

    def run_classify(self, items: list[tuple[str, str | None]]) -> list[dict]:
        # pairs and single texts cannot share one tokenizer call
        results: list = [None] * len(items)
        for has_pair in (False, True):
            rows = [i for i, (_, pair) in enumerate(items) if (pair is not None) == has_pair]
            if not rows:
                continue
            texts = [items[i][0] for i in rows]
            batch = self._encode(texts, [items[i][1] for i in rows] if has_pair else None)
            with torch.inference_mode():
                probs = self.model(**self._bert_inputs(batch)).logits.float().softmax(-1)
            for i, row in zip(rows, probs):
                best = int(row.argmax())
                results[i] = {"label": self._label(best), "score": float(row[best]),
                              "scores": {self._label(j): float(p) for j, p in enumerate(row.tolist())}}
        return results

    def run_ner(self, texts: list[str]) -> list[list[dict]]:
        """Entities as Hugging Face's aggregation_strategy="first": a word takes the label of its
        first piece, and consecutive words B-X I-X ... form one entity."""
        batch = self._encode(texts, return_offsets_mapping=True)
        with torch.inference_mode():
            probs = self.model(**self._bert_inputs(batch)).logits.float().softmax(-1)
        results = []
        for row, text in enumerate(texts):
            words: dict[int, tuple[int, int, int, float]] = {}  # word -> (start, end, label, score)
            for position, word in enumerate(batch.word_ids(row)):
                if word is None:
                    continue
                start, end = batch["offset_mapping"][row][position].tolist()
                if word not in words:
                    score, label = probs[row, position].max(-1)
                    words[word] = (start, end, int(label), float(score))
                else:
                    first = words[word]
                    words[word] = (first[0], end, first[2], first[3])
            results.append(self._group_entities(text, [words[w] for w in sorted(words)]))
        return results

    def _group_entities(self, text: str, words: list[tuple[int, int, int, float]]) -> list[dict]:
        entities, current = [], None
        for start, end, label_id, score in words:
            label = self._label(label_id)
            prefix, _, kind = label.partition("-") if "-" in label else ("", "", label)
            if label == "O" or not kind:
                current = None
                continue
            if current is not None and current["entity_group"] == kind and prefix != "B":
                current["end"] = end
                current["scores"].append(score)
                continue
            current = {"entity_group": kind, "start": start, "end": end, "scores": [score]}
            entities.append(current)
        for entity in entities:
            scores = entity.pop("scores")
            entity["score"] = sum(scores) / len(scores)
            entity["word"] = text[entity["start"]:entity["end"]]
        return entities

    def run_qa(self, items: list[tuple[str, str]]) -> list:
        """The best span (start ≤ end, at most 30 tokens) over every window of a long context;
        score = P(start) · P(end), the probabilities taken over the context tokens."""
        batch = self.tokenizer([q for q, _ in items], [c for _, c in items], padding=True, truncation="only_second",
                               max_length=self.max_length, stride=min(QA_STRIDE, self.max_length // 4),
                               return_overflowing_tokens=True, return_offsets_mapping=True, return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(**self._bert_inputs(batch)).logits.float()
        best: list = [None] * len(items)
        for window, sample in enumerate(batch["overflow_to_sample_mapping"].tolist()):
            context_tokens = torch.tensor([s == 1 for s in batch.sequence_ids(window)])
            start_logits, end_logits = logits[window].unbind(-1)
            start_p = start_logits.masked_fill(~context_tokens, -1e4).softmax(-1)
            end_p = end_logits.masked_fill(~context_tokens, -1e4).softmax(-1)
            spans = start_p[:, None] * end_p[None, :]
            spans = spans.triu().tril(QA_MAX_ANSWER_TOKENS - 1) * context_tokens[:, None] * context_tokens[None, :]
            score, flat = spans.flatten().max(-1)
            start, end = divmod(int(flat), spans.shape[1])
            if best[sample] is None or float(score) > best[sample][0]:
                offsets = batch["offset_mapping"][window]
                best[sample] = (float(score), int(offsets[start][0]), int(offsets[end][1]))
        return [{"answer": context[start:end], "score": score, "start": start, "end": end}
                for (_, context), (score, start, end) in zip(items, best)]


def _sentence_transformers_settings(directory: Path) -> tuple[bool, bool, int | None]:
    """(normalize, cls pooling, max_seq_length) from a sentence-transformers export, if any."""
    normalize, cls_pooling, max_length = False, False, None
    modules = directory / "modules.json"
    if modules.exists():
        entries = json.loads(modules.read_text())
        normalize = any(m.get("type", "").endswith("Normalize") for m in entries)
        for module in entries:
            pooling = directory / module.get("path", "") / "config.json"
            if module.get("type", "").endswith("Pooling") and pooling.exists():
                cls_pooling = bool(json.loads(pooling.read_text()).get("pooling_mode_cls_token"))
    settings = directory / "sentence_bert_config.json"
    if settings.exists():
        max_length = json.loads(settings.read_text()).get("max_seq_length")
    return normalize, cls_pooling, max_length


def load_served_model(name: str, directory: str | Path, device: str = "cpu") -> ServedModel:
    """Load a checkpoint directory with the head its config names and work out its tasks."""
    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{directory}: no config.json (is --model a model directory?)")
    try:
        architectures = json.loads(config_file.read_text()).get("architectures") or ["BertModel"]
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_file}: not valid JSON ({e})") from None
    architecture = architectures[0]
    cls = ARCHITECTURES.get(architecture)
    if cls is None:
        raise CheckpointError(f"{config_file}: architecture {architecture!r} is not one of "
                              f"{', '.join(sorted(ARCHITECTURES))}")
    device = resolve_device(device)
    model = cls.from_pretrained(directory).to(device)
    missing = {key.split(".")[0] for key in model.missing_keys}
    tasks = list(ENCODER_TASKS)
    for head, head_tasks in HEAD_TASKS.items():
        if hasattr(model, head) and head not in missing:
            tasks += head_tasks
    if architecture in ARCHITECTURE_TASKS:
        head = "qa_outputs" if architecture == "BertForQuestionAnswering" else "classifier"
        if head in missing:
            log.warning("%s: the %s head is not in the checkpoint; its task is not served", directory, head)
        else:
            tasks += ARCHITECTURE_TASKS[architecture]
    normalize, cls_pooling, st_max_length = _sentence_transformers_settings(directory)
    max_length = min(st_max_length or model.config.max_position_embeddings, model.config.max_position_embeddings,
                     512)
    return ServedModel(name=name, directory=directory, model=model, tokenizer=BertTokenizer.from_pretrained(directory),
                       architecture=architecture, tasks=tuple(tasks), max_length=max_length,
                       normalize_embeddings=normalize, cls_pooling=cls_pooling, device=device)
