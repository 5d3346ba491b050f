"""A tokenizer's files in a model folder: `vocab.txt` and `tokenizer_config.json` (transformers 4's),
and `tokenizer.json` (transformers 5 saves only that one), read and written for `BertTokenizer`."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from bertforge.errors import CheckpointError, ConfigError
from bertforge.io.atomic import output_folder, write_text
from bertforge.io.settings_files import read_json_object
from bertforge.paths import MODEL_FILES, config_path
from bertforge.tokenization.tokenizer_json import FILE_NAME as TOKENIZER_JSON
from bertforge.tokenization.tokenizer_json import (added_token_entries, added_token_kinds, read_tokenizer_json,
                                                   write_tokenizer_json)
from bertforge.tokenization.truncation import MIN_LENGTH, is_sequence_length

SPECIAL_TOKEN_KEYS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def read_folder(path: Path, vocab_file_name: str, config_file_name: str) -> tuple[Path | dict, dict, Path]:
    """(the vocabulary: its vocab.txt, or the tokens of tokenizer.json; the settings the files give;
    the tokenizer_config.json they are named by, present or not) of a folder or a vocab.txt file. Another
    file of a model folder (its config.json, say) names its folder, as it does for the model."""
    if path.is_file() and path.name in MODEL_FILES and path.name != vocab_file_name:
        path = path.parent
    if path.is_dir():
        vocab_file, config_file = path / vocab_file_name, path / config_file_name
    elif path.exists():
        vocab_file, config_file = path, path.parent / config_file_name
    else:
        raise CheckpointError(f"tokenizer not found: {path} is neither a directory nor a vocab.txt file")
    vocab, settings = vocab_file, {}
    if not vocab_file.exists():  # transformers 5 saves tokenizer.json and no vocab.txt
        if not (vocab_file.parent / TOKENIZER_JSON).exists():
            from bertforge.tokenization.bpe import is_merges_folder  # only on this error: BPE stays off start-up

            hint = (": it holds a BPE vocabulary (vocab.json, merges.txt), which BERT models do not read; "
                    "`bertforge tokenize --model DIR` shows its pieces, bertforge.tokenization.BPE.from_pretrained "
                    "loads it") if is_merges_folder(vocab_file.parent) else ""
            raise CheckpointError(f"{path} has no {vocab_file_name} or {TOKENIZER_JSON}{hint}")
        vocab, settings = read_tokenizer_json(vocab_file.parent / TOKENIZER_JSON)
    if config_file.exists():
        config = read_json_object(config_file, CheckpointError)
        if config.get("tokenize_chinese_chars") is False:  # as tokenizer.json's handle_chinese_chars=false
            raise CheckpointError(f"{config_file}: tokenize_chinese_chars=false is not supported (BERT's "
                                  f"tokenizer makes each CJK character a word)")
        for key in ("do_lower_case", "strip_accents", "model_max_length", "clean_up_tokenization_spaces",
                    *SPECIAL_TOKEN_KEYS):
            if config.get(key) is not None:
                settings[key] = config[key]
        for key in ("additional_special_tokens", "extra_special_tokens"):  # transformers 4's name, then 5's
            if isinstance(config.get(key), list):
                settings["additional_special_tokens"] = config[key]
        if isinstance(config.get("added_tokens_decoder"), dict):
            entries = [{**entry, "id": int(i)} for i, entry in config["added_tokens_decoder"].items()]
            # of the special ones, the named and those listed as extra are left out by the tokenizer
            settings["added_tokens"], settings["special_added_tokens"] = added_token_kinds(entries, config_file)
        length = settings.get("model_max_length")
        if type(length) in (int, float) and length > 1_000_000:  # "unlimited" in transformers' files
            del settings["model_max_length"]
        elif length is not None and not is_sequence_length(length):
            # left for later, a bad one would be blamed on --max-length, which the user may not have given
            raise CheckpointError(f"{config_file}: model_max_length must be a whole number of at least {MIN_LENGTH} "
                                  f"([CLS], a token, [SEP]), got {json.dumps(length)}")
    return vocab, settings, config_file


def write_vocab(tokenizer, path: Path) -> None:
    """vocab.txt: one token per line, in id order (added tokens too)."""
    write_text(path, "".join(t + "\n" for t in sorted(tokenizer.vocab, key=tokenizer.vocab.__getitem__)))


def write_folder(tokenizer, directory) -> tuple[str, ...]:
    """The tokenizer's files in `directory`; their paths, as transformers' `save_pretrained` returns them."""
    directory = output_folder(directory)
    write_vocab(tokenizer, directory / tokenizer.vocab_file_name)
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": tokenizer.do_lower_case,
        "strip_accents": tokenizer.basic.strip_accents,
        "model_max_length": tokenizer.model_max_length,
        "clean_up_tokenization_spaces": tokenizer.clean_up_tokenization_spaces,
        **{key: getattr(tokenizer, key) for key in SPECIAL_TOKEN_KEYS},
    }
    if tokenizer.additional_special_tokens:
        config["additional_special_tokens"] = tokenizer.additional_special_tokens
    if tokenizer.added_tokens or tokenizer.special_added_tokens:  # transformers' record, also in tokenizer.json
        config["added_tokens_decoder"] = {str(entry["id"]): {k: v for k, v in entry.items() if k != "id"}
                                          for entry in added_token_entries(tokenizer)}
    write_text(directory / tokenizer.config_file_name, json.dumps(config, indent=2) + "\n")
    write_tokenizer_json(tokenizer, directory)  # what transformers 5 and `tokenizers` read first
    return tuple(str(directory / name) for name in (tokenizer.config_file_name, tokenizer.vocab_file_name,
                                                    TOKENIZER_JSON))


TOKEN_LISTS = (list, tuple)
SETTING_TYPES = {"do_lower_case": bool, "strip_accents": (bool, type(None)), "model_max_length": int,
                 "clean_up_tokenization_spaces": bool, "max_input_chars_per_word": int,
                 **{key: str for key in SPECIAL_TOKEN_KEYS},
                 **{key: TOKEN_LISTS for key in ("additional_special_tokens", "added_tokens", "special_added_tokens")}}
TYPE_NAMES = {bool: "True or False", (bool, type(None)): "True, False or None", int: "an int", str: "a str",
              TOKEN_LISTS: "a list of str"}


def _of_type(value, kind) -> bool:
    if kind == TOKEN_LISTS:
        return isinstance(value, kind) and all(isinstance(token, str) for token in value)
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def check_settings(settings: dict, source: Path | None) -> None:
    """The settings of the tokenizer's files (`source`, named in the error) or, with no source, the caller's
    from_pretrained keywords (named as given), each of the type the tokenizer takes."""
    unknown = sorted(set(settings) - set(SETTING_TYPES)) if source is None else []
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(SETTING_TYPES), n=1)
        raise ConfigError(f"from_pretrained({unknown[0]}=...): not a setting of BertTokenizer"
                          + (f"; did you mean {close[0]!r}?" if close else ""))
    for key, kind in SETTING_TYPES.items():
        if key not in settings or _of_type(settings[key], kind):
            continue
        if source is not None:
            raise CheckpointError(f"{source}: {key} has the wrong type ({type(settings[key]).__name__})")
        raise ConfigError(f"from_pretrained({key}={settings[key]!r}): must be {TYPE_NAMES[kind]}")
    if source is None and "model_max_length" in settings and not is_sequence_length(settings["model_max_length"]):
        raise ConfigError(f"from_pretrained(model_max_length={settings['model_max_length']!r}): must be at least "
                          f"{MIN_LENGTH} ([CLS], a token, [SEP])")  # as tokenizer_config.json's is checked


def check_fits_the_model(vocab_size: int, directory: Path) -> None:
    """A vocabulary with more tokens than the model beside it has word embeddings would give ids with no
    vector: an IndexError deep inside torch at the first rare word. (Fewer is fine: some checkpoints pad
    their embedding table.) A config that cannot be read is for the model's loader to report."""
    config = config_path(directory)
    try:
        size = json.loads(config.read_text(encoding="utf-8")).get("vocab_size")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(size, int) and vocab_size > size:
        raise CheckpointError(f"{directory}: the vocabulary has {vocab_size} tokens, more than the "
                              f"{size} word embeddings of the model ({config.name} vocab_size): the ids from {size} "
                              f"on would have no vector")
