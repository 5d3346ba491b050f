"""Fill-mask: the masked-language-model head's top-k guesses for every [MASK], shaped like the
Hugging Face pipeline's output: per mask a list of {score, token, token_str, sequence}."""

from __future__ import annotations

import logging

import torch

from bertforge.errors import InputError, is_whole_number
from bertforge.model import BertForMaskedLM
from bertforge.paths import default_pretraining_model_path
from bertforge.pipelines.base import Encoded, Pipeline, as_list

log = logging.getLogger(__name__)

# Masks scored at once: each holds a vocabulary-sized row of logits and another of probabilities,
# so a batch with hundreds of masks would otherwise take hundreds of megabytes for a moment.
MASK_CHUNK = 64


class FillMaskPipeline(Pipeline):
    """`pipe(text_or_texts, top_k=5, targets=None)`. One text with one [MASK] → a list of dicts;
    several [MASK]s → a list of such lists (one per mask); a list of texts → a list of those."""

    task = "fill-mask"
    model_class = BertForMaskedLM
    head_prefix = ("mlm.",)
    head_name = "masked-language-model head (cls.predictions.*)"
    default_model = staticmethod(default_pretraining_model_path)

    def __call__(self, inputs, top_k: int = 5, targets: str | list[str] | None = None):
        texts, single = as_list(inputs, "inputs")
        if not is_whole_number(top_k, 1):
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        if top_k > len(self.tokenizer.vocab):
            raise InputError(f"top_k {top_k} is larger than the vocabulary ({len(self.tokenizer.vocab)} tokens)")
        target_ids = self.target_ids(targets) if targets is not None else None
        encoded = self.encode(texts)
        problem = self.first_unfillable(texts, [enc.ids for enc in encoded])
        if problem is not None:
            raise InputError(f"{'the text' if single else f'text {problem[0] + 1}'} has {problem[1]}")
        mask_id = self.tokenizer.mask_token_id
        k = min(top_k, len(target_ids)) if target_ids is not None else top_k

        def run(batch: list[Encoded]) -> list[tuple[torch.Tensor, torch.Tensor]]:
            inputs = self.padded(batch)
            hidden = self.bert(**inputs).last_hidden_state
            rows, positions = (inputs["input_ids"] == mask_id).nonzero(as_tuple=True)
            scores, ids = [], []
            for start in range(0, len(rows), MASK_CHUNK):
                chunk = slice(start, start + MASK_CHUNK)
                probs = self.model.mlm(hidden[rows[chunk], positions[chunk]]).float().softmax(dim=-1)
                if target_ids is not None:
                    probs = probs[:, target_ids]
                else:  # a vocabulary padded past vocab.txt (vocab_size rounded up) has ids no token spells
                    probs = probs[:, :len(self.tokenizer.vocab)]
                chunk_scores, chunk_ids = probs.topk(k)
                scores.append(chunk_scores)
                ids.append(target_ids[chunk_ids] if target_ids is not None else chunk_ids)
            scores, ids = torch.cat(scores), torch.cat(ids)
            counts = torch.bincount(rows, minlength=len(batch)).tolist()
            return list(zip(scores.cpu().split(counts), ids.cpu().split(counts)))

        results = []
        for enc, (scores, ids) in zip(encoded, self.in_length_order(encoded, run)):
            results.append(self.propositions(enc, scores.tolist(), ids.tolist()))
        return results[0] if single else results

    def first_unfillable(self, texts: list[str], ids: list[list[int]] | None = None) -> tuple[int, str] | None:
        """The first text that cannot be answered as asked, and what it has (None when all can): no mask
        token, or masks that truncation to max_length cuts away, which would drop their answers
        and change the answer's shape. `ids`: the texts' truncated ids, where the caller has them."""
        mask = self.tokenizer.mask_token
        for i, text in enumerate(texts):
            if mask not in text:
                return i, f"no {mask} token to fill: {text[:80]!r}"
        if ids is None:
            ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        for i, (text, kept) in enumerate(zip(texts, ids)):
            total = text.count(mask)
            lost = total - kept.count(self.tokenizer.mask_token_id)
            if lost > 0:
                return i, (f"{lost} of its {total} {mask} tokens beyond max_length {self.max_length}, where "
                           f"truncation cuts them away; shorten the text or move the {mask} forward")
        return None

    def target_ids(self, targets) -> torch.Tensor:
        """Vocabulary ids of the targets; a word outside the vocabulary stands for its first piece
        (with a warning), as in the Hugging Face pipeline."""
        targets, _ = as_list(targets, "targets")
        ids = []
        for target in targets:
            if target in self.tokenizer.vocab:
                ids.append(self.tokenizer.vocab[target])
                continue
            pieces = self.tokenizer(target, add_special_tokens=False)["input_ids"]
            if not pieces:
                log.warning("target %r is not in the vocabulary and has no pieces: ignored", target)
                continue
            log.warning("target %r is not in the vocabulary: using its first piece %r", target,
                        self.tokenizer.convert_ids_to_tokens(pieces[0]))
            ids.append(pieces[0])
        if not ids:
            raise InputError(f"targets: none of {targets} can be scored")
        return torch.tensor(sorted(set(ids)), device=self.device)

    def propositions(self, enc: Encoded, scores: list[list[float]], ids: list[list[int]]) -> list:
        mask_positions = [i for i, t in enumerate(enc.ids) if t == self.tokenizer.mask_token_id]
        single_mask = len(mask_positions) == 1
        per_mask = []
        for position, mask_scores, mask_ids in zip(mask_positions, scores, ids):
            row = []
            for score, token_id in zip(mask_scores, mask_ids):
                filled = list(enc.ids)
                filled[position] = token_id
                # With several masks the others stay visible, so special tokens are kept (as in HF).
                sequence = self.tokenizer.decode(filled, skip_special_tokens=single_mask)
                row.append({"score": score, "token": token_id,
                            "token_str": self.tokenizer.convert_ids_to_tokens(token_id), "sequence": sequence})
            per_mask.append(row)
        return per_mask[0] if single_mask else per_mask
