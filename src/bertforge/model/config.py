"""BertConfig: the hyper-parameters of a BERT encoder, read from and written to the Hugging Face
`config.json`, so a checkpoint moves between bertforge and transformers unchanged."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from bertforge.errors import ConfigError, is_number, is_whole_number
from bertforge.io.atomic import output_folder, write_text
from bertforge.io.settings_files import read_json_object
from bertforge.paths import HUB_KEYWORDS

log = logging.getLogger(__name__)

# Named sizes of the BERT paper and the 24-model grid of "Well-Read Students Learn Better".
NAMED_SIZES = {
    "tiny": (2, 128),
    "mini": (4, 256),
    "small": (4, 512),
    "medium": (8, 512),
    "base": (12, 768),
    "large": (24, 1024),
}
GRID_LAYERS = range(2, 13, 2)
GRID_HIDDEN = (128, 256, 512, 768)
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
CLASSIFIER_POOLINGS = ("cls", "mean")
# DistilBERT's config.json spells the same hyper-parameters its own way (transformers' DistilBertConfig).
DISTILBERT_KEYS = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
                   "hidden_dim": "intermediate_size", "dropout": "hidden_dropout_prob",
                   "attention_dropout": "attention_probs_dropout_prob", "activation": "hidden_act"}
MODEL_TYPES = ("bert", "distilbert")
# transformers' keys for variants this encoder does not compute: a checkpoint that sets one is refused,
# not run as a plain encoder with different outputs. Each maps to the only value supported.
UNSUPPORTED_VARIANTS = {"is_decoder": False, "add_cross_attention": False, "position_embedding_type": "absolute"}
# Keys that describe the saved weights, not the network: `checkpoint.save_model` writes the true one.
WEIGHT_DTYPE_KEYS = ("dtype", "torch_dtype")
# Dropout rates of the heads, checked where config.json sets them: transformers' key, then DistilBERT's.
HEAD_DROPOUT_KEYS = ("classifier_dropout", "seq_classif_dropout", "qa_dropout")
# transformers' config attributes that ported code and tools read, with transformers' values where config.json does
# not set them; kept among the unused keys. The output flags are the forward calls' defaults, as there.
TRANSFORMERS_ATTRIBUTES = {"output_attentions": False, "output_hidden_states": False, "return_dict": True,
                           "is_encoder_decoder": False, "use_cache": True, "classifier_dropout": None,
                           "architectures": None, **UNSUPPORTED_VARIANTS}


def numbered_labels(count, call: str) -> dict[int, str]:
    """transformers' labels for a count alone: LABEL_0 .. LABEL_{count-1}; `call` names the caller in the error."""
    if not is_whole_number(count, 1):
        raise ConfigError(f"{call}: give a positive whole number")
    return {i: f"LABEL_{i}" for i in range(count)}


def check_label2id(id2label: dict[int, str] | None, label2id) -> None:
    """transformers' label2id, given beside id2label, as its inverse only: the names a head answers with are
    id2label's. transformers keeps a pair that disagree, and replaces label2id alone with LABEL_0, LABEL_1, so
    either would change the labels without a word. `id2label` None: it was not given."""
    if label2id is None:
        return
    if not isinstance(label2id, dict) or not all(type(i) is int or isinstance(i, str) and i.lstrip("-").isdigit()
                                                 for i in label2id.values()):
        raise ConfigError(f"config key 'label2id' must map label names to numbers, got {label2id!r}")
    given = {str(name): int(i) for name, i in label2id.items()}
    if id2label is None:
        raise ConfigError(f"config key 'label2id' without 'id2label': give the labels as id2label="
                          f"{dict(sorted((i, name) for name, i in given.items()))!r}, of which label2id is the inverse "
                          f"(transformers ignores label2id alone and names the labels LABEL_0, LABEL_1, ...)")
    problems = [f"id2label names {i} {name!r}, label2id " + (f"gives it {given[name]}" if name in given else "lacks it")
                for i, name in id2label.items() if given.get(name) != i]
    problems += [f"label2id has {name!r}, which id2label does not name" for name in given
                 if name not in id2label.values()]
    if problems:
        raise ConfigError(f"config keys 'id2label' and 'label2id' disagree: {problems[0]}; label2id must be id2label's "
                          f"inverse (or leave it out)")


