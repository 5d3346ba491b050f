"""The pre-training loop: BertForPreTraining, MLM + NSP, resumable and data-parallel.

One optimiser step consumes one global batch: `batch_size` instances, split over the processes
(`torchrun`) and over gradient-accumulation micro-batches. Batch k of epoch e is a fixed slice of
a permutation seeded by (seed, e) and masks are seeded per instance, so the data a step sees
depends only on the step number: resuming needs nothing but the step, and a run on N processes
sees the same data as a run on one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from bertforge.errors import CheckpointError, ConfigError
from bertforge.model import BertConfig
from bertforge.model.heads import BertForPreTraining
from bertforge.pretraining.shards import PretrainingData

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
TRAIN_LOG, EVAL_LOG = "train_log.csv", "eval_log.csv"
TRAIN_COLUMNS = ["step", "loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy", "learning_rate",
                 "tokens_per_second", "tokens_seen", "elapsed_seconds"]
EVAL_COLUMNS = ["step", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "tokens_seen", "elapsed_seconds"]


@dataclass
class TrainingConfig:
    data_dir: str
    output_dir: str
    model_size: str = "mini"
    init_from: str | None = None  # continue pre-training a checkpoint (its config sets the size)
    max_steps: int = 1000
    batch_size: int = 32  # instances per optimiser step, over all processes and micro-batches
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    warmup_steps: int | None = None  # None: 1% of max_steps, as the paper's 10k of 1M
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-6
    max_grad_norm: float = 1.0
    dropout: float = 0.1
    bf16: bool = False
    seed: int = 42
    device: str = "cpu"
    eval_data_dir: str | None = None
    eval_every: int = 500
    eval_instances: int = 2000
    checkpoint_every: int = 500
    log_every: int = 10

    # Settings that may change between a run and its resumption (they do not change the weights).
    RESUMABLE_CHANGES = ("output_dir", "device", "eval_data_dir", "eval_every", "eval_instances",
                         "checkpoint_every", "log_every")

    def __post_init__(self):
        if self.warmup_steps is None:
            self.warmup_steps = max(1, self.max_steps // 100)
        checks = [
            (self.max_steps >= 1, "max_steps must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be at least 1"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (0 <= self.warmup_steps <= self.max_steps, "warmup_steps must be between 0 and max_steps"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (min(self.eval_every, self.checkpoint_every, self.log_every) >= 1,
             "eval_every, checkpoint_every and log_every must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def fingerprint(self, data: PretrainingData, world_size: int) -> dict:
        """What must be equal for a checkpoint to continue this run exactly."""
        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RESUMABLE_CHANGES}
        settings["data_dir"] = str(Path(self.data_dir).resolve())
        settings["world_size"] = world_size
        settings["data"] = {key: data.index[key] for key in ("instances", "vocab_fingerprint", "options")}
        return settings


def _differences(old, new, prefix="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new))
                for d in _differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: checkpoint {old!r}, now {new!r}"]


# ---------------------------------------------------------------------------------------------
# processes and devices

@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str) -> "Distributed":
        """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; gloo on CPU, NCCL on GPUs."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(values)
        return values


def _device(name: str, local_rank: int) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine")
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    raise ConfigError(f"--device must be 'cpu' or 'cuda', got {name!r}")


# ---------------------------------------------------------------------------------------------
# data order

class BatchOrder:
    """The instances of each optimiser step: step → (epoch, global indices); this process's part."""

    def __init__(self, num_instances: int, batch_size: int, seed: int):
        if num_instances < batch_size:
            raise ConfigError(f"batch_size {batch_size} is larger than the {num_instances} prepared instances")
        self.num_instances, self.batch_size, self.seed = num_instances, batch_size, seed
        self.steps_per_epoch = num_instances // batch_size  # the incomplete last batch is dropped
        self._epoch, self._permutation = -1, None

    def global_batch(self, step: int) -> tuple[int, np.ndarray]:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_instances)
        return epoch, self._permutation[position * self.batch_size:(position + 1) * self.batch_size]

    def micro_batches(self, step: int, rank: int, world_size: int, accumulation: int) -> tuple[int, list[np.ndarray]]:
        epoch, indices = self.global_batch(step)
        mine = np.array_split(indices, world_size)[rank]
        return epoch, np.array_split(mine, accumulation)


def _to_tensors(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value).to(device, non_blocking=True) for key, value in batch.items()}


# ---------------------------------------------------------------------------------------------
# model, optimiser, schedule

