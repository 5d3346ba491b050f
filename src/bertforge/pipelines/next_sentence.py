"""Next-sentence scoring: P(isNext) that sentence B follows sentence A, from the NSP head."""

from __future__ import annotations

from bertforge.errors import InputError
from bertforge.model import BertForNextSentencePrediction
from bertforge.paths import default_pretraining_model_path
from bertforge.pipelines.base import Encoded, Pipeline
from bertforge.tokenization.basic import has_text


def _as_pairs(inputs) -> tuple[list[tuple[str, str]], bool]:
    """(a, b), {"text": a, "text_pair": b}, or a list of either."""
    def one(item, index):
        if isinstance(item, dict) and "text" in item and "text_pair" in item:
            item = (item["text"], item["text_pair"])
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(s, str) for s in item)):
            raise InputError(f"pair {index + 1}: expected (sentence A, sentence B) or "
                             f"{{'text': A, 'text_pair': B}}, got {str(item)[:80]!r}")
        for name, sentence in zip("AB", item):  # as BERT reads it: spaces or zero-width characters alone are empty
            if not has_text(sentence):
                raise InputError(f"pair {index + 1}: sentence {name} is empty; the head scores whether B follows A")
        return tuple(item)

    # a tuple of two that are not pairs themselves is one pair, checked (and named) as such
    if isinstance(inputs, dict) or (isinstance(inputs, tuple) and len(inputs) == 2
                                    and not any(isinstance(s, (tuple, list, dict)) for s in inputs)):
        return [one(inputs, 0)], True
    if not isinstance(inputs, (list, tuple)):
        raise InputError(f"expected a pair of sentences or a list of pairs, got {type(inputs).__name__}")
    return [one(item, i) for i, item in enumerate(inputs)], False


class NextSentencePipeline(Pipeline):
    """`pipe((a, b))` → {"is_next": p, "not_next": 1 - p, "label": "isNext" | "notNext"};
    a list of pairs → a list of those (batched)."""

    task = "next-sentence"
    model_class = BertForNextSentencePrediction
    head_prefix = ("nsp.", "bert.pooler.")
    head_name = "next-sentence-prediction head (cls.seq_relationship.* and the pooler)"
    default_model = staticmethod(default_pretraining_model_path)

    def __call__(self, inputs):
        pairs, single = _as_pairs(inputs)
        encoded = self.encode([a for a, _ in pairs], [b for _, b in pairs])

        def run(batch: list[Encoded]) -> list[list[float]]:
            # The head alone: a shared BertForPreTraining would also score every token over the vocabulary.
            # Unpadded: no work on padding, and only the [CLS] rows reach the pooler.
            pooled = self.bert.pooler_output_unpadded([e.ids for e in batch], [e.type_ids for e in batch])
            logits = self.model.nsp(pooled)
            return logits.float().softmax(dim=-1).cpu().tolist()

        results = []
        for is_next, not_next in self.in_length_order(encoded, run):
            results.append({"is_next": is_next, "not_next": not_next,
                            "label": "isNext" if is_next >= not_next else "notNext"})
        return results[0] if single else results
