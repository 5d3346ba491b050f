"""`pretrain export`: a trained model (or a run's latest checkpoint) with its weights in another dtype,
and optionally the dropout that fine-tuning from it should use."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from bertforge.errors import CheckpointError, ConfigError
from bertforge.io.atomic import atomic_directory, check_output_dir
from bertforge.model.checkpoint import model_folder
from bertforge.model.heads import BertForPreTraining
from bertforge.paths import MODEL_FILES
from bertforge.training.state import MANIFEST, Checkpoint, has_checkpoint

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def export_model(model_dir: str | Path, output_dir: str | Path, dtype: str = "float16",
                 dropout: float | None = None) -> Path:
    """Save a trained model with its weights stored as `dtype` (float16 halves the file; loaders
    cast back to float32). `dropout` replaces the saved hidden and attention dropout: a model
    pre-trained without dropout (the Cramming recipe) is fine-tuned with it."""
    from bertforge.pretraining.config import TrainingConfig
    from bertforge.pretraining.shards import PretrainingData
    from bertforge.pretraining.trainer import build_model
    from bertforge.tokenization import BertTokenizer

    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    model_dir = Path(model_dir)
    # Written whole into a new folder, swapped in at the end: never over the model it reads, nor over files of others.
    check_output_dir(output_dir, "OUTPUT_DIR", inputs=(model_dir,), holds="config.json", only=MODEL_FILES)
    if has_checkpoint(model_dir) and not (model_dir / "config.json").exists():
        # a run directory: rebuild the model from the run's settings and its latest checkpoint
        checkpoint = Checkpoint(model_dir, option="export",
                                state={"args": (lambda value: isinstance(value, dict), "an object")})
        try:
            config = TrainingConfig(**checkpoint["args"])
        except TypeError as e:  # a hand-edited or foreign manifest: a key TrainingConfig does not have, or lacks
            raise CheckpointError(f"export {model_dir}: {checkpoint.directory / MANIFEST}: its 'args' are not a "
                                  f"pretrain train run's settings ({e})") from None
        if dropout is not None:
            config = dataclasses.replace(config, dropout=dropout)
        data = PretrainingData(config.data_dir)
        tokenizer = data.tokenizer()
        model = build_model(config, len(tokenizer), data.options.max_seq_length)
        checkpoint.load_model(model)
    else:
        folder, _ = model_folder(model_dir)  # or a file in it, as every command takes a model
        overrides = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
        model = BertForPreTraining.from_pretrained(model_dir, **overrides)
        tokenizer = BertTokenizer.from_pretrained(folder)
    with atomic_directory(output_dir) as build:
        model.to(DTYPES[dtype]).save_pretrained(build, tokenizer)
    return Path(output_dir) / "model.safetensors"