def _as_json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # "distilbert": the same encoder without token types or pooler (type_vocab_size 0); its
    # checkpoints use their own names, mapped in `checkpoint`.
    model_type: str = "bert"
    # What a sentence classifier reads: the pooler on [CLS] (BERT's), or the mean of the last layer's
    # token vectors (transformers' ModernBERT has the same key); BERT in transformers knows only "cls".
    classifier_pooling: str = "cls"
    # Task heads (fine-tuning): label names in the Hugging Face spelling.
    id2label: dict[int, str] | None = None
    # Keys we do not use (architectures, model_type, transformers_version, ...) are kept
    # so that saving a loaded config writes them back unchanged.
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:  # first: another family's keys would fail the checks below
            raise ConfigError(f"config key 'model_type' must be one of {MODEL_TYPES}, got {self.model_type!r}")
        for f in dataclasses.fields(self):
            if f.name in ("extra", "id2label"):
                continue
            value = getattr(self, f.name)
            if f.name == "pad_token_id" and value is None:  # no padding row, as transformers builds it
                continue
            expected = {"int": int, "float": (int, float), "str": str}[f.type]
            if isinstance(value, bool) or not isinstance(value, expected):
                raise ConfigError(f"config key {f.name!r} must be {f.type}, got {value!r}")
            if f.type == "float":
                setattr(self, f.name, float(value))
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"config key 'hidden_act' must be one of {ACTIVATIONS}, got {self.hidden_act!r}")
        if self.classifier_pooling not in CLASSIFIER_POOLINGS:
            raise ConfigError(f"config key 'classifier_pooling' must be one of {CLASSIFIER_POOLINGS}, "
                              f"got {self.classifier_pooling!r}")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) < 1 and not (name == "type_vocab_size" and self.is_distilbert):
                raise ConfigError(f"config key {name!r} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of "
                              f"num_attention_heads {self.num_attention_heads}")
        # Out of range, these fail deep inside torch (nn.Dropout, nn.Embedding) or give NaN vectors (eps).
        rates = {name: getattr(self, name) for name in ("hidden_dropout_prob", "attention_probs_dropout_prob")}
        rates.update({key: self.extra[key] for key in HEAD_DROPOUT_KEYS if self.extra.get(key) is not None})
        for name, rate in rates.items():
            if not is_number(rate) or not 0 <= rate < 1:
                raise ConfigError(f"config key {name!r} must be in [0, 1), got {rate!r}")
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"config key 'layer_norm_eps' must be positive, got {self.layer_norm_eps!r}")
        if self.initializer_range < 0:
            raise ConfigError(f"config key 'initializer_range' must not be negative, got {self.initializer_range!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"config key 'pad_token_id' must be a token id below vocab_size {self.vocab_size}, "
                              f"got {self.pad_token_id}")
        if self.is_distilbert and self.type_vocab_size:
            raise ConfigError(f"DistilBERT has no token types: type_vocab_size must be 0, got {self.type_vocab_size}")
        for key, supported in UNSUPPORTED_VARIANTS.items():
            if self.extra.get(key, supported) != supported:
                raise ConfigError(f"config key {key!r} is {json.dumps(self.extra[key])}: this variant is not "
                                  f"supported (bertforge's BERT is an encoder with {key} {json.dumps(supported)})")
        self.problem_type = self.extra.get("problem_type")  # checked by the setter
        if not isinstance(self.tie_word_embeddings, bool):
            raise ConfigError(f"config key 'tie_word_embeddings' must be true or false, got "
                              f"{self.tie_word_embeddings!r}")
        if self.id2label is not None:
            if not isinstance(self.id2label, dict) or not all(str(k).lstrip("-").isdigit() for k in self.id2label):
                raise ConfigError(f"config key 'id2label' must map label numbers to names, got {self.id2label!r}")
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}

    def __getattr__(self, name: str):  # only where the attribute is not found otherwise
        extra = self.__dict__.get("extra", {})
        if name in extra or name in TRANSFORMERS_ATTRIBUTES:  # transformers reads every key as an attribute
            return extra.get(name, TRANSFORMERS_ATTRIBUTES.get(name))
        raise AttributeError(f"'BertConfig' object has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        # an unused key changed as an attribute is saved changed (a property's setter checks its own)
        unused_key = name in self.__dict__.get("extra", ()) and not hasattr(BertConfig, name)
        if name in TRANSFORMERS_ATTRIBUTES or unused_key:
            if name in UNSUPPORTED_VARIANTS and value != UNSUPPORTED_VARIANTS[name]:
                raise ConfigError(f"config.{name} = {value!r}: this variant is not supported (bertforge's BERT is "
                                  f"an encoder with {name} {json.dumps(UNSUPPORTED_VARIANTS[name])})")
            self.extra[name] = value
        else:
            super().__setattr__(name, value)

    use_return_dict = property(lambda self: self.return_dict)

    @property
    def is_distilbert(self) -> bool:
        return self.model_type == "distilbert"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def tie_word_embeddings(self) -> bool:
        """Whether the masked-LM head projects onto the token embeddings (BERT's default) or has its own matrix."""
        return self.extra.get("tie_word_embeddings", True)

    @property
    def problem_type(self) -> str | None:
        """transformers' key: how a sequence classifier reads its labels (None: from the labels' type)."""
        return self.extra.get("problem_type")

    @problem_type.setter
    def problem_type(self, value: str | None) -> None:
        if value is not None and value not in PROBLEM_TYPES:
            raise ConfigError(f"config key 'problem_type' must be one of {PROBLEM_TYPES} or None, got {value!r}")
        if value is None:
            self.extra.pop("problem_type", None)
        else:
            self.extra["problem_type"] = value

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @num_labels.setter
    def num_labels(self, count: int) -> None:
        """transformers' rule: that many labels, named LABEL_i (a head built after it has that many outputs)."""
        self.id2label = numbered_labels(count, f"config.num_labels = {count!r}")

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in (self.id2label or {}).items()}

    @classmethod
    def from_size(cls, size: str, **overrides) -> "BertConfig":
        """`tiny`, `mini`, `small`, `medium`, `base`, `large`, or a grid name `L4-H256`
        (heads = H/64, feed-forward = 4H, as in the published grid)."""
        if size in NAMED_SIZES:
            layers, hidden = NAMED_SIZES[size]
        else:
            try:
                l_part, h_part = size.upper().split("-")
                layers, hidden = int(l_part.removeprefix("L")), int(h_part.removeprefix("H"))
            except ValueError:
                raise ConfigError(f"unknown model size {size!r}: use one of {', '.join(NAMED_SIZES)} "
                                  f"or L<layers>-H<hidden> from the grid") from None
            if layers not in GRID_LAYERS or hidden not in GRID_HIDDEN:
                raise ConfigError(f"model size {size!r} is not in the grid: L in {list(GRID_LAYERS)}, "
                                  f"H in {list(GRID_HIDDEN)}")
        settings = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(hidden // 64, 1),
                        intermediate_size=4 * hidden)
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "BertConfig":
        if data.get("model_type") == "distilbert":
            # DistilBERT fixes what its config does not name: no token types, LayerNorm eps 1e-12.
            data = {**{DISTILBERT_KEYS.get(k, k): v for k, v in data.items()}, "type_vocab_size": 0,
                    "layer_norm_eps": 1e-12}
        values, extra = _fields_and_extra(data)
        if "id2label" not in data and type(data.get("num_labels")) is int and data["num_labels"] >= 1:
            values["id2label"] = numbered_labels(data["num_labels"], source)
        try:
            config = cls(**values, extra=extra)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        try:  # a saved model with a stale label2id still loads, in transformers too: its heads answer with id2label
            check_label2id(config.id2label if "id2label" in data else None, data.get("label2id"))
        except ConfigError as e:
            log.warning("%s: %s; the labels are read from id2label, as transformers reads them", source, e)
        return config

    @classmethod
    def from_json_file(cls, path: str | Path) -> "BertConfig":
        return cls.from_dict(read_json_object(path, ConfigError), source=str(path))

    def get_text_config(self, decoder: bool = False) -> "BertConfig":
        """transformers' accessor for multimodal configs, which its Trainer calls: a BERT config is all text."""
        return self

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, **overrides) -> "BertConfig":
        """The config of a model directory (or a file in it), with from_pretrained's keywords applied as a
        model's `from_pretrained` applies them; None: the bundled default model's."""
        from bertforge.model.checkpoint import load_config

        return load_config(path, **overrides)

    def to_dict(self, architecture: str | None = None) -> dict:
        data = {k: v for k, v in self.extra.items() if k not in WEIGHT_DTYPE_KEYS}
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "id2label"):
                data[f.name] = getattr(self, f.name)
        if self.classifier_pooling == "cls":
            del data["classifier_pooling"]  # BERT's own configs have no such key
        if self.is_distilbert:
            ours = {v: k for k, v in DISTILBERT_KEYS.items()}
            data = {ours.get(k, k): v for k, v in data.items() if k not in ("type_vocab_size", "layer_norm_eps")}
            architecture = architecture and "Distil" + architecture  # BertForMaskedLM → DistilBertForMaskedLM
        if self.id2label:
            data["id2label"] = {str(k): v for k, v in self.id2label.items()}
            data["label2id"] = self.label2id
        if architecture:
            data["architectures"] = [architecture]
        return data

    def to_json_string(self) -> str:
        return _as_json(self.to_dict())

    def to_json_file(self, path: str | Path) -> None:
        write_text(path, self.to_json_string())

    def save_pretrained(self, directory: str | Path) -> None:
        """config.json in `directory` (made if missing), as transformers' config saves itself."""
        self.to_json_file(output_folder(directory) / "config.json")

    def update(self, values: dict) -> None:
        """Set several keys at once, each checked as when the config is read."""
        updated = BertConfig.from_dict({**_without_label2id(self.to_dict()), **values})
        self.__dict__.update(updated.__dict__)

    def save(self, directory: str | Path, architecture: str | None = None, dtype: str | None = None) -> None:
        """`dtype` names the saved weights' type ("float16"): transformers 5 loads them as that type."""
        data = self.to_dict(architecture)
        if dtype is not None:
            data["dtype"] = dtype
        write_text(Path(directory) / "config.json", _as_json(data))


