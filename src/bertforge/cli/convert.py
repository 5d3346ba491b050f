"""`bertforge convert`: any checkpoint bertforge reads → the Hugging Face layout transformers loads."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import click

from bertforge.errors import InputError
from bertforge.io.atomic import atomic_directory, check_output_dir
from bertforge.paths import MODEL_FILES

log = logging.getLogger("bertforge.cli")


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("destination", type=click.Path(path_type=Path))
@click.option("--do-lower-case/--no-do-lower-case", default=None,
              help="For folders that do not record it (Google's): lower-case text? Default: from the folder "
                   "name, as Google's tokenization.py decides (cased_L-12_H-768_A-12 → no).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True,
              help="Storage type of the weights: float16 halves the file (loaders cast back to float32).")
def convert(source, destination, do_lower_case, dtype):
    """Write the checkpoint SOURCE to DESTINATION as config.json + model.safetensors + vocab.txt +
    tokenizer.json, with every head it has (MLM, NSP, SQuAD, classifier).

    SOURCE is a Google BERT folder (bert_config.json + bert_model.ckpt.*, or the model.ckpt-N that
    run_classifier.py / run_squad.py leave), a TensorFlow checkpoint prefix, or a Hugging Face
    folder (transformers 4 or 5). No TensorFlow is needed.

    \b
    Examples:
      bertforge convert uncased_L-12_H-768_A-12 bert-base-uncased
      bertforge convert squad_output/model.ckpt-21899 my-squad-model
      bertforge convert runs/conll-student small-ner-model --dtype float16
    """
    import torch

    from bertforge.model import ARCHITECTURES
    from bertforge.model.checkpoint import model_folder
    from bertforge.tokenization import BertTokenizer

    check_output_dir(destination, "DESTINATION", inputs=(source,), holds="config.json", only=MODEL_FILES)
    folder, prefix = model_folder(source)
    settings = {}
    recorded = (folder / BertTokenizer.config_file_name).exists()
    if not recorded:  # Google's folders, and others that do not record it
        if do_lower_case is None and (folder / "bert_config.json").exists():
            do_lower_case = re.search(r"(^|[_-])cased", folder.name) is None
        if do_lower_case is not None:
            settings["do_lower_case"] = do_lower_case
    tokenizer = BertTokenizer.from_pretrained(folder, **settings)
    if recorded and do_lower_case is not None and tokenizer.do_lower_case != do_lower_case:
        raise InputError(f"--{'' if do_lower_case else 'no-'}do-lower-case: {folder} records do_lower_case "
                         f"{str(not do_lower_case).lower()} in {BertTokenizer.config_file_name}, which its model "
                         f"was trained with; the option is for folders that do not record it")
    architecture = _head_model(prefix, folder)
    model = ARCHITECTURES[architecture].from_pretrained(source)
    with atomic_directory(destination) as build:
        model.to(getattr(torch, dtype)).save_pretrained(build, tokenizer=tokenizer)
    click.echo(f"{destination}: {architecture}, {model.config.num_hidden_layers} layers, hidden "
               f"{model.config.hidden_size}, vocabulary {len(tokenizer)}"
               + ("" if tokenizer.do_lower_case else ", cased"))


def _head_model(prefix: Path | None, folder: Path) -> str:
    """The model class that carries every head the checkpoint has (MLM and NSP → pre-training)."""
    from bertforge.model.capabilities import architectures_of, head_model, weight_tasks
    from bertforge.model.checkpoint import read_weights
    from bertforge.model.tf_checkpoint import read_tf_checkpoint

    weights = read_tf_checkpoint(prefix) if prefix is not None else read_weights(folder)
    return head_model(weight_tasks(weights, architectures_of(folder)))