def build_model(config: TrainingConfig, vocab_size: int, max_seq_length: int) -> BertForPreTraining:
    if config.init_from is not None:
        # Heads the checkpoint lacks (an encoder-only model has no MLM/NSP weights) start from
        # the seeded initialisation, so the run stays deterministic.
        model = BertForPreTraining.from_pretrained(config.init_from, hidden_dropout_prob=config.dropout,
                                                   attention_probs_dropout_prob=config.dropout)
        if model.config.vocab_size != vocab_size:
            raise ConfigError(f"--init-from {config.init_from}: its vocabulary has {model.config.vocab_size} "
                              f"pieces, the prepared data {vocab_size}; prepare the data with its vocab.txt")
        if model.config.max_position_embeddings < max_seq_length:
            raise ConfigError(f"--init-from {config.init_from}: {model.config.max_position_embeddings} positions, "
                              f"fewer than the data's max_seq_length {max_seq_length}")
        return model
    try:
        model_config = BertConfig.from_size(config.model_size, vocab_size=vocab_size,
                                            hidden_dropout_prob=config.dropout,
                                            attention_probs_dropout_prob=config.dropout,
                                            max_position_embeddings=max(512, max_seq_length))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"--model-size {config.model_size!r}: {e}") from None
    return BertForPreTraining(model_config)


def build_optimizer(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.AdamW:
    # Biases and LayerNorm parameters are exactly the 1-D parameters: no weight decay on them.
    parameters = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in parameters if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                             eps=config.adam_epsilon)


def linear_schedule(warmup_steps: int, total_steps: int):
    """Multiplier of the peak learning rate: linear warm-up, then linear decay to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


# ---------------------------------------------------------------------------------------------
# checkpoints

def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file, flush it to disk, then rename over the old checkpoint: a crash
    or a full disk at any point leaves the previous checkpoint whole."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as e:
        temporary.unlink(missing_ok=True)
        previous = f"the previous checkpoint {path} is intact" if path.exists() else "no earlier checkpoint exists"
        raise CheckpointError(f"could not write checkpoint {temporary} ({e.strerror or e}); {previous}") from None


def load_checkpoint(location: str | Path) -> dict:
    path = Path(location)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"--resume {location}: no checkpoint found (expected {path})")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"--resume {location}: {path} cannot be read as a checkpoint ({e})") from None


# ---------------------------------------------------------------------------------------------
# logging

class CsvLog:
    def __init__(self, path: Path, columns: list[str], keep_through_step: int | None):
        """Open for appending; when resuming, rows after the checkpoint's step (written after it
        by the interrupted run) are dropped so the log matches the weights."""
        self.path, self.columns = path, columns
        rows = []
        if keep_through_step is not None and path.exists():
            with open(path, newline="") as f:
                rows = [row for row in csv.DictReader(f) if int(row["step"]) <= keep_through_step]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: row[k] for k in self.columns})


def plot_curves(output_dir: str | Path, path: str | Path | None = None) -> Path:
    """Training curves (loss, MLM and NSP accuracy, train and held-out) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    path = Path(path) if path else output_dir / "training_curves.png"

    def read(name):
        file = output_dir / name
        if not file.exists():
            return {}
        with open(file, newline="") as f:
            rows = list(csv.DictReader(f))
        return {key: np.array([float(r[key]) for r in rows]) for key in (rows[0] if rows else [])}

    train, held_out = read(TRAIN_LOG), read(EVAL_LOG)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for axis, key, title in zip(axes, ("mlm_loss", "mlm_accuracy", "nsp_accuracy"),
                                ("MLM loss", "MLM accuracy", "NSP accuracy")):
        if train:
            axis.plot(train["step"], train[key], label="train", alpha=0.7)
        if held_out:
            axis.plot(held_out["step"], held_out[key], "o-", label="held-out")
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# ---------------------------------------------------------------------------------------------
# training

class _Metrics:
    """Sums over steps (all processes), turned into averages when logged."""

    names = ("mlm_loss", "masked", "mlm_correct", "nsp_loss", "sequences", "nsp_correct", "tokens")

    def __init__(self):
        self.totals = torch.zeros(len(self.names), dtype=torch.float64)

    def add(self, values: torch.Tensor) -> None:
        self.totals += values

    def averages(self) -> dict[str, float]:
        t = dict(zip(self.names, self.totals.tolist()))
        masked, sequences = max(t["masked"], 1), max(t["sequences"], 1)
        return {"mlm_loss": t["mlm_loss"] / masked, "nsp_loss": t["nsp_loss"] / sequences,
                "loss": t["mlm_loss"] / masked + t["nsp_loss"] / sequences,
                "mlm_accuracy": t["mlm_correct"] / masked, "nsp_accuracy": t["nsp_correct"] / sequences,
                "tokens": t["tokens"]}


