"""Loading and saving models in the Hugging Face directory layout.

A directory holds `config.json`, the weights (`model.safetensors`, or `pytorch_model.bin`
from older releases) and usually `vocab.txt`. Google's TensorFlow folders (`bert_config.json` +
a checkpoint bundle) load too: `tf_checkpoint` reads them into Hugging Face names. `weight_names`
maps those names to ours and back.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

from bertforge.errors import CheckpointError, ConfigError, InputError
from bertforge.io.atomic import atomic_path, output_folder
from bertforge.model.config import DISTILBERT_KEYS, BertConfig, numbered_labels, with_overrides
from bertforge.model.tf_checkpoint import read_tf_checkpoint
from bertforge.model.weight_files import read_weights
from bertforge.model.weight_names import NAMINGS, bertforge_to_hf, hf_to_bertforge
from bertforge.paths import GOOGLE_CONFIG_FILE, config_path, default_model_path, model_path

log = logging.getLogger(__name__)


def _ours(hf_weights: dict[str, torch.Tensor], config: BertConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`hf_to_bertforge` for this config: a tied decoder is read from the token embeddings, as transformers reads it."""
    weights, unused = hf_to_bertforge(hf_weights, config.model_type)
    if config.tie_word_embeddings:
        weights.pop("mlm.decoder.weight", None)
    return weights, unused


def from_hf_state_dict(model, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' state dict of the model's class → `model`'s own names (a tied MLM decoder read from the token
    embeddings, as `load_model` reads it); names with no counterpart are kept as they are, for
    `load_state_dict(strict=True)` to list."""
    weights, unused = _ours(state, model.config)
    if "bert.embeddings.word.weight" in weights and hasattr(getattr(model, "mlm", None), "word_embeddings"):
        weights["mlm.word_embeddings.weight"] = weights["bert.embeddings.word.weight"]
    if model.base_model is model:  # a bare BertModel: its own names lack the "bert." prefix
        weights = {name.removeprefix("bert."): tensor for name, tensor in weights.items()}
    prefix = NAMINGS[model.config.model_type].prefix
    return {**weights, **{name: state[name] if name in state else state[prefix + name] for name in unused}}


def _state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights named as inside a head model (encoder weights under "bert.")."""
    state = model.state_dict()
    return {f"bert.{k}": v for k, v in state.items()} if model.base_model is model else state


MISSING_WEIGHTS = "%s: %d weights not in the checkpoint, initialised randomly: %s"


@contextmanager
def missing_weights_unlogged():
    """Loads inside it do not warn of weights initialised randomly, for callers that expect them (a new
    head) or report them their own way."""
    def other_messages(record) -> bool:
        return record.msg != MISSING_WEIGHTS

    log.addFilter(other_messages)
    try:
        yield
    finally:
        log.removeFilter(other_messages)


def checkpoint_location(path: str | Path) -> tuple[Path, Path | None]:
    """The folder of a checkpoint given as that folder, a file in it (its config.json, say) or Google's
    checkpoint prefix (`.../bert_model.ckpt`, as their scripts name one); and that prefix, if given."""
    path = model_path(path)
    if path.name and path.with_name(path.name + ".index").is_file():  # ".", "/" have no name: folders only
        return path.parent, path
    if path.is_file():
        if not config_path(path.parent).is_file():
            raise CheckpointError(f"{path}: a file, not a model directory (config.json, model.safetensors)")
        return path.parent, None
    if not path.is_dir():
        raise CheckpointError(f"{path}: model directory not found")
    return path, None


def model_folder(path: str | Path) -> tuple[Path, Path | None]:
    """`checkpoint_location` of a saved model, whose folder must hold config.json (or Google's bert_config.json)."""
    folder, prefix = checkpoint_location(path)
    config = config_path(folder)
    if config.is_dir():
        raise CheckpointError(f"{config}: is a directory, not a file")
    if not config.is_file():
        from bertforge.training.state import checkpoint_directory, has_checkpoint  # (training imports this module)

        final = folder / "final"  # where `pretrain train` and `distill` save a run's model
        if config_path(final).is_file():
            raise CheckpointError(f"{folder}: a training run's folder, with no model of its own; its final model is "
                                  f"{final}: use that")
        if has_checkpoint(folder):  # a run stopped (Ctrl-C, a crash) before it saved a model
            raise CheckpointError(f"{folder}: a training run's folder, stopped before it saved a model (its checkpoint "
                                  f"is in {checkpoint_directory(folder)}): continue it with its command and --resume "
                                  f"{folder}, or make a model of a pre-training run's checkpoint with `bertforge "
                                  f"pretrain export {folder} NEW_FOLDER`")
        raise CheckpointError(f"{folder}: no config.json (or Google's bert_config.json) there")
    return folder, prefix


