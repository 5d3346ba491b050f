"""`bertforge` entry point. Each command lives in its own module under `bertforge.cli` and is
imported only when it runs, so `bertforge --help` stays fast."""

from __future__ import annotations

import importlib
import logging
import sys

import click

from bertforge.errors import BertforgeError

# command name -> "module:function" (a click.Command)
COMMANDS = {
    "demo": "bertforge.cli.demo:demo",
    # inference (pipelines)
    "tokenize": "bertforge.cli.tokenize_cmd:tokenize",
    "embed": "bertforge.cli.embed:embed",
    "fill-mask": "bertforge.cli.fill_mask:fill_mask",
    "nsp": "bertforge.cli.nsp:nsp",
    "similarity": "bertforge.cli.similarity:similarity",
    "attention": "bertforge.cli.attention:attention",
    # vocabularies and pre-training
    "train-vocab": "bertforge.cli.train_vocab:train_vocab",
    "pretrain": "bertforge.cli.pretrain:pretrain",
    # fine-tuning
    "finetune": "bertforge.cli.finetune:finetune",
    "distill": "bertforge.cli.distill:distill",
    "evaluate": "bertforge.cli.finetune:evaluate",
    "predict": "bertforge.cli.finetune:predict",
    "probe": "bertforge.cli.probe:probe",
    # serving
    "serve": "bertforge.cli.serve:serve",
    # checkpoints and reproducing a run
    "convert": "bertforge.cli.convert:convert",
    "rerun": "bertforge.cli.rerun:rerun",
}


class LazyGroup(click.Group):
    def parse_args(self, ctx, args):
        ctx.meta["bertforge.argv"] = list(args)  # the command line as typed, for run cards
        return super().parse_args(ctx, args)

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BertforgeError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=LazyGroup)
@click.version_option(package_name="bertforge")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def cli(verbose: bool):
    """BERT end to end: tokenize, embed, fill masks, pre-train, fine-tune and serve."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
