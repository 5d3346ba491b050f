"""`bertforge pretrain prepare|train|export`: corpus → shards → MLM + NSP training → a model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bertforge.cli.io import SEED, typed
from bertforge.errors import ConfigError
from bertforge.io.atomic import check_output_dir
from bertforge.io.readers import check_distinct_files


@click.group()
def pretrain():
    """Pre-train BERT from scratch (MLM + NSP).

    \b
    bertforge pretrain prepare corpus.jsonl.gz data/ --vocab vocab.txt
    bertforge pretrain train data/ run/ --model-size mini --max-steps 10000
    bertforge pretrain evaluate run/final heldout-data/
    bertforge pretrain export run/final model/ --dtype float16
    torchrun --nproc_per_node 2 -m bertforge pretrain train data/ run/   (data-parallel)
    """


class PartOfN(click.ParamType):
    """`--part I/N`: the I-th of N parts, counted from 1."""

    name = "I/N"

    def convert(self, value, param, ctx):
        number, slash, count = str(value).partition("/")
        if not (slash and number.isdigit() and count.isdigit() and 1 <= int(number) <= int(count)):
            self.fail(f"{value}: expected I/N with 1 <= I <= N, e.g. 1/4", param, ctx)
        return int(number), int(count)


@pretrain.command()
@click.argument("corpus", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option("--vocab", "vocab", default=None, help="vocab.txt or a model/tokenizer directory (default: the bundled model's).")
@click.option("--max-seq-length", default=128, show_default=True)
@click.option("--short-seq-prob", default=0.1, show_default=True)
@click.option("--dupe-factor", default=5, show_default=True, help="Passes over the corpus, each cut and masked differently.")
@click.option("--masking", type=click.Choice(["static", "dynamic"]), default="dynamic", show_default=True,
              help="static: masks drawn once here (original BERT); dynamic: drawn again each epoch (RoBERTa).")
@click.option("--masked-lm-prob", default=0.15, show_default=True)
@click.option("--max-predictions-per-seq", default=20, show_default=True)
@click.option("--whole-word-mask", is_flag=True, help="Mask all pieces of a word together.")
@click.option("--seed", type=SEED, default=12345, show_default=True)
@click.option("--shard-size", default=100_000, show_default=True, help="Instances per shard file.")
@click.option("--chunk-tokens", type=click.IntRange(1), default=5_000_000, show_default=True,
              help="Documents are cut into instances (notNext from the same chunk) in chunks of about this many "
                   "tokens: the unit of --workers and --part.")
@click.option("--skip-documents", type=click.IntRange(0), default=0, show_default=True,
              help="Leave out the first N documents (JSONL records, blank-line-separated blocks) of each file.")
@click.option("--max-documents", default=None, type=click.IntRange(1), help="Use at most N documents of each file.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Processes splitting and tokenising at once; the output is byte-identical for any number.")
@click.option("--part", type=PartOfN(), default=None,
              help="Prepare only part I of N (chunks I, I+N, I+2N, ...), e.g. one per machine; put the N output "
                   "directories in one directory and give that to `pretrain train`.")
@click.option("--splitter", type=click.Choice(["rules", "pysbd"]), default="rules", show_default=True,
              help="Sentence splitter of JSONL documents: pysbd's rules compiled for speed, or pysbd itself "
                   "(about 30 times slower).")
def prepare(corpus, output_dir, vocab, max_seq_length, short_seq_prob, dupe_factor, masking, masked_lm_prob,
            max_predictions_per_seq, whole_word_mask, seed, shard_size, chunk_tokens, skip_documents, max_documents,
            workers, part, splitter):
    """Tokenise CORPUS files (one sentence a line and blank lines between documents, or JSONL with a
    `text` field per document) into masked pre-training instances stored as shards in OUTPUT_DIR.

    \b
    Examples:
    bertforge pretrain prepare corpus.jsonl.gz data/ --workers 4
    On N machines, each with its own I (the parts together hold the instances of one whole run):
    bertforge pretrain prepare corpus.jsonl.gz data/part-I --part I/N
    then, with the N part-* directories copied into data/:
    bertforge pretrain train data/ run/
    """
    from bertforge.paths import default_model_path
    from bertforge.pretraining.shards import PrepareOptions
    from bertforge.pretraining.shards import prepare as prepare_data
    from bertforge.runcard import RunCard
    from bertforge.tokenization import BertTokenizer

    check_distinct_files(corpus, "CORPUS")  # before the run card reads them whole
    card = RunCard.start(click.get_current_context().params, [*corpus, vocab or default_model_path() / "vocab.txt"],
                         output_dir, seed)

    options = PrepareOptions(max_seq_length=max_seq_length, short_seq_prob=short_seq_prob, dupe_factor=dupe_factor,
                             masking=masking, masked_lm_prob=masked_lm_prob,
                             max_predictions_per_seq=max_predictions_per_seq, whole_word_mask=whole_word_mask,
                             seed=seed, shard_size=shard_size, chunk_tokens=chunk_tokens, splitter=splitter)
    def summary(index: dict) -> dict:
        return {"instances": index["instances"], "shards": len(index["shards"]), **index["stats"]}

    index = prepare_data(corpus, output_dir, BertTokenizer.from_pretrained(vocab), options,
                         skip_documents=skip_documents, max_documents=max_documents, workers=workers, part=part,
                         finish=lambda directory, index: card.finish(directory, summary(index)))
    click.echo(json.dumps(summary(index), indent=2))


@pretrain.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option("--model-size", default="mini", show_default=True, help="tiny, mini, small, medium, base, large or L<n>-H<n>.")
@click.option("--init-from", default=None, type=click.Path(),
              help="Continue pre-training this checkpoint directory (e.g. a published BERT) instead of "
                   "starting from random weights; its config.json sets the size.")
@click.option("--max-steps", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True,
              help="Instances per optimiser step (all processes and accumulation micro-batches together). BERT's "
                   "paper used 256; 32 suits a CPU, and --gradient-accumulation-steps keeps memory flat at 256.")
@click.option("--gradient-accumulation-steps", type=click.IntRange(1), default=1, show_default=True)
@click.option("--gradient-checkpointing", is_flag=True,
              help="Recompute each layer's activations in the backward pass instead of keeping them: the same "
                   "run in a fraction of the memory, for about a fifth more time per step (docs/benchmarks.md).")
@click.option("--learning-rate", "--lr", "learning_rate", default=1e-4, show_default=True)
@click.option("--warmup-ratio", default=0.01, show_default=True, help="Warm-up as a share of --max-steps.")
@click.option("--warmup-steps", type=click.IntRange(0), default=None, help="Warm-up steps (overrides --warmup-ratio).")
@click.option("--weight-decay", default=0.01, show_default=True)
@click.option("--max-grad-norm", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="Clip the gradients' total norm to this before each step.")
@click.option("--dropout", default=0.1, show_default=True)
@click.option("--bf16", is_flag=True, help="bfloat16 autocast (fast on GPUs and CPUs with native bf16).")
@click.option("--seed", type=SEED, default=42, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--eval-data", default=None, type=click.Path(file_okay=False), help="A prepared held-out data directory.")
@click.option("--eval-every", type=click.IntRange(1), default=500, show_default=True)
@click.option("--eval-instances", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(1), default=500, show_default=True)
@click.option("--log-every", type=click.IntRange(1), default=10, show_default=True)
@click.option("--resume", default=None, type=click.Path(), help="Continue from the checkpoint in this run directory.")
@click.option("--overwrite", is_flag=True, help="Replace the run already in OUTPUT_DIR.")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for torch (default: torch's choice).")
@click.option("--deterministic", is_flag=True, help="Deterministic algorithms only (identical runs on a GPU too; slower).")
def train(data_dir, output_dir, model_size, init_from, max_steps, batch_size, gradient_accumulation_steps,
          gradient_checkpointing, learning_rate, warmup_ratio, warmup_steps, weight_decay, max_grad_norm, dropout, bf16,
          seed, device, eval_data, eval_every, eval_instances, checkpoint_every, log_every, resume, overwrite, threads,
          deterministic):
    """Pre-train a BertForPreTraining on the prepared DATA_DIR, logging and checkpointing into
    OUTPUT_DIR; the final model is saved to OUTPUT_DIR/final in the Hugging Face layout.

    \b
    Examples:
      bertforge pretrain train data/ run/ --model-size mini --max-steps 10000 --eval-data held-out/
      bertforge pretrain train data/ run/ --max-steps 10000 --resume run/
      bertforge pretrain train data/ run/ --init-from my-bert --max-steps 2000 --lr 1e-4
    """
    from bertforge.cli.finetune import checkpoint_option
    from bertforge.pretraining.config import TrainingConfig
    from bertforge.pretraining.trainer import train as run_training
    from bertforge.runcard import RunCard
    from bertforge.training import configure_torch, is_main_process

    if init_from is not None and typed("model_size"):
        raise ConfigError(f"--model-size {model_size} with --init-from {init_from}: the checkpoint's config.json sets "
                          f"the size; give one of them")
    if init_from is not None:  # before the card fingerprints it: a run's folder, say, with all its checkpoints
        checkpoint_option(init_from, "--init-from")
    threads = configure_torch(threads, deterministic)
    card = RunCard.start(click.get_current_context().params, [data_dir, eval_data, init_from], output_dir, seed)
    check_output_dir(output_dir, "OUTPUT_DIR", inputs=(data_dir, eval_data, init_from))  # --overwrite would delete them
    config = TrainingConfig(data_dir=data_dir, output_dir=output_dir, model_size=model_size, init_from=init_from,
                            max_steps=max_steps, batch_size=batch_size,
                            gradient_accumulation_steps=gradient_accumulation_steps,
                            gradient_checkpointing=gradient_checkpointing, learning_rate=learning_rate,
                            warmup_ratio=warmup_ratio, warmup_steps=warmup_steps, weight_decay=weight_decay,
                            max_grad_norm=max_grad_norm, dropout=dropout, bf16=bf16, seed=seed, device=device,
                            eval_data_dir=eval_data, eval_every=eval_every, eval_instances=eval_instances,
                            checkpoint_every=checkpoint_every, log_every=log_every, overwrite=overwrite)
    result = run_training(config, resume_from=resume)
    if is_main_process():
        card.finish(output_dir, result, threads, device)
    click.echo(json.dumps(result, indent=2, default=str))


@pretrain.command()
@click.argument("model_dir", type=click.Path())
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--instances", type=click.IntRange(1), default=2000, show_default=True,
              help="Evaluate on the first N instances.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def evaluate(model_dir, data_dir, instances, batch_size, device):
    """MLM and NSP loss and accuracy of MODEL_DIR on the prepared (held-out) DATA_DIR.

    \b
    Examples:
      bertforge pretrain evaluate run/final held-out/ --instances 4000
    """
    from bertforge.pretraining.evaluation import evaluate as evaluate_model, load_model
    from bertforge.pretraining.shards import PretrainingData
    from bertforge.training import resolve_device

    target = resolve_device(device)
    model = load_model(model_dir).to(target)
    data = PretrainingData(data_dir)
    data.check_model(model_dir, "MODEL_DIR")
    scores = evaluate_model(model, data, target, batch_size, instances)
    click.echo(json.dumps({"instances": min(instances, len(data)), **scores}, indent=2))


@pretrain.command()
@click.argument("model_dir", type=click.Path())
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float16", show_default=True,
              help="Storage type of the weights (loaders cast back to float32).")
@click.option("--dropout", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="Hidden and attention dropout saved in config.json for fine-tuning [default: the model's].")
def export(model_dir, output_dir, dtype, dropout):
    """Copy a trained MODEL_DIR (a saved model, or a run directory: its latest checkpoint) to
    OUTPUT_DIR with its weights stored as DTYPE, halving the file for float16/bfloat16.

    \b
    Examples:
      bertforge pretrain export run/final my-bert --dtype float16 --dropout 0.1
    """
    from bertforge.pretraining.export import export_model

    path = export_model(model_dir, output_dir, dtype, dropout)
    click.echo(f"saved {path} ({Path(path).stat().st_size / 1e6:.1f} MB)")