def load_config(path: str | Path | None = None, **overrides) -> BertConfig:
    """The config `load_model` builds its model from (`BertConfig.from_pretrained`)."""
    config_file = config_path(checkpoint_location(path if path is not None else default_model_path())[0])
    for key in ("dtype", "torch_dtype"):
        if key in overrides:
            raise ConfigError(f"BertConfig.from_pretrained({key}=...): the weights' type is the model's to load: "
                              f"Model.from_pretrained(path, {key}=...)")
    return with_overrides(BertConfig.from_json_file(config_file), dict(overrides))


def load_model(cls, path: str | Path | None = None, fresh_head: bool = False, **config_overrides):
    """Build `cls` (a BertPreTrainedModel) from a Hugging Face style checkpoint directory.

    Encoder weights must all be present. Missing head weights (loading an encoder-only
    checkpoint into a task model, say) are initialised randomly, listed in
    `model.missing_keys` and logged, as fine-tuning expects; `fresh_head` treats every head
    weight of the checkpoint as missing.
    """
    directory, tf_prefix = checkpoint_location(path if path is not None else default_model_path())
    config_file = config_path(directory)
    config = BertConfig.from_json_file(config_file)
    hf_weights = read_tf_checkpoint(tf_prefix) if tf_prefix is not None else read_weights(directory)
    if config_file.name == GOOGLE_CONFIG_FILE and config.id2label is None and "classifier.weight" in hf_weights:
        # run_classifier.py keeps its labels in code, not in bert_config.json: the head's rows count them.
        config_overrides = {"id2label": numbered_labels(len(hf_weights["classifier.weight"]), str(config_file)),
                            **config_overrides}
    dtype = _load_dtype(config_overrides.pop("dtype", config_overrides.pop("torch_dtype", torch.float32)), config)
    device = _load_device(config_overrides.pop("device_map", None))
    # transformers' keyword: weights whose shape the config changed (a head of other labels) start afresh
    ignore_mismatched_sizes = bool(config_overrides.pop("ignore_mismatched_sizes", False))
    config = with_overrides(config, config_overrides)
    weights, unused = _ours(hf_weights, config)
    _check_sizes(config, weights, config_file, config_overrides, shapes=not ignore_mismatched_sizes)
    if fresh_head:
        weights = {name: tensor for name, tensor in weights.items() if name.startswith("bert.")}
    model = cls(config)
    expected = {k: v for k, v in _state_dict(model).items() if k != "mlm.word_embeddings.weight"}
    if ignore_mismatched_sizes:
        weights = {name: tensor for name, tensor in weights.items()
                   if name not in expected or expected[name].shape == tensor.shape}
    for name, tensor in weights.items():
        if name in expected and expected[name].shape != tensor.shape:
            hint = (" (a different number of labels? `bertforge finetune --new-head`, or fresh_head=True in"
                    " Python, trains a new head on this encoder)") \
                if name.startswith(("classifier", "qa_outputs")) else ""
            raise CheckpointError(f"{config_file}: sizes disagree with the checkpoint: weight {name!r} has shape "
                                  f"{tuple(tensor.shape)}, the config gives {tuple(expected[name].shape)}{hint}")
    missing = sorted(set(expected) - set(weights))
    missing_body = [name for name in missing if name.startswith("bert.") and not name.startswith("bert.pooler.")]
    if missing_body:
        raise CheckpointError(f"{directory}: the checkpoint lacks {len(missing_body)} encoder weights, "
                              f"e.g. {missing_body[:3]}; is it a BERT checkpoint?")
    unexpected = sorted(set(weights) - set(expected)) + unused
    found = {k: v for k, v in weights.items() if k in expected}
    if model.base_model is model:  # a bare BertModel: its own names lack the "bert." prefix
        found = {k.removeprefix("bert."): v for k, v in found.items()}
    model.load_state_dict(found, strict=False)
    model.missing_keys = missing
    if missing:
        log.warning(MISSING_WEIGHTS, directory, len(missing),
                    ", ".join(sorted({name.rsplit(".", 1)[0] for name in missing})))
    # Unused encoder weights mean the config and the checkpoint disagree (a layer more), not a head left out.
    unused_encoder = [name for name in unexpected if name.startswith(("bert.", *NAMINGS[config.model_type].body_prefixes))
                      and "pooler" not in name]
    if unused_encoder:
        log.warning("%s: %d encoder weights of the checkpoint are not used, e.g. %s; does config.json match the "
                    "checkpoint (num_hidden_layers)?", directory, len(unused_encoder), unused_encoder[0])
    elif unexpected:
        log.info("%s: ignored %d weights this model does not use (%s ...)", directory, len(unexpected), unexpected[0])
    model.name_or_path = str(path if path is not None else directory)
    return model.to(dtype=dtype, device=device).eval()


# The config's sizes that the weights hold too: (weight, dimension) of each.
SIZES_IN_WEIGHTS = {"vocab_size": ("bert.embeddings.word.weight", 0), "hidden_size": ("bert.embeddings.word.weight", 1),
                    "max_position_embeddings": ("bert.embeddings.position.weight", 0),
                    "type_vocab_size": ("bert.embeddings.token_type.weight", 0),
                    "intermediate_size": ("bert.encoder.layers.0.intermediate.weight", 0)}
