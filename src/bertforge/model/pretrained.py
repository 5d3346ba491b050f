"""What every model shares, as in transformers' `PreTrainedModel`: loading and saving in the Hugging
Face layout, BERT's initialisation, and the calls users port from transformers (the embedding tables,
`resize_token_embeddings`, `num_parameters`, activation checkpointing, `return_dict=False` in every model's
forward)."""

from __future__ import annotations

import functools
import operator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from bertforge.errors import ConfigError
from bertforge.model.config import BertConfig

if TYPE_CHECKING:
    from bertforge.model.bert import BertModel


class BertPreTrainedModel(nn.Module):
    """The base of every model: `from_pretrained`/`save_pretrained` (see `bertforge.model.checkpoint`),
    BERT's initialisation, and `base_model` (the `BertModel`)."""

    architecture = "BertModel"  # the transformers class a saved checkpoint loads into
    base_model_prefix = "bert"
    config_class = BertConfig
    main_input_name = "input_ids"
    name_or_path = ""  # the folder `from_pretrained` read
    supports_gradient_checkpointing = True

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.forward = _taking_return_dict(cls.__dict__["forward"])

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, *, fresh_head: bool = False, **config_overrides):
        """Load from a Hugging Face style directory (`config.json` + `model.safetensors` or
        `pytorch_model.bin`); None loads the bundled default model. `fresh_head` keeps only the
        encoder's weights, so a model fine-tuned for one task can start another."""
        from bertforge.model.checkpoint import load_model

        return load_model(cls, path, fresh_head=fresh_head, **config_overrides)

    def save_pretrained(self, directory: str | Path, tokenizer=None, *, is_main_process: bool = True,
                        safe_serialization: bool = True, **writer_options) -> None:
        """config.json and model.safetensors (see `checkpoint.save_model`). transformers' `is_main_process` is
        honoured; `save_function` and `max_shard_size` (Accelerate's loop passes them) change nothing here, as
        the weights are always one safetensors file."""
        from bertforge.model.checkpoint import save_model

        unknown = set(writer_options) - {"save_function", "max_shard_size"}
        if unknown or not safe_serialization:
            raise ConfigError(f"save_pretrained({', '.join(sorted(unknown)) or 'safe_serialization=False'}): "
                              f"bertforge writes model.safetensors only")
        if is_main_process:
            save_model(self, directory, tokenizer)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Our parameter names, or transformers' (the state dict of transformers' model of this class, e.g. its
        `pytorch_model.bin` read with `torch.load`), converted as `from_pretrained` converts a folder."""
        from bertforge.model.checkpoint import from_hf_state_dict

        own = set(self.state_dict())
        if not set(state_dict) <= own:  # some names are not ours: transformers' if converting them finds more
            converted = from_hf_state_dict(self, state_dict)
            if len(own.intersection(converted)) > len(own.intersection(state_dict)):
                state_dict = converted
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def init_head_weights(self) -> None:
        for name, module in self.named_children():
            if name != self.base_model_prefix:
                module.apply(lambda m: init_weights(m, self.config.initializer_range))

    @contextmanager
    def evaluating(self):
        """Eval mode (no dropout) inside the block; the caller's mode, training or not, after it."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    @property
    def base_model(self) -> BertModel:
        return getattr(self, self.base_model_prefix, self)

    @property
    def device(self) -> torch.device:
        return self.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.get_input_embeddings().weight.dtype

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding table, (vocab_size, hidden)."""
        return self.base_model.embeddings.word

    def set_input_embeddings(self, embeddings: nn.Embedding) -> None:
        """Replace the token embedding table. As in transformers, a tied MLM head keeps the old one until
        `tie_weights()`."""
        if not isinstance(embeddings, nn.Embedding) or embeddings.embedding_dim != self.config.hidden_size:
            raise ConfigError(f"set_input_embeddings: give an nn.Embedding of width {self.config.hidden_size} "
                              f"(hidden_size), got {embeddings!r}")
        self.base_model.embeddings.word = embeddings

    def get_output_embeddings(self) -> nn.Module | None:
        """The module whose `weight` (vocab_size, hidden) projects onto the vocabulary: the token embedding table
        where the MLM head is tied to it, else the head's own decoder; None for a model without an MLM head."""
        head = next((module for module in self.modules() if hasattr(module, "resize_vocabulary")), None)
        return None if head is None else head.projection

    def tie_weights(self, **_) -> None:
        """Tie the MLM head to the current token embedding table again (after `set_input_embeddings`); with
        `tie_word_embeddings: false` in the config the head keeps its own decoder."""
        for module in self.modules():
            if hasattr(module, "word_embeddings"):
                module.word_embeddings = self.get_input_embeddings()

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None,
                                        every_n_layers: int = 1, offload: bool = False) -> None:
        """Keep only each layer's input during the forward pass and recompute the rest in the backward pass:
        memory for one layer's activations instead of all of them, for about a fifth more time per step
        (BERT-base: docs/benchmarks.md).
        `activation_checkpointing_kwargs` go to `torch.utils.checkpoint.checkpoint` (non-reentrant by default,
        which needs no input gradients); `every_n_layers` checkpoints every n-th layer; `offload` keeps the
        saved inputs in host memory. transformers' call, and its older name `gradient_checkpointing_enable`."""
        options = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        every_n_layers = _positive_int(every_n_layers, "every_n_layers", "activation_checkpointing_enable")

        def run_checkpointed(layer, *inputs):
            if not offload:
                return checkpoint(layer, *inputs, **options)
            with torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()):
                return checkpoint(layer, *inputs, **options)

        self.base_model.encoder.checkpoint = run_checkpointed
        self.base_model.encoder.checkpoint_every_n_layers = every_n_layers

    def activation_checkpointing_disable(self) -> None:
        self.base_model.encoder.checkpoint = None

    @property
    def is_activation_checkpointing(self) -> bool:
        return self.base_model.encoder.checkpoint is not None

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **options) -> None:
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **options)

    gradient_checkpointing_disable = activation_checkpointing_disable
    is_gradient_checkpointing = is_activation_checkpointing

    def can_generate(self) -> bool:
        return False  # an encoder: no text generation

    def get_memory_footprint(self) -> int:
        """Bytes of the parameters and buffers, each counted once."""
        tensors = {id(t): t for t in (*self.parameters(), *self.buffers())}
        return sum(t.numel() * t.element_size() for t in tensors.values())

    def enable_input_require_grads(self) -> None:
        """The token vectors require gradients even where the embeddings are frozen (adapters such as LoRA), so
        that reentrant activation checkpointing passes gradients back through the layers; as in transformers."""
        def requiring_grad(module, inputs, output):
            output.requires_grad_(True)

        self._input_grads_hook = self.get_input_embeddings().register_forward_hook(requiring_grad)

    def disable_input_require_grads(self) -> None:
        hook = self.__dict__.pop("_input_grads_hook", None)
        if hook is not None:
            hook.remove()

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters counted once each (a tied MLM decoder is the embedding table), as transformers counts."""
        embeddings = {id(module.weight) for module in self.modules() if isinstance(module, nn.Embedding)}
        return sum(p.numel() for p in self.parameters()
                   if (p.requires_grad or not only_trainable) and not (exclude_embeddings and id(p) in embeddings))

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """Give the vocabulary `new_num_tokens` rows (rounded up to `pad_to_multiple_of`), as transformers does
        after `tokenizer.add_tokens`: old rows are kept, rows past the end dropped, and new rows set to the mean
        of the old ones (`mean_resizing`; transformers adds a spread of about 1e-9 of their covariance) or drawn
        from normal(0, initializer_range). An MLM head's output bias and untied decoder follow."""
        embeddings = self.get_input_embeddings()
        new_num_tokens = _positive_int(new_num_tokens, "new_num_tokens", "resize_token_embeddings")
        pad_to_multiple_of = _positive_int(pad_to_multiple_of, "pad_to_multiple_of", "resize_token_embeddings")
        rows = embeddings.num_embeddings if new_num_tokens is None else new_num_tokens
        if pad_to_multiple_of is not None:
            rows = -(-rows // pad_to_multiple_of) * pad_to_multiple_of
        if embeddings.padding_idx is not None and rows <= embeddings.padding_idx:
            raise ConfigError(f"resize_token_embeddings({rows}): the vocabulary would lose its padding token "
                              f"(pad_token_id {embeddings.padding_idx}), and the saved model could not be loaded")
        if rows == embeddings.num_embeddings:
            return embeddings
        std = self.config.initializer_range
        embeddings.weight = resized_rows(embeddings.weight, rows, mean_resizing, std)
        embeddings.num_embeddings = rows
        for module in self.modules():
            if hasattr(module, "resize_vocabulary"):  # a head projecting onto the vocabulary (heads.py)
                module.resize_vocabulary(rows, mean_resizing, std)
        self.config.vocab_size = rows
        return embeddings


def _positive_int(value, name: str, call: str) -> int | None:
    """None, or a whole number >= 1 given as a Python, NumPy or 0-d tensor integer."""
    if value is None:
        return None
    try:
        number = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        number = None
    if number is None or number < 1:
        raise ConfigError(f"{call}({name}={value!r}): give a positive whole number")
    return number


def _taking_return_dict(forward):
    """transformers' `return_dict=False` (or the config's): the output as a plain tuple of its fields that are set
    (`to_tuple`)."""
    @functools.wraps(forward)
    def forward_taking_return_dict(self, *args, return_dict: bool | None = None, **kwargs):
        out = forward(self, *args, **kwargs)
        return out if (self.config.return_dict if return_dict is None else return_dict) else out.to_tuple()

    return forward_taking_return_dict


def resized_rows(weight: nn.Parameter, rows: int, mean_resizing: bool, std: float) -> nn.Parameter:
    """`weight` cut or grown to `rows` rows. New rows: the old rows' mean, or else normal(0, std) for a
    matrix and zeros for a bias (transformers' two initialisations)."""
    added = rows - weight.shape[0]
    with torch.no_grad():
        if added <= 0:
            data = weight[:rows].clone()
        else:
            if mean_resizing:
                new = weight.float().mean(0).expand(added, *weight.shape[1:]).to(weight.dtype)
            elif weight.dim() > 1:
                new = weight.new_empty(added, *weight.shape[1:]).normal_(0.0, std)
            else:
                new = weight.new_zeros(added)
            data = torch.cat([weight, new])
    return nn.Parameter(data, requires_grad=weight.requires_grad)


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