def _step_statistics(output, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    masked = output.mlm_labels.numel()
    sequences = batch["next_sentence_label"].numel()
    mlm_correct = (output.prediction_logits.argmax(-1) == output.mlm_labels).sum()
    nsp_correct = (output.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum()
    return torch.tensor([output.mlm_loss.item() * masked, masked, mlm_correct.item(),
                         output.nsp_loss.item() * sequences, sequences, nsp_correct.item(),
                         batch["attention_mask"].sum().item()], dtype=torch.float64)


@torch.no_grad()
def evaluate(model: BertForPreTraining, data: PretrainingData, device: torch.device, batch_size: int,
             max_instances: int, bf16: bool = False) -> dict[str, float]:
    """MLM and NSP loss and accuracy on the first `max_instances` held-out instances (fixed masks)."""
    was_training = model.training
    model.eval()
    metrics = _Metrics()
    count = min(max_instances, len(data))
    for start in range(0, count, batch_size):
        batch = _to_tensors(data.batch(np.arange(start, min(start + batch_size, count)), epoch=0), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            output = model(**batch)
        metrics.add(_step_statistics(output, batch))
    model.train(was_training)
    return metrics.averages()


def train(config: TrainingConfig, resume_from: str | Path | None = None, progress: bool = True) -> dict:
    """Run (or continue) pre-training; returns the last logged metrics and the final model path."""
    processes = Distributed.from_environment(config.device)
    device = _device(config.device, processes.local_rank)
    data = PretrainingData(config.data_dir)
    eval_data = PretrainingData(config.eval_data_dir) if config.eval_data_dir else None
    if eval_data is not None and eval_data.index["vocab_fingerprint"] != data.index["vocab_fingerprint"]:
        raise ConfigError(f"eval data {config.eval_data_dir} was prepared with another vocabulary than {config.data_dir}")
    per_process, remainder = divmod(config.batch_size, processes.world_size * config.gradient_accumulation_steps)
    if remainder or per_process == 0:
        raise ConfigError(f"batch_size {config.batch_size} must be a multiple of processes × accumulation steps "
                          f"({processes.world_size} × {config.gradient_accumulation_steps})")
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = data.tokenizer()
    fingerprint = config.fingerprint(data, processes.world_size)

    torch.manual_seed(config.seed)  # the same initial weights in every process
    model = build_model(config, tokenizer.vocab_size, data.options.max_seq_length).to(device).train()
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(config.warmup_steps, config.max_steps))
    torch.manual_seed(config.seed + processes.rank)  # dropout differs between processes
    step, tokens_seen, elapsed_before = 0, 0.0, 0.0

    if resume_from is not None:
        checkpoint = load_checkpoint(resume_from)
        differences = _differences(checkpoint["run"], fingerprint)
        if differences:
            raise CheckpointError(f"--resume {resume_from} was made with another configuration: "
                                  + "; ".join(differences))
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        rng = checkpoint["rng"][processes.rank]
        torch.set_rng_state(rng["cpu"])
        if device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], device)
        step, tokens_seen, elapsed_before = checkpoint["step"], checkpoint["tokens_seen"], checkpoint["elapsed_seconds"]

    wrapped = model
    if processes.world_size > 1:
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    order = BatchOrder(len(data), config.batch_size, data.seed + config.seed)
    logs = None
    if processes.is_main:
        keep = step if resume_from is not None else None
        logs = (CsvLog(output_dir / TRAIN_LOG, TRAIN_COLUMNS, keep), CsvLog(output_dir / EVAL_LOG, EVAL_COLUMNS, keep))
        (output_dir / "training_config.json").write_text(json.dumps(asdict(config), indent=2))

    def checkpoint_state() -> dict:
        rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        rng_per_process = [rng] * processes.world_size
        if processes.world_size > 1:
            dist.all_gather_object(rng_per_process, rng)
        return {"run": fingerprint, "step": step, "tokens_seen": tokens_seen,
                "elapsed_seconds": elapsed_before + time.perf_counter() - started,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng_per_process}

    bar = tqdm(total=config.max_steps, initial=step, desc="pre-training", unit="step",
               disable=not (progress and processes.is_main))
    metrics, interval_start = _Metrics(), time.perf_counter()
    started = time.perf_counter()
    last = {}
    while step < config.max_steps:
        epoch, micro_indices = order.micro_batches(step, processes.rank, processes.world_size,
                                                   config.gradient_accumulation_steps)
        micro_batches = [_to_tensors(data.batch(indices, epoch), device) for indices in micro_indices]
        # Every loss is a sum over the global batch divided by its size (masked tokens for MLM,
        # sequences for NSP), so accumulation and DDP's gradient averaging give exactly the
        # gradient of one big batch.
        counts = torch.tensor([sum(int((b["labels"] != -100).sum()) for b in micro_batches),
                               sum(len(b["next_sentence_label"]) for b in micro_batches)], dtype=torch.float64)
        masked_total, sequences_total = processes.all_sum(counts).tolist()
        step_metrics = torch.zeros(len(_Metrics.names), dtype=torch.float64)
        for i, batch in enumerate(micro_batches):
            is_last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if is_last or wrapped is model else wrapped.no_sync()
            with sync:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                    output = wrapped(**batch)
                masked = output.mlm_labels.numel()
                loss = processes.world_size * (output.mlm_loss * (masked / max(masked_total, 1))
                                               + output.nsp_loss * (len(batch["next_sentence_label"]) / sequences_total))
                loss.backward()
            step_metrics += _step_statistics(output, batch)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        step_metrics = processes.all_sum(step_metrics)
        metrics.add(step_metrics)
        tokens_seen += step_metrics[-1].item()
        bar.update(1)

        if processes.is_main and (step % config.log_every == 0 or step == config.max_steps):
            now = time.perf_counter()
            averages = metrics.averages()
            last = {"step": step, **averages, "learning_rate": learning_rate,
                    "tokens_per_second": averages["tokens"] / (now - interval_start), "tokens_seen": int(tokens_seen),
                    "elapsed_seconds": round(elapsed_before + now - started, 1)}
            logs[0].write(last)
            bar.set_postfix(loss=f"{last['loss']:.3f}", mlm_acc=f"{last['mlm_accuracy']:.3f}",
                            nsp_acc=f"{last['nsp_accuracy']:.3f}", lr=f"{learning_rate:.2e}",
                            tok_s=f"{last['tokens_per_second']:.0f}")
            metrics, interval_start = _Metrics(), time.perf_counter()
        if eval_data is not None and processes.is_main and (step % config.eval_every == 0 or step == config.max_steps):
            scores = evaluate(model, eval_data, device, per_process, config.eval_instances, config.bf16)
            logs[1].write({"step": step, **scores, "tokens_seen": int(tokens_seen),
                           "elapsed_seconds": round(elapsed_before + time.perf_counter() - started, 1)})
            logger.info("step %d held-out: %s", step, scores)
            last["eval"] = scores
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            state = checkpoint_state()  # a collective under DDP: every process takes part
            if processes.is_main:
                save_checkpoint(output_dir / CHECKPOINT_FILE, state)
    bar.close()

    final_dir = output_dir / "final"
    if processes.is_main:
        model.save_pretrained(final_dir, tokenizer)
        plot_curves(output_dir)
    if processes.world_size > 1:
        dist.barrier()
    return {**last, "final_model": str(final_dir), "tokens_seen": int(tokens_seen)}


