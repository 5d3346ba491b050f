"""`bertforge` entry point. Each command lives in its own module under `bertforge.cli` and is
imported only when it runs, so `bertforge --help` stays fast."""

from __future__ import annotations

import importlib
import logging
import re
import sys

import click

from bertforge.cli import environment
from bertforge.errors import BertforgeError

environment.set_defaults()  # before any command imports torch

# command name -> ("module:function" of its click.Command, the line `bertforge --help` lists it with). The
# listing reads these lines rather than the modules: some commands' options load torch.
COMMANDS = {
    "demo": ("bertforge.cli.demo:demo", "Run the BERT story end to end on the bundled models, offline."),
    # inference (pipelines)
    "tokenize": ("bertforge.cli.tokenize_cmd:tokenize", "Split texts into WordPiece tokens."),
    "embed": ("bertforge.cli.embed:embed", "Embed texts: sentence vectors or every token's."),
    "fill-mask": ("bertforge.cli.fill_mask:fill_mask", "Fill the [MASK] tokens of texts."),
    "nsp": ("bertforge.cli.nsp:nsp", "Score sentence pairs with the next-sentence head."),
    "similarity": ("bertforge.cli.similarity:similarity", "Compare a word's vectors in different sentences."),
    "attention": ("bertforge.cli.attention:attention", "Attention maps of a text, every layer and head."),
    # vocabularies and pre-training
    "train-vocab": ("bertforge.cli.train_vocab:train_vocab",
                    "Train a WordPiece, BPE or byte-level BPE vocabulary on text files."),
    "pretrain": ("bertforge.cli.pretrain:pretrain", "Pre-train BERT from scratch (MLM + NSP)."),
    # fine-tuning
    "finetune": ("bertforge.cli.finetune:finetune", "Fine-tune BERT on a labelled file."),
    "distill": ("bertforge.cli.distill:distill", "Distil a teacher into a smaller, faster student."),
    "evaluate": ("bertforge.cli.predict:evaluate", "Score a fine-tuned model on a labelled file."),
    "predict": ("bertforge.cli.predict:predict", "Predict with a fine-tuned model."),
    "probe": ("bertforge.cli.probe:probe", "Logistic regression on a frozen encoder's vectors."),
    # serving
    "serve": ("bertforge.cli.serve:serve", "Serve the models over HTTP, with a web page."),
    # checkpoints and reproducing a run
    "convert": ("bertforge.cli.convert:convert", "Write a checkpoint in the Hugging Face layout."),
    "rerun": ("bertforge.cli.rerun:rerun", "Run the command a run card recorded again."),
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
        module, attribute = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, summary) in sorted(COMMANDS.items())])

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BertforgeError as e:
            click.echo(f"error: {in_flags(str(e), self.command_of(ctx.meta['bertforge.argv']))}", err=True)
            sys.exit(getattr(e, "exit_code", 2))

    def command_of(self, argv: list[str]) -> click.Command | None:
        """The (sub)command that `argv` ran: its names are the first words that are not options."""
        command = self
        for word in (w for w in argv if not w.startswith("-")):
            if not isinstance(command, click.Group):
                break
            command = command.get_command(None, word)
        return command


def in_flags(message: str, command: click.Command | None) -> str:
    """A setting named first as the Python API spells it ("learning_rate must be positive", "layer: 99 is not
    ...", "epochs must be ...") is named as the command's option (--learning-rate, --layer, --epochs) where
    the command has that option."""
    match = re.match(r"[a-z][a-z0-9]*(_[a-z0-9]+)+\b|[a-z][a-z0-9]*(?=:| must )", message)
    if match is None or command is None:
        return message
    flag = "--" + match.group().replace("_", "-")
    return flag + message[match.end():] if any(flag in p.opts for p in command.params) else message


@click.group(cls=LazyGroup)
@click.version_option(package_name="bertforge")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def cli(verbose: bool):
    """BERT end to end: tokenize, embed, fill masks, pre-train, fine-tune and serve."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
