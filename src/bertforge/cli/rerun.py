"""`bertforge rerun CARD`: run again the command a run card records."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from bertforge.errors import InputError
from bertforge.runcard import check_inputs, command_name, read_card, rerun_command


@click.command()
@click.argument("card", type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Write into this folder instead of the card's own output folder.")
def rerun(card: Path, output: Path | None):
    """Run the command recorded in CARD (a run_card.json, or the folder holding one) again.

    \b
    Examples:
      bertforge rerun sst2-model/run_card.json --output sst2-model-again
    """
    from bertforge.cli.main import COMMANDS, cli

    recorded = read_card(card)
    name = command_name(recorded)
    if name == "rerun" or name not in COMMANDS:
        problem = "is itself a rerun; rerun the card of the run it repeats" if name == "rerun" else \
            "is not a bertforge command; rerun cannot run it"
        raise InputError(f"{card}: the run card's command {shlex.join(map(str, recorded['command']))!r} {problem}")
    # The command's relative paths start where it ran (cards before this was recorded: here).
    started_in = Path(recorded.get("cwd") or Path.cwd())
    if not started_in.is_dir():
        raise InputError(f"{card}: the run started in {started_in}, which is gone; its relative paths cannot be found")
    here, output = Path.cwd(), output.absolute() if output is not None else None
    os.chdir(started_in)
    try:
        check_inputs(recorded)
        command = rerun_command(recorded, output)
        click.echo(f"(in {started_in}) bertforge " + " ".join(shlex.quote(word) for word in command), err=True)
        try:
            cli.main(args=command, prog_name="bertforge", standalone_mode=False)
        except click.UsageError as e:  # a hand-edited card, or one of a version with other options
            raise InputError(f"{card}: the run card's command does not run here: {e.format_message()}") from None
    finally:
        os.chdir(here)