def _fields_and_extra(data: dict) -> tuple[dict, dict]:
    """Keys of config.json or of the constructor: (BertConfig's fields, the others, kept in `extra` and saved
    back); num_labels and label2id are id2label's to give, never kept."""
    known = {f.name for f in dataclasses.fields(BertConfig)} - {"extra"}
    values = {k: v for k, v in data.items() if k in known}
    return values, {k: v for k, v in data.items() if k not in known and k not in ("label2id", "num_labels")}


def _without_label2id(data: dict) -> dict:
    """A config's dict to change: its label2id is derived from id2label, which the change may give anew."""
    return {k: v for k, v in data.items() if k != "label2id"}


def _taking_any_key(init):
    """BertConfig(num_labels=3, foo=1) as transformers' constructor takes it: num_labels gives LABEL_0 .. LABEL_2
    (where id2label is not given), label2id must be id2label's inverse, other keys are kept as a loaded
    config.json's unused keys are."""
    @functools.wraps(init)
    def __init__(self, *args, extra: dict | None = None, **keys):
        values, unused = _fields_and_extra(keys)
        if "num_labels" in keys and keys.get("id2label") is None:
            values["id2label"] = numbered_labels(keys["num_labels"], f"BertConfig(num_labels={keys['num_labels']!r})")
        init(self, *args, **values, extra={**unused, **(extra or {})})
        check_label2id(self.id2label if keys.get("id2label") is not None else None, keys.get("label2id"))

    return __init__