_LAYER = re.compile(r"^bert\.encoder\.layers\.(\d+)\.")


def _check_sizes(config: BertConfig, weights: dict[str, torch.Tensor], config_file: Path, overrides: dict,
                 shapes: bool = True) -> None:
    """A size the config gives that the weights do not hold names the config's key and both values (a weight's
    shape, or "lacks 36 encoder weights", named no key); one the caller gave is named as its keyword. Fewer layers
    than the weights hold is a warning (a model cut to its first layers), and `shapes=False`
    (ignore_mismatched_sizes) starts weights of other shapes afresh. num_attention_heads cannot be checked: the
    weights are the same however the heads split them."""
    held = {key: weights[name].shape[dim] for key, (name, dim) in SIZES_IN_WEIGHTS.items()
            if shapes and name in weights}
    layers = {match[1] for name in weights if (match := _LAYER.match(name))}
    if layers and config.num_hidden_layers > len(layers):
        held["num_hidden_layers"] = len(layers)
    for key, value in held.items():
        given = getattr(config, key)
        if given == value:
            continue
        if key in overrides:
            raise CheckpointError(f"from_pretrained({key}={given!r}): the weights of {config_file.parent} hold {value}")
        file_key = next((k for k, ours in DISTILBERT_KEYS.items() if ours == key), key) if config.is_distilbert else key
        raise CheckpointError(f"{config_file}: {file_key} is {given}, but the weights beside it hold {value}; the "
                              f"config must describe these weights")


def _load_device(device_map) -> torch.device:
    """transformers' `device_map=`: one device for the whole model ("cpu", "cuda:0", 0, a torch.device), or "auto":
    the GPU where there is one. A map of module names to devices (a model split over devices) is refused."""
    from bertforge.training.distributed import resolve_device

    if device_map is None:
        return torch.device("cpu")
    if device_map == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device_map, (str, int, torch.device)) or isinstance(device_map, bool):
        raise ConfigError(f"from_pretrained(device_map={device_map!r}): give one device (\"cpu\", \"cuda:0\") or "
                          f"\"auto\"; bertforge does not split a model over devices")
    return resolve_device(device_map, argument=f"from_pretrained(device_map={device_map!r})")


def _load_dtype(dtype, config: BertConfig) -> torch.dtype:
    """transformers' `dtype=` (or `torch_dtype=`) keyword: a floating torch dtype or its name, or "auto" for
    the type the weights were saved in (config.json's `dtype`; float32 where it says none)."""
    if dtype == "auto":
        dtype = config.extra.get("dtype") or config.extra.get("torch_dtype") or "float32"
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"from_pretrained(dtype=...): give torch.float32, torch.bfloat16, torch.float16 or "
                          f"\"auto\", got {dtype!r}")
    return dtype


def save_model(model, directory: str | Path, tokenizer=None) -> None:
    """Write config.json, model.safetensors (atomically) and, given a tokenizer, vocab.txt. Weights
    are stored in the model's own dtype, as transformers does: `model.half().save_pretrained(...)`
    halves the file, and loaders cast back to float32."""
    if tokenizer is not None and not callable(getattr(tokenizer, "save_pretrained", None)):  # before any file
        raise InputError(f"save_pretrained(tokenizer={tokenizer!r}): give the model's tokenizer (a BertTokenizer) "
                         f"or None")
    if any(name.endswith("weight_scale") for name in model.state_dict()):
        raise CheckpointError(f"{directory}: an int8 model is not saved (its weights are packed for this CPU's "
                              f"kernels); save the float32 model it was made from")
    directory = output_folder(directory)
    weights = bertforge_to_hf(_state_dict(model), bare_encoder=model.base_model is model,
                              model_type=model.config.model_type)
    weights = {name: tensor.detach().contiguous().cpu() for name, tensor in weights.items()}
    with atomic_path(directory / "model.safetensors") as temporary:
        save_file(weights, temporary, metadata={"format": "pt"})
    model.config.save(directory, architecture=model.architecture, dtype=str(model.dtype).removeprefix("torch."))
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


SENTENCE_POOLINGS = ("cls", "mean", "max")


def sentence_transformers_pooling(directory: Path) -> tuple[str, bool] | None:
    """(pooling, normalize) of a sentence-transformers export (the Pooling and Normalize modules its
    modules.json lists), or None for a checkpoint that is not one or cannot be read."""
    modules_file = Path(directory) / "modules.json"
    if not modules_file.is_file():
        return None
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        pooling = "mean"  # sentence-transformers' own default
        for module in modules:
            config_file = Path(directory) / module.get("path", "") / "config.json"
            if module.get("type", "").endswith("Pooling") and config_file.is_file():
                config = json.loads(config_file.read_text(encoding="utf-8"))
                pooling = next((name for name in SENTENCE_POOLINGS if config.get(f"pooling_mode_{name}_token")
                                or config.get(f"pooling_mode_{name}_tokens")), "mean")
        return pooling, any(m.get("type", "").endswith("Normalize") for m in modules)
    except (OSError, ValueError, AttributeError):
        return None
