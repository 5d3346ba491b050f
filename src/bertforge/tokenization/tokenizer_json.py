"""`tokenizer.json`, the one-file tokenizer of Hugging Face `tokenizers`, for WordPiece models.

transformers 5 saves a BERT tokenizer as `tokenizer.json` (+ `tokenizer_config.json`) and no
`vocab.txt`. `read_tokenizer_json` turns such a file into `BertTokenizer` arguments: the
WordPiece vocabulary, the BERT normaliser's flags, `max_input_chars_per_word` and the special
tokens of the post-processor. `tokenizer_json` writes the file back, so a folder saved by
bertforge loads in transformers 5 and `tokenizers` to the same ids. The format is plain JSON;
`tokenizers` itself is a test-only dependency.
"""

from __future__ import annotations

import json
from pathlib import Path

from bertforge.errors import CheckpointError, is_whole_number
from bertforge.io.atomic import write_text
from bertforge.io.settings_files import read_json_object

FILE_NAME = "tokenizer.json"
# The special tokens tokenizer.json does not name itself ([MASK], and [PAD] without padding) keep
# BERT's spelling unless tokenizer_config.json says otherwise.
DEFAULT_SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                          "mask_token": "[MASK]"}


def read_tokenizer_json(path: Path) -> tuple[dict[str, int], dict]:
    """(vocabulary, `BertTokenizer` keyword arguments) from a WordPiece `tokenizer.json`."""
    data = read_json_object(path, CheckpointError, "a tokenizer")
    model = data.get("model")
    if not isinstance(model, dict) or model.get("type") != "WordPiece":
        kind = model.get("type") if isinstance(model, dict) else None
        raise CheckpointError(f"{path}: model type is {kind!r}, not WordPiece; bertforge reads only BERT's "
                              "WordPiece tokenizers")
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise CheckpointError(f"{path}: model.vocab must map tokens to integer ids")
    vocab = dict(vocab)
    settings: dict = {"unk_token": _string(model, "unk_token", path, "[UNK]"),
                      "max_input_chars_per_word": _int(model, "max_input_chars_per_word", path, 100)}
    # Our WordPiece and decoder are written for "##"; no released BERT uses another prefix.
    prefix = model.get("continuing_subword_prefix", "##")
    if prefix != "##":
        raise CheckpointError(f"{path}: model.continuing_subword_prefix {prefix!r} is not supported (only '##')")
    settings.update(_normalizer_settings(data.get("normalizer"), path))
    settings.update(_post_processor_tokens(data.get("post_processor"), path))
    padding = data.get("padding")
    if isinstance(padding, dict) and isinstance(padding.get("pad_token"), str):
        settings["pad_token"] = padding["pad_token"]
    for entry in data.get("added_tokens") or []:
        content, token_id = entry.get("content"), entry.get("id")
        if not isinstance(content, str) or not isinstance(token_id, int):
            raise CheckpointError(f"{path}: added_tokens entry {entry!r} lacks a string content or an integer id")
        if vocab.setdefault(content, token_id) != token_id:
            raise CheckpointError(f"{path}: added token {content!r} has id {token_id}, the vocabulary "
                                  f"gives {vocab[content]}")
    if data.get("added_tokens"):
        settings["added_tokens"], special = added_token_kinds(data["added_tokens"], path)
        named = {settings.get(key, default) for key, default in DEFAULT_SPECIAL_TOKENS.items()}
        special_added = [token for token in special if token not in named]
        if special_added:  # listed in all_special_tokens only where tokenizer_config.json's extra_special_tokens says
            settings["special_added_tokens"] = special_added
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise CheckpointError(f"{path}: token ids are not 0..{len(vocab) - 1} without gaps or repeats")
    return vocab, settings


def _string(section: dict, key: str, path: Path, default: str) -> str:
    value = section.get(key, default)
    if not isinstance(value, str):
        raise CheckpointError(f"{path}: {key} must be a string, got {value!r}")
    return value


def _int(section: dict, key: str, path: Path, default: int) -> int:
    value = section.get(key, default)
    if not is_whole_number(value, 1):
        raise CheckpointError(f"{path}: {key} must be a positive integer, got {value!r}")
    return value


