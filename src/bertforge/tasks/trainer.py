"""Fine-tuning for every task on the training engine: length-bucketed batches, the task head's
loss, evaluation every epoch (or every N steps) keeping the best model by the task's metric, and
metrics.json / curves.png in the output directory."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bertforge.errors import ConfigError, InputError
from bertforge.io.atomic import write_json
from bertforge.model.pretrained import init_weights
from bertforge.model.heads import IGNORE_INDEX
from bertforge.tasks.batching import collate, length_bucketed_batches, predict_logits
from bertforge.tasks.classification import ClassificationTask
from bertforge.training import Processes, TrainingArguments, run
from bertforge.training.logs import plot_curves

METRICS_FILE, CURVES_FILE = "metrics.json", "curves.png"


def default_learning_rate(hidden_size: int, batch_size: int = 32) -> float:
    """The peak learning rate when none is given. `bench/defaults_sweep.py` chose 2e-4 at batch 32 for
    the bundled 384-wide MiniLM (one epoch: SST-2 92.0% at 2e-4 against 90.0% at BERT's 3e-5 on its
    selection split, CoNLL-2003 79.8 against 60.2 F1); small networks want larger steps. Wider models
    keep 3e-5, inside the 2e-5 to 5e-5 that Devlin et al. give for BERT-base and -large (not swept
    here). Other batch sizes scale the rate by the square root of the batch (Adam's rule, Malladi et
    al. 2022): 1.4e-4 at fine-tuning's default batch of 16."""
    return (2e-4 if hidden_size <= 384 else 3e-5) * math.sqrt(batch_size / 32)


@dataclass(kw_only=True)
class FinetuneArgs(TrainingArguments):
    # Settings whose default depends on the model, the task or the command: a run card records the values the
    # run took, so that `rerun` repeats it if a default changes.
    RESOLVED_DEFAULTS = ("learning_rate", "batch_size", "layer_lr_decay")

    epochs: float = 3
    # Batch 16 and (for sentence classification) layer-wise decay 0.8 take SST-2's one-epoch budget run
    # from 86.4 to 87.7% on unseen sentences, CoNLL-2003's from 87.3 to 87.9 F1 (docs/results.md, issue 17).
    batch_size: int = 16
    learning_rate: float | None = None  # None: default_learning_rate of the model's width and the batch
    layer_lr_decay: float | None = None  # None: the task's default_layer_lr_decay
    group_by_length: bool = True  # batches of similar-length examples (little padding); False: random batches
    label_smoothing_factor: float = 0.0  # share of each label's weight spread evenly over the classes
    rdrop_alpha: float = 0.0  # weight of R-Drop's KL between two dropout passes; 0: one pass
    freeze_word_embeddings: bool = False  # keep the token embedding table as pre-trained
    linear_probe_first: bool = False  # start a sentence classifier's head from a logistic regression (LP-FT)
    reinit_layers: int = 0  # the top encoder layers started afresh with BERT's initialisation
    eval_batch_size: int = 64

    def __post_init__(self):
        super().__post_init__()
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        if not 0 <= self.label_smoothing_factor < 1:
            raise ConfigError(f"label_smoothing_factor must be in [0, 1), got {self.label_smoothing_factor}")
        if self.reinit_layers < 0:
            raise ConfigError(f"reinit_layers must be 0 or more, got {self.reinit_layers}")
        if self.rdrop_alpha < 0:
            raise ConfigError(f"rdrop_alpha must be 0 or more, got {self.rdrop_alpha}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be at least 1, got {self.eval_batch_size}")