BertConfig.__init__ = _taking_any_key(BertConfig.__init__)


def _check_override_names(config: BertConfig, overrides: dict) -> None:
    """A mistyped keyword (hidden_dropout=0.2) would land in the config's unused keys and change nothing."""
    # DistilBERT's own spellings (dim, n_layers) only where from_dict maps them: on a DistilBERT config
    known = ({f.name for f in dataclasses.fields(BertConfig)} | set(config.extra) | set(TRANSFORMERS_ATTRIBUTES)
             | {"problem_type"} | (set(DISTILBERT_KEYS) if config.is_distilbert else set()))
    for name in overrides:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"from_pretrained({name}=...): not a config key of this model{hint}")


def with_overrides(config: BertConfig, overrides: dict) -> BertConfig:
    """`config` with from_pretrained's keywords applied, by transformers' rules for num_labels and label2id.
    `config=` replaces the file's config, as there; attn_implementation (the model picks) and the hub keywords
    (the folder is local) change nothing, as the tokenizer's."""
    if "config" in overrides:
        config = overrides.pop("config")
        if not isinstance(config, BertConfig):
            raise ConfigError(f"from_pretrained(config=...) takes a bertforge BertConfig, got {type(config).__name__}")
    for key in ("attn_implementation", *HUB_KEYWORDS):
        overrides.pop(key, None)
    if "num_labels" in overrides:  # transformers' keyword: that many labels, named LABEL_i
        count = overrides.pop("num_labels")
        overrides = {"id2label": numbered_labels(count, f"from_pretrained(num_labels={count!r})"), **overrides}
    if "label2id" in overrides:  # transformers' course passes both; the names come from id2label
        label2id = overrides.pop("label2id")
        id2label = overrides.get("id2label", config.id2label) or {}
        if not isinstance(label2id, dict) or {str(k): v for k, v in label2id.items()} != \
                {str(name): int(i) for i, name in dict(id2label).items()}:
            raise ConfigError("from_pretrained(label2id=...) must be the inverse of id2label (give id2label alone)")
    if not overrides:
        return config
    _check_override_names(config, overrides)
    try:
        return BertConfig.from_dict({**_without_label2id(config.to_dict()), **overrides})
    except ConfigError as error:  # the file's config was valid: the caller's keywords are at fault
        raise _override_error(config, overrides, error) from None


def _override_error(config: BertConfig, overrides: dict, error: ConfigError) -> ConfigError:
    """`error` named as the caller's keyword that gives it alone, else as all of them (they disagree together)."""
    message = str(error).removeprefix("config: ")  # from_dict's name for a config read from no file
    for name, value in overrides.items():
        try:
            BertConfig.from_dict({**_without_label2id(config.to_dict()), name: value})
        except ConfigError as alone:
            if str(alone) == str(error):
                return ConfigError(f"from_pretrained({name}={value!r}): "
                                   + message.removeprefix(f"config key {name!r} "))
    given = ", ".join(f"{name}={value!r}" for name, value in overrides.items())
    return ConfigError(f"from_pretrained({given}): {message}")
