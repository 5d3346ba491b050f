"""What every pipeline shares: a model and its tokenizer (loaded as `loading` says), batching
by length (outputs come back in input order; optionally several batches at once on the CPU), truncation
that is counted and reported, and pooling of the unpadded forward pass (`BertModel.forward_unpadded`) per
sequence.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bertforge.errors import CheckpointError, InputError, is_whole_number
from bertforge.io.settings_files import read_json_object
from bertforge.model import BertModel, UnpaddedOutput, default_model_path
from bertforge.model.checkpoint import model_folder
from bertforge.paths import described, model_path
from bertforge.pipelines.loading import (LoadedCheckpoint, apply_dtype, check_dtype, load_for_task, model_tasks,
                                         resolve_dtype)
from bertforge.progress import progress_bar
from bertforge.tokenization import BertTokenizer
from bertforge.tokenization.truncation import MIN_LENGTH, encode_within, is_sequence_length
from bertforge.training.distributed import resolve_device


DEFAULT_BATCH_SIZE = 32


def as_list(inputs, name: str) -> tuple[list[str], bool]:
    """(`inputs` as a list of texts, whether one text was given), or an error naming the item at fault."""
    if isinstance(inputs, str):
        return [inputs], True
    if not isinstance(inputs, (list, tuple)):
        raise InputError(f"{name} must be a string or a list of strings, got {type(inputs).__name__}")
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            raise InputError(f"{name}[{i}]: expected a string, got {type(text).__name__}")
    return list(inputs), False


@dataclass
class Encoded:
    """One tokenized input ready for a batch."""

    ids: list[int]
    type_ids: list[int]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]


def check_max_length(max_length, positions: int, model) -> int:
    """--max-length as every command and pipeline takes it: [CLS], a piece and [SEP] at least, and no more
    than the positions of `model` (its folder, named in the message)."""
    if not is_sequence_length(max_length) or max_length > positions:
        raise InputError(f"--max-length {max_length!r}: the model {model} reads {MIN_LENGTH} to {positions} tokens")
    return max_length


# transformers' pipelines pass these on to their tokenizer; ours read every text within max_length.
TOKENIZER_OPTIONS = ("truncation", "padding", "max_length")


class Pipeline:
    """Base class: subclasses set `task`, `model_class`, the head they need, and implement `__call__`.

    `loaded` (from `load_checkpoint`) shares an already loaded model instead of loading `model`.
    `parallel_batches` (CPU only): run that many batches at once, splitting torch's intra-op threads
    between them. Short inputs make small matrices, which two threads split worse than they run two
    batches side by side (docs/benchmarks.md). With N threads, N batches at once give the vectors of a
    one-thread run bit for bit (two threads split a matrix product's sums differently: ~1e-7)."""

    task = "feature-extraction"
    model_class = BertModel
    head_prefix: tuple[str, ...] | None = None  # a missing weight with one of these prefixes: no head
    head_name: str | None = None
    default_model: Callable[[], Path] = staticmethod(default_model_path)
    side_by_side = True  # batches go through `in_length_order`, which can run them at once
    truncation_hint = ""  # what the warning about texts cut to max_length adds: how to read them whole

    def __init_subclass__(cls, **kwargs):
        """Each task's `__call__` takes the options given when the pipeline was made as its defaults, as
        transformers' `pipeline("token-classification", aggregation_strategy="simple")` does."""
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("__call__")
        if call is not None:
            cls.call_parameters = inspect.signature(call).parameters  # once: the check runs on every call
            @functools.wraps(call)
            def with_defaults(self, *args, **options):
                if type(self).__call__ is with_defaults:  # not a subclass's super().__call__, which has its own
                    self.check_call_options(options, at_call=True)
                    options = {**self.call_defaults, **options}
                return call(self, *args, **options)
            cls.__call__ = with_defaults

    def __init__(self, model: str | Path | nn.Module | None = None, device: str | None = None,
                 dtype: str = "float32", batch_size: int = DEFAULT_BATCH_SIZE, max_length: int | None = None,
                 progress: bool = False, loaded: LoadedCheckpoint | None = None, parallel_batches: int = 1,
                 tokenizer: str | Path | BertTokenizer | None = None, **call_defaults):
        self.call_defaults = self.check_call_options(call_defaults, at_call=False)
        if isinstance(device, int) and not isinstance(device, bool) and device < 0:  # transformers' -1: the CPU
            device = "cpu"  # (another number is a GPU's, as resolve_device reads it)
        if isinstance(dtype, torch.dtype):  # as transformers takes it: torch.float32 is "float32"
            dtype = str(dtype).removeprefix("torch.")
        if not is_whole_number(batch_size, 1):
            raise InputError(f"--batch-size must be a positive integer, got {batch_size!r}")
        if not is_whole_number(parallel_batches, 1):
            raise InputError(f"--parallel-batches must be a positive integer, got {parallel_batches!r}")
        if parallel_batches > 1 and not self.side_by_side:
            raise InputError(f"--parallel-batches: {self.task} runs one batch at a time")
        check_dtype(dtype)  # before the loading, which can take a while
        if loaded is not None:
            if self.task not in model_tasks(loaded.model):
                raise CheckpointError(f"{loaded.path}: {self.task} needs a {self.head_name}, and this checkpoint "
                                      f"has none; it can do: {', '.join(loaded.tasks)}")
            path, self.device, self.dtype, self.tokenizer = loaded.path, loaded.device, loaded.dtype, loaded.tokenizer
            self.model = loaded.model
        elif isinstance(model, nn.Module):
            path = None
            self.model, self.device, self.dtype = self.model_in_memory(model, device, dtype, tokenizer)
        else:
            given = model_path(model) if model is not None else self.default_model()
            path, _ = model_folder(given)  # before its tokenizer; a file of it, or Google's prefix, names the folder
            self.device = resolve_device("cpu" if device is None else device)
            self.dtype = resolve_dtype(dtype, self.device)  # what runs ("auto" says bfloat16 or float32)
            if tokenizer is None:
                self.tokenizer = BertTokenizer.from_pretrained(path)
            self.model = apply_dtype(load_for_task(self.model_class, given, self.task, self.head_prefix,
                                                   self.head_name).eval(), dtype, self.device)
        if tokenizer is not None:  # transformers' keyword: a tokenizer other than the model folder's
            if not isinstance(tokenizer, (BertTokenizer, str, os.PathLike)):
                raise InputError(f"tokenizer: give a bertforge BertTokenizer or its folder path, got "
                                 f"{described(tokenizer)}")
            self.tokenizer = tokenizer if isinstance(tokenizer, BertTokenizer) else BertTokenizer.from_pretrained(tokenizer)
            if len(self.tokenizer) > self.model.config.vocab_size:
                raise InputError(f"tokenizer: {len(self.tokenizer)} tokens, more than the model's "
                                 f"{self.model.config.vocab_size} embeddings (resize_token_embeddings)")
        if parallel_batches > 1 and self.device.type != "cpu":
            raise InputError(f"--parallel-batches runs on the CPU only, got --device {self.device}")
        self.parallel_batches = parallel_batches
        self.model_path = path
        self.config = self.model.config
        limit = min(self.config.max_position_embeddings, self.tokenizer.model_max_length)
        if max_length is None:
            max_length = self.default_max_length(path, limit)
        self.max_length = check_max_length(max_length, self.config.max_position_embeddings,
                                           path if path is not None else "in memory")
        self.batch_size = batch_size
        self.progress = progress
        self.truncated = 0  # texts truncated by the last call
        self.token_counts: list[int] = []  # tokens each text of the last call gave the model, after truncation

    def model_in_memory(self, model: nn.Module, device, dtype: str, tokenizer) -> tuple[nn.Module, torch.device, str]:
        """transformers' `pipeline(task, model=model, tokenizer=tokenizer)` with a model object (one just
        fine-tuned): used as it is, in eval mode, moved only where `device` is given."""
        from bertforge.model import BertPreTrainedModel

        if not isinstance(model, BertPreTrainedModel):
            raise InputError(f"model: give a bertforge model (BertModel, BertForSequenceClassification, ...) or its "
                             f"folder, got {type(model).__name__}")
        tasks = model_tasks(model)
        if self.task not in tasks:
            raise InputError(f"model: {self.task} needs a {self.head_name}, and this {type(model).__name__} has "
                             f"none; it can do: {', '.join(tasks)}")
        if tokenizer is None:
            raise InputError(f"pipeline({self.task!r}, model=<a {type(model).__name__}>) needs tokenizer= too (a "
                             f"BertTokenizer or its folder): a model in memory has no folder to read one from")
        if dtype != "float32":
            raise InputError(f"dtype={dtype!r} applies to a model the pipeline loads; convert a model in memory "
                             f"yourself (model.to(torch.bfloat16))")
        device = model.device if device is None else resolve_device(device)
        model = model.to(device).eval()
        return model, device, "bfloat16" if model.dtype == torch.bfloat16 else "float32"

    def check_call_options(self, options: dict, at_call: bool) -> dict:
        """Options of the call, given to the call or as the pipeline's defaults: an unknown one is named with
        those it takes (a TypeError from Python's call would not say them)."""
        if not options:
            return options
        accepted = self.call_parameters
        unknown = [name for name in options if name not in accepted or name == "self"
                   or accepted[name].kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        if unknown:
            which = " in its call, which does not take it" if at_call else ", which neither the pipeline nor its call takes"
            hint = ("; every text is cut to the pipeline's max_length (pipeline(..., max_length=N)), with a warning "
                    "counting them" if unknown[0] in TOKENIZER_OPTIONS else "")
            raise InputError(f"pipeline({self.task!r}) got {unknown[0]!r}{which}; its call takes: "
                             f"{', '.join(n for n in accepted if n != 'self')}{hint}")
        return options

    @staticmethod
    def default_max_length(path: Path | None, limit: int) -> int:
        """The model's own limit, or a sentence-transformers model's max_seq_length where it has one."""
        config = path / "sentence_bert_config.json" if path is not None else None
        if config is None or not config.exists():
            return limit
        length = read_json_object(config, CheckpointError).get("max_seq_length", limit)
        if not is_sequence_length(length):
            raise CheckpointError(f"{config}: max_seq_length must be a whole number of at least {MIN_LENGTH}, "
                                  f"got {length!r}")
        return min(length, limit)

    @property
    def bert(self) -> BertModel:
        return self.model.base_model

    # --- tokenizing ------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[Encoded]:
        """Tokenize, truncating to `max_length` and warning with the count of texts that were cut. Every
        caller's texts have passed `as_list` (or the pair checks), and the tokenizer checks them again."""
        if pairs is not None and self.max_length < 5:  # truncation would leave a sentence with no piece at all
            raise InputError(f"--max-length {self.max_length}: a pair of sentences needs at least 5 tokens "
                             f"([CLS] A [SEP] B [SEP])")
        rows, self.truncated = encode_within(self.tokenizer, texts, pairs, self.max_length, self.truncation_hint)
        self.token_counts = [len(r.ids) for r in rows]
        return [Encoded(r.ids, r.type_ids, r.offsets, r.word_ids) for r in rows]

    def encode_windows(self, texts: Sequence[str], stride: int) -> list[list[Encoded]]:
        """Each text as windows of `max_length` tokens, each window's text overlapping the one before by
        `stride` pieces: the tokenizer's own overflowing windows (`return_overflowing_tokens`, as transformers'
        pipelines read long texts), offsets and word ids counted in the whole text. A text that fits is one
        window; nothing is cut."""
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, stride=stride,
                                 return_overflowing_tokens=True)
        windows: list[list[Encoded]] = [[] for _ in texts]
        for text, row in zip(encoded["overflow_to_sample_mapping"], encoded.encodings):
            windows[text].append(Encoded(row.ids, row.type_ids, row.offsets, row.word_ids))
        self.truncated = 0
        self.token_counts = [sum(len(w.ids) for w in text_windows) for text_windows in windows]
        return windows

    # --- batching ----------------------------------------------------------------------------

    def in_length_order(self, items: list[Encoded], run_batch: Callable[[list[Encoded]], list]) -> list:
        """Run `run_batch` on batches of similar length (minimal padding); results in input order."""
        order = sorted(range(len(items)), key=lambda i: len(items[i].ids))
        batches = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        results: list = [None] * len(items)
        progress = progress_bar(total=len(batches), desc=self.task, unit="batch",
                                disable=not self.progress or len(batches) < 2)

        def run(chunk: list[int]) -> None:
            with torch.inference_mode():  # per thread: grad mode is thread-local
                for i, result in zip(chunk, run_batch([items[i] for i in chunk])):
                    results[i] = result
            progress.update()

        with progress:
            if self.parallel_batches == 1 or len(batches) < 2:
                for chunk in batches:
                    run(chunk)
            else:
                self._run_side_by_side(run, batches)
        return results

    def _run_side_by_side(self, run: Callable[[list[int]], None], batches: list[list[int]]) -> None:
        """`parallel_batches` worker threads, each with its share of the intra-op threads (torch releases
        the GIL inside its kernels). A worker's `set_num_threads` also changes the process default, so
        the caller's count is put back afterwards."""
        threads = torch.get_num_threads()
        each = max(1, threads // self.parallel_batches)
        try:
            with ThreadPoolExecutor(self.parallel_batches, initializer=torch.set_num_threads,
                                    initargs=(each,)) as pool:
                list(pool.map(run, batches))  # list(): re-raises a batch's exception here
        finally:
            torch.set_num_threads(threads)

    def padded(self, batch: list[Encoded]) -> dict[str, torch.Tensor]:
        """input_ids, token_type_ids and attention_mask as (batch, longest) tensors on the device."""
        width = max(len(e.ids) for e in batch)
        ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        types = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, e in enumerate(batch):
            n = len(e.ids)
            ids[row, :n] = torch.tensor(e.ids)
            types[row, :n] = torch.tensor(e.type_ids)
            mask[row, :n] = 1
        return {"input_ids": ids.to(self.device), "token_type_ids": types.to(self.device),
                "attention_mask": mask.to(self.device)}


def split_sequences(packed: UnpaddedOutput, hidden: torch.Tensor) -> list[torch.Tensor]:
    """(total tokens, hidden) → one (length, hidden) tensor per sequence, in batch order."""
    return list(torch.split(hidden, packed.lengths))


def pool_sequences(packed: UnpaddedOutput, hidden: torch.Tensor, pooling: str) -> torch.Tensor:
    """(total tokens, hidden) → (sequences, hidden): `cls`, `mean` or `max` over each sequence."""
    pooled = []
    for first, count, length in packed.groups:
        block = hidden[first:first + count * length].view(count, length, -1)
        if pooling == "cls":
            pooled.append(block[:, 0])
        elif pooling == "mean":
            pooled.append(block.float().mean(dim=1))
        else:
            pooled.append(block.amax(dim=1))
    return torch.cat(pooled).float()