class FeatureBatches:
    """Global batches of similar-length features (or random ones without `group_by_length`), a fresh
    order each epoch seeded by (seed + epoch), so the batch of a step is a pure function of the step;
    each global batch is split over processes, then over accumulation micro-batches, padded with `pad_token_id`
    (the tokenizer's [PAD], as transformers pads: question answering's softmax runs over padded positions too)."""

    def __init__(self, features: list[dict], batch_size: int, seed: int, smallest: int, group_by_length: bool = True,
                 pad_token_id: int = 0):
        self.features, self.batch_size, self.seed, self.smallest = features, batch_size, seed, smallest
        self.pad_token_id = pad_token_id
        # A window of one batch sorts only within the batch: the batches are then random draws.
        self.bucket_batches = 50 if group_by_length else 1
        self.lengths = [len(f["input_ids"]) for f in features]
        self._epoch, self._batches = -1, []
        self.steps_per_epoch = len(self._epoch_batches(0))
        if self.steps_per_epoch == 0:
            raise ConfigError(f"{len(features)} training examples make no batch of at least {smallest} "
                              f"(processes × gradient accumulation steps)")

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            # A batch too small to give every process and micro-batch an example is left out.
            self._epoch, self._batches = epoch, [
                b for b in length_bucketed_batches(self.lengths, self.batch_size, self.seed + epoch,
                                                   self.bucket_batches) if len(b) >= self.smallest]
        return self._batches

    def micro_batches(self, step: int, rank: int, world_size: int, accumulation: int) -> list[dict[str, torch.Tensor]]:
        epoch, position = divmod(step, self.steps_per_epoch)
        batch = self._epoch_batches(epoch)[position]
        mine = batch[rank::world_size]
        return [self.collate([self.features[j] for j in mine[i::accumulation]]) for i in range(accumulation)]

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return collate(features, self.pad_token_id)


def loss_units(batch) -> int:
    """What a head's loss is a mean over: the labelled tokens of token-level labels (NER), else the rows."""
    labels = batch.get("labels")
    if labels is not None and labels.dim() > 1:
        return int((labels != IGNORE_INDEX).sum())
    return len(batch["input_ids"])


class TaskObjective:
    """The head's own loss, weighted by the micro-batch's share of what the global batch's loss is a mean over:
    its examples, or for NER its labelled tokens (the head's loss is a mean over those), so that gradient
    accumulation and several processes give one big batch's gradient. For the heads
    with `labels` (classification, NER; as transformers' Trainer, question answering's spans are left alone):
    with `label_smoothing`, the cross-entropy against smoothed labels; with `rdrop_alpha`, R-Drop (Liang et
    al., 2021): the batch goes through twice, each row under its own dropout masks, and the loss is the two
    passes' mean cross-entropy + alpha/2 × their symmetric KL per labelled row (the paper's loss halved, so
    that one pass's scale is kept)."""

    statistics = ("loss", "examples", "loss_units")

    def __init__(self, label_smoothing: float = 0.0, rdrop_alpha: float = 0.0):
        self.label_smoothing, self.rdrop_alpha = label_smoothing, rdrop_alpha

    def counts(self, batch):
        return [loss_units(batch)]

    def loss(self, model, batch, totals):
        units = loss_units(batch)
        if (self.label_smoothing or self.rdrop_alpha) and "labels" in batch:
            loss = self._labels_loss(model, batch)
        else:
            loss = model(**batch).loss
        return loss * (units / totals[0]), torch.tensor([loss.item() * units, len(batch["input_ids"]), units],
                                                        dtype=torch.float64)

    def _labels_loss(self, model, batch) -> torch.Tensor:
        passes = 2 if self.rdrop_alpha else 1
        # One forward pass over the batch stacked `passes` times: dropout draws its masks row by row.
        inputs = {k: v.repeat(passes, *[1] * (v.dim() - 1)) for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits.float().flatten(0, -2)  # (passes × rows [× tokens for NER], classes)
        labels = batch["labels"].flatten()
        loss = F.cross_entropy(logits, labels.repeat(passes), ignore_index=IGNORE_INDEX,
                               label_smoothing=self.label_smoothing)
        if self.rdrop_alpha:
            kept = labels != IGNORE_INDEX
            first, second = (F.log_softmax(half[kept], -1) for half in logits.chunk(2))
            symmetric_kl = (F.kl_div(first, second, reduction="batchmean", log_target=True) +
                            F.kl_div(second, first, reduction="batchmean", log_target=True)) / 2
            loss = loss + self.rdrop_alpha / 2 * symmetric_kl
        return loss

    def summary(self, interval, seconds, cumulative):
        return {"loss": interval["loss"] / max(interval["loss_units"], 1),
                "examples_per_second": interval["examples"] / max(seconds, 1e-9),
                "examples_seen": int(cumulative["examples"])}


class BestModelKeeper:
    """Evaluates the validation set; saves the model whenever the task's metric improves."""

    def __init__(self, task, eval_set, args: FinetuneArgs, steps_per_epoch: int, tokenizer, history: dict):
        self.task, self.eval_set, self.args, self.tokenizer, self.history = task, eval_set, args, tokenizer, history
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, model, step: int) -> dict:
        metrics = self.task.evaluate(model, self.eval_set, self.args.eval_batch_size, self.args.bf16)
        entry = {"step": step, "epoch": round(step / self.steps_per_epoch, 3), **metrics}
        self.history["evaluations"].append(entry)
        tqdm.write(f"step {step} epoch {entry['epoch']:.2f}: {self.task.metric} = {metrics[self.task.metric]:.4f}")
        best = self.history["best"]
        if best is None or metrics[self.task.metric] > best[self.task.metric]:
            self.history["best"] = entry
            model.save_pretrained(self.args.output_dir, self.tokenizer)  # written to a temp file, then renamed
        # so far: an interrupted run still leaves its figures
        write_json(Path(self.args.output_dir) / METRICS_FILE, self.history, indent=2)
        return metrics

    def state(self) -> dict:
        return {"evaluations": self.history["evaluations"], "best": self.history["best"]}

    def load_state(self, state: dict) -> None:
        self.history.update(state)


