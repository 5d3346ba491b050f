"""`bertforge rerun CARD`: run again the command a run card records."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from bertforge.runcard import read_card, rerun_command


@click.command()
@click.argument("card", type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Write into this folder instead of the card's own output folder.")
def rerun(card: Path, output: Path | None):
    """Run the command recorded in CARD (a run_card.json, or the folder holding one) again.

    \b
    Example:
      bertforge rerun sst2-model/run_card.json --output sst2-model-again
    """
    from bertforge.cli.main import cli

    command = rerun_command(read_card(card), output)
    click.echo("bertforge " + " ".join(shlex.quote(word) for word in command), err=True)
    cli.main(args=command, prog_name="bertforge", standalone_mode=False)