def export_model(model_dir: str | Path, output_dir: str | Path, dtype: str = "float16") -> Path:
    """Save a trained model with its weights stored as `dtype` (float16 halves the file; loaders
    cast back to float32)."""
    from safetensors.torch import load_file, save_file

    from bertforge.tokenization import BertTokenizer

    types = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in types:
        raise ConfigError(f"dtype must be one of {', '.join(types)}, got {dtype!r}")
    model_dir = Path(model_dir)
    if (model_dir / CHECKPOINT_FILE).exists() and not (model_dir / "config.json").exists():
        # a run directory: rebuild the model from the run's settings and its latest checkpoint
        config = TrainingConfig(**json.loads((model_dir / "training_config.json").read_text()))
        data = PretrainingData(config.data_dir)
        tokenizer = data.tokenizer()
        model = build_model(config, tokenizer.vocab_size, data.options.max_seq_length)
        model.load_state_dict(load_checkpoint(model_dir)["model"])
    else:
        model, tokenizer = BertForPreTraining.from_pretrained(model_dir), BertTokenizer.from_pretrained(model_dir)
    model.save_pretrained(output_dir, tokenizer)
    weights_path = Path(output_dir) / "model.safetensors"
    weights = {name: tensor.to(types[dtype]).contiguous() for name, tensor in load_file(weights_path).items()}
    save_file(weights, weights_path, metadata={"format": "pt"})
    return weights_path