def features_digest(features: list[dict], arrays: tuple[str, ...] = ()) -> str:
    """Identifies training features (their ids and targets, and the NumPy `arrays` they carry, e.g. a
    teacher's outputs), so a checkpoint is not continued on other examples or targets."""
    content = [(f["input_ids"], f["token_type_ids"], f.get("labels"), f.get("start_positions"),
                f.get("end_positions")) for f in features]
    digest = hashlib.sha256(json.dumps(content, default=int).encode())
    for feature in features:
        for name in arrays:
            if name in feature:
                digest.update(feature[name].tobytes())
    return digest.hexdigest()


def _with_frozen_word_embeddings(build_model: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """The model with its token embedding table out of training. Fine-tuning moves the rows of the words the
    training data shows and leaves the others where pre-training put them, so a word it never shows drifts
    apart from its neighbours; frozen, every row keeps its place (and AdamW keeps no state for the table)."""
    model = build_model()
    model.bert.embeddings.word.weight.requires_grad_(False)
    return model


def reinitialise_top_layers(model: torch.nn.Module, layers: int) -> torch.nn.Module:
    """`model` with its top `layers` encoder layers drawn afresh (Zhang et al., 2021, "Revisiting Few-sample
    BERT Fine-tuning"): the last layers are shaped to pre-training's objectives and may transfer worse than a new
    start, while the lower layers keep what pre-training taught. The pooler and heads are left as they are."""
    stack = model.base_model.encoder.layers
    if layers > len(stack):
        raise ConfigError(f"--reinit-layers {layers}: the model has only {len(stack)} encoder layers")
    for layer in stack[len(stack) - layers:]:
        layer.apply(lambda module: init_weights(module, model.config.initializer_range))
    return model


def _with_reinitialised_top_layers(build_model: Callable[[], torch.nn.Module], layers: int) -> torch.nn.Module:
    return reinitialise_top_layers(build_model(), layers)


def _with_probed_head(build_model: Callable[[], torch.nn.Module], features: list[dict],
                      batch_size: int) -> torch.nn.Module:
    """LP-FT (Kumar et al., 2022): the classifier starts as a logistic regression fitted on the frozen model's
    pooled outputs of the training data, not at random, so the first steps' gradients reach the encoder through
    a head that already separates the classes, and move the pre-trained features less."""
    from bertforge.tasks.probe import fit_probe

    model = build_model()
    classifier, model.classifier = model.classifier, torch.nn.Identity()
    pooled = np.stack(predict_logits(model, features, batch_size))  # (examples, hidden): what the classifier reads
    model.classifier = classifier
    regression = fit_probe(pooled, [feature["labels"] for feature in features])
    coefficients, intercepts = regression.coef_, regression.intercept_
    if len(regression.classes_) == 2:  # one row, for the log-odds of the second class: shared out as ±half
        coefficients = np.stack([-coefficients[0], coefficients[0]]) / 2
        intercepts = np.array([-intercepts[0], intercepts[0]]) / 2
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.zero_()
        rows = torch.as_tensor(regression.classes_)
        classifier.weight[rows] = torch.as_tensor(coefficients, dtype=classifier.weight.dtype)
        classifier.bias[rows] = torch.as_tensor(intercepts, dtype=classifier.bias.dtype)
    return model


def finetune(build_model: Callable[[], torch.nn.Module], task, train_features: list[dict], eval_set,
             args: FinetuneArgs, tokenizer=None, resume_from: str | Path | None = None, *, objective=None,
             batches: Callable[..., FeatureBatches] | None = None,
             digest: Callable[[list[dict]], str] = features_digest,
             about: dict | None = None, name: str = "fine-tuning") -> dict:
    """Train `build_model()` (a task head from bertforge.model, built after seeding) on
    `train_features`; evaluate `eval_set` with `task.evaluate`, keep the best model by `task.metric`
    in `args.output_dir` (the last one without `eval_set`), and write metrics.json and curves.png
    there. Returns the metrics dictionary. Batches are padded with the tokenizer's [PAD] (0 without one).

    Distillation runs here too, with its own `objective` (default: the head's loss), `batches`
    (default: `FeatureBatches`; distillation's carry the teacher's outputs), `digest` of the training
    targets, and `about` (how the student was made, recorded in metrics.json and the checkpoint's fingerprint)."""
    if not train_features:
        raise InputError("the training set is empty")
    if eval_set is not None and not eval_set.features:
        raise InputError("the validation set is empty")
    if "labels" not in train_features[0]:  # question answering: answer spans, which neither setting reads
        for option in ("label_smoothing_factor", "rdrop_alpha"):
            if getattr(args, option):
                raise ConfigError(f"--{option.replace('_', '-')} works on class labels; --task qa learns answer spans")
    if args.learning_rate is None:
        # The rate depends on the model's width: build it once to read it (cheap beside training).
        args = replace(args, learning_rate=default_learning_rate(build_model().config.hidden_size, args.batch_size))
    if args.layer_lr_decay is None:
        args = replace(args, layer_lr_decay=task.default_layer_lr_decay)
    # Innermost first: the probe reads the model with its layers drawn afresh.
    if args.reinit_layers:
        build_model = partial(_with_reinitialised_top_layers, build_model, args.reinit_layers)
    if args.linear_probe_first:
        if not isinstance(task, ClassificationTask):
            raise ConfigError("--linear-probe-first fits a sentence classifier's head: for --task classification "
                              "and pair-classification")
        build_model = partial(_with_probed_head, build_model, train_features, args.eval_batch_size)
    if args.freeze_word_embeddings:
        build_model = partial(_with_frozen_word_embeddings, build_model)
    processes = Processes.start(args.device)
    batches = batches or partial(FeatureBatches, pad_token_id=tokenizer.pad_token_id if tokenizer is not None else 0)
    source = batches(train_features, args.batch_size, args.seed,
                     processes.world_size * args.gradient_accumulation_steps, group_by_length=args.group_by_length)
    total_steps = max(1, round(source.steps_per_epoch * args.epochs))
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)
    # Without --eval-every: once an epoch (and at the end).
    schedule = replace(args, eval_every=args.eval_every or source.steps_per_epoch)
    history = {"task": type(task).__name__, "metric": task.metric, **(about or {}), "args": schedule.settings(),
               "processes": processes.world_size, "train_examples": len(train_features), "total_steps": total_steps,
               "train_loss": [], "evaluations": [], "best": None}
    keeper = BestModelKeeper(task, eval_set, schedule, source.steps_per_epoch, tokenizer, history) \
        if eval_set is not None else None
    fingerprint = {**args.settings(), "task": type(task).__name__, "labels": getattr(task, "labels", None),
                   **(about or {}), "train_features": digest(train_features),
                   # the best model so far was chosen on these: other ones would compare unlike scores
                   "eval_features": features_digest(eval_set.features) if eval_set is not None else None}
    objective = objective or TaskObjective(args.label_smoothing_factor, args.rdrop_alpha)
    result = run(schedule, processes, build_model, source, objective, total_steps, fingerprint, resume_from, keeper,
                 description=name)
    history.update(train_loss=[[int(row["step"]), round(row["loss"], 5)] for row in result.train_log],
                   train_seconds=round(result.seconds, 2), examples_seen=int(result.cumulative["examples"]),
                   examples_per_second=round(result.cumulative["examples"] / max(result.seconds, 1e-9), 2))
    if processes.is_main:
        output = Path(args.output_dir)
        if eval_set is None:
            result.model.save_pretrained(output, tokenizer)
        write_json(output / METRICS_FILE, history, indent=2)
        plot_curves(output, [("loss", f"{name} loss"), (task.metric, f"validation {task.metric}")],
                    output / CURVES_FILE)
    processes.finish()
    return history
