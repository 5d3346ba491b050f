"""Pre-training instances with the semantics of Google's `create_pretraining_data.py`.

An instance is `[CLS] A [SEP] B [SEP]`: A is a random number of whole sentences of a document,
B is either the sentences that really follow (isNext, label 0) or a stretch of another document
(notNext, label 1), and the pair is trimmed to `max_seq_length` by `truncate_seq_pair`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

IS_NEXT, NOT_NEXT = 0, 1  # the labels of the original code and of transformers


@dataclass
class Instance:
    tokens: np.ndarray  # [CLS] A [SEP] B [SEP] as token ids
    segment_b_start: int  # index of the first token of B (token type 1 from here to the end)
    next_sentence_label: int


@dataclass
class TokenizedDocuments:
    """Documents as lists of sentences of token ids; `truncated` counts sentences that were longer
    than an instance can hold and were cut."""

    documents: list[list[np.ndarray]]
    truncated: int = 0
    sentences: int = 0
    tokens: int = 0


def tokenize_documents(documents, tokenizer, max_seq_length: int) -> TokenizedDocuments:
    """Tokenise each sentence once (without special tokens); empty sentences and documents are dropped."""
    limit = max_seq_length - 3  # room for [CLS] and two [SEP]
    result = TokenizedDocuments([])
    for sentences in documents:
        encoded = tokenizer.token_ids(sentences)
        document = []
        for ids in encoded:
            if not ids:
                continue
            if len(ids) > limit:
                ids = ids[:limit]
                result.truncated += 1
            document.append(np.asarray(ids, dtype=np.int32))
            result.tokens += len(ids)
        result.sentences += len(document)
        if document:
            result.documents.append(document)
    return result


def truncate_seq_pair(len_a: int, len_b: int, max_num_tokens: int, rng: random.Random) -> tuple[int, int, int, int]:
    """Trim the longer of A and B one token at a time, from the front or the back at random
    (the original's way of avoiding a bias towards either end). Returns how many tokens to cut
    from the front and back of A and of B."""
    cut = [0, 0, 0, 0]  # A front, A back, B front, B back
    while len_a + len_b > max_num_tokens:
        if len_a > len_b:
            len_a -= 1
            cut[0 if rng.random() < 0.5 else 1] += 1
        else:
            len_b -= 1
            cut[2 if rng.random() < 0.5 else 3] += 1
    return tuple(cut)


def create_instances_from_document(all_documents: list[list[np.ndarray]], document_index: int,
                                   max_seq_length: int, short_seq_prob: float, rng: random.Random,
                                   cls_id: int, sep_id: int) -> list[Instance]:
    """A port of the original function of the same name, on token-id arrays (one deliberate
    difference, marked below)."""
    document = all_documents[document_index]
    max_num_tokens = max_seq_length - 3
    # Mostly fill the sequence; sometimes a shorter target so that fine-tuning on short inputs
    # does not meet a length never seen in pre-training.
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    instances = []
    current_chunk: list[np.ndarray] = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                a_end = rng.randint(1, len(current_chunk) - 1) if len(current_chunk) >= 2 else 1
                tokens_a = np.concatenate(current_chunk[:a_end])
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    label = NOT_NEXT
                    target_b_length = target_seq_length - len(tokens_a)
                    # Another document; with a single document this falls back to itself, as in the original.
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(all_documents) - 1)
                        if random_document_index != document_index:
                            break
                    random_document = all_documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    pieces, length = [], 0
                    for j in range(random_start, len(random_document)):
                        pieces.append(random_document[j])
                        length += len(random_document[j])
                        if length >= target_b_length:
                            break
                    tokens_b = np.concatenate(pieces)
                    # The original puts the chunk's unused sentences back for the next instance,
                    # which makes about two notNext instances for each isNext one; leaving them to
                    # the other dupe_factor passes brings the balance near the paper's 50/50, not to
                    # it: a chunk of one sentence (a short target, a long sentence) can only be
                    # notNext, as in the original (isNext 0.44 on the Gutenberg books by default;
                    # `pretrain prepare` prints is_next_fraction).
                else:
                    label = IS_NEXT
                    tokens_b = np.concatenate(current_chunk[a_end:])
                a_front, a_back, b_front, b_back = truncate_seq_pair(len(tokens_a), len(tokens_b), max_num_tokens, rng)
                tokens_a = tokens_a[a_front:len(tokens_a) - a_back]
                tokens_b = tokens_b[b_front:len(tokens_b) - b_back]
                tokens = np.concatenate([[cls_id], tokens_a, [sep_id], tokens_b, [sep_id]]).astype(np.int32)
                instances.append(Instance(tokens, len(tokens_a) + 2, label))
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def create_instances(all_documents: list[list[np.ndarray]], max_seq_length: int, short_seq_prob: float,
                     dupe_factor: int, rng: random.Random, cls_id: int, sep_id: int) -> list[Instance]:
    """`dupe_factor` passes over the documents (each pass cuts them differently), then shuffled."""
    all_documents = list(all_documents)
    rng.shuffle(all_documents)
    instances = []
    for _ in range(dupe_factor):
        for document_index in range(len(all_documents)):
            instances.extend(create_instances_from_document(
                all_documents, document_index, max_seq_length, short_seq_prob, rng, cls_id, sep_id))
    rng.shuffle(instances)
    return instances