def _normalizer_settings(normalizer, path: Path) -> dict:
    if not isinstance(normalizer, dict) or normalizer.get("type") != "BertNormalizer":
        kind = normalizer.get("type") if isinstance(normalizer, dict) else normalizer
        raise CheckpointError(f"{path}: normalizer {kind!r} is not BertNormalizer")
    # BERT always cleans text and isolates CJK characters; a tokenizer that does not would
    # give other ids than ours, so it is refused rather than silently misread.
    for flag in ("clean_text", "handle_chinese_chars"):
        if normalizer.get(flag, True) is not True:
            raise CheckpointError(f"{path}: normalizer.{flag}=false is not supported")
    lowercase, strip_accents = normalizer.get("lowercase", True), normalizer.get("strip_accents")
    if not isinstance(lowercase, bool) or not isinstance(strip_accents, (bool, type(None))):
        raise CheckpointError(f"{path}: normalizer.lowercase must be true/false and strip_accents true/false/null")
    return {"do_lower_case": lowercase, "strip_accents": strip_accents}


def _post_processor_tokens(processor, path: Path) -> dict:
    """[CLS] and [SEP] as the post-processor adds them around a single sequence."""
    if processor is None:
        return {}
    kind = processor.get("type") if isinstance(processor, dict) else None
    try:
        if kind == "BertProcessing":
            return {"cls_token": str(processor["cls"][0]), "sep_token": str(processor["sep"][0])}
        if kind == "TemplateProcessing":
            first, _, last = processor["single"]
            return {"cls_token": str(first["SpecialToken"]["id"]), "sep_token": str(last["SpecialToken"]["id"])}
    except (KeyError, IndexError, TypeError, ValueError):
        pass
    raise CheckpointError(f"{path}: post_processor {kind!r} is not BERT's [CLS] A [SEP] (B [SEP]) template")


def tokenizer_json(tokenizer) -> dict:
    """The `tokenizer.json` content of a `BertTokenizer`."""
    def special(token: str, type_id: int) -> dict:
        return {"SpecialToken": {"id": token, "type_id": type_id}}

    def sequence(name: str, type_id: int) -> dict:
        return {"Sequence": {"id": name, "type_id": type_id}}

    cls, sep = tokenizer.cls_token, tokenizer.sep_token
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_token_entries(tokenizer),
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": tokenizer.basic.strip_accents, "lowercase": tokenizer.do_lower_case},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special(cls, 0), sequence("A", 0), special(sep, 0)],
            "pair": [special(cls, 0), sequence("A", 0), special(sep, 0), sequence("B", 1), special(sep, 1)],
            "special_tokens": {token: {"id": token, "ids": [tokenizer.vocab[token]], "tokens": [token]}
                               for token in (cls, sep)},
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": tokenizer.unk_token, "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": tokenizer.wordpiece.max_input_chars_per_word,
                  # the model's pieces; tokens added after it are in added_tokens only, as transformers saves them
                  "vocab": dict(sorted(tokenizer.wordpiece.vocab.items(), key=lambda item: item[1]))},
    }


def added_token_entries(tokenizer) -> list[dict]:
    """tokenizers' record of each added token, by id: the special ones matched as written, the others in the
    normalised text."""
    specials = {*tokenizer.all_special_tokens, *tokenizer.special_added_tokens}
    return [{"id": tokenizer.vocab[token], "content": token, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": token not in specials, "special": token in specials}
            for token in sorted(specials | set(tokenizer.added_tokens), key=tokenizer.vocab.__getitem__)]


def added_token_kinds(entries: list[dict], path: Path) -> tuple[list[str], list[str]]:
    """(the plain added tokens, the special ones) of tokenizers' added-token records; a plain one matched in the
    raw text is refused, as the tokenizer matches added tokens only in the normalised text or as special tokens."""
    plain, special = [], []
    for entry in entries:
        if entry.get("special"):
            special.append(entry.get("content"))
            continue
        if not entry.get("normalized", True):
            raise CheckpointError(f"{path}: added token {entry.get('content')!r} is neither special nor "
                                  "normalized; bertforge matches an added token as one or the other")
        plain.append(entry.get("content"))
    return plain, special


def write_tokenizer_json(tokenizer, directory: Path) -> None:
    write_text(directory / FILE_NAME, json.dumps(tokenizer_json(tokenizer), ensure_ascii=False, indent=2) + "\n")
