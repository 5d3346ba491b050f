"""`distill --task mlm`, DistilBERT's general distillation on `pretrain prepare` shards: the student saves as a
masked LM that transformers loads, and its control run learns on the MLM loss alone; a teacher without a
masked-LM head is refused as fill-mask refuses it."""

from __future__ import annotations

import gzip
import json

import pytest
from click.testing import CliRunner

from bertforge.cli.main import cli

from conftest import fixture_data
from distill_helpers import _distill, _falls, _one_line_error, _teacher, _train_log

pytestmark = pytest.mark.usefixtures("one_thread")


def test_general_distillation_on_shards_saves_a_masked_lm_transformers_loads(teachers, tokenizer, tmp_path):
    from transformers import DistilBertForMaskedLM

    from bertforge.pretraining.shards import PrepareOptions, prepare

    with gzip.open(fixture_data("corpus", "gutenberg_train.jsonl.gz"), "rt", encoding="utf-8") as f:
        book = json.loads(next(f))["text"]
    for name, text in (("shards", book[20_000:45_000]), ("held_out", book[45_000:52_000])):  # the book's next pages
        corpus = tmp_path / f"{name}.jsonl"
        corpus.write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")
        prepare([corpus], tmp_path / name, tokenizer, PrepareOptions(max_seq_length=64, dupe_factor=2), progress=False)
    output = tmp_path / "general"
    summary = _distill("--task", "mlm", "--teacher", teachers["mlm"], "--train", tmp_path / "shards", "--validation",
                       tmp_path / "held_out", "--max-steps", 60, "--learning-rate", "2e-3", "--save-as", "distilbert",
                       "--output", output)
    assert summary["student"]["from_teacher_layers"] == [0, 2] and "mlm_accuracy" in summary["eval"]
    # (with a random teacher the KL term starts near 0 and the MLM term drives the fall)
    for column in ("loss", "mlm_loss"):
        first, last = _falls(output, column)
        assert last < 0.9 * first, (column, first, last)
    model = DistilBertForMaskedLM.from_pretrained(output / "final")
    assert model.config.n_layers == 2

    # The control run: the same student from the same layers on the MLM loss alone (--alpha 0).
    control = tmp_path / "control"
    summary = _distill("--task", "mlm", "--teacher", teachers["mlm"], "--train", tmp_path / "shards", "--max-steps",
                       20, "--learning-rate", "2e-3", "--alpha", 0, "--weight-decay", 0, "--lr-scheduler-type", "cosine",
                       "--checkpoint-every", 10, "--output", control)
    assert summary["student"]["teacher_losses"] is False
    run = json.loads((control / "checkpoint" / "checkpoint.json").read_text())["run"]  # finetune's options reach it
    assert (run["weight_decay"], run["lr_scheduler_type"]) == (0.0, "cosine")
    assert set(_train_log(control, "kl_loss")) == {0.0} and set(_train_log(control, "cos_loss")) == {0.0}
    assert min(_train_log(output, "cos_loss")[:20]) > 0  # the teacher's terms were there in the run above
    assert _train_log(control, "loss") == _train_log(control, "mlm_loss")


def test_a_general_teacher_without_an_mlm_head_is_refused_as_fill_mask_refuses_it(tokenizer, tmp_path):
    """distill --task mlm had its own check (`the checkpoint has no masked-LM head to distil from`) beside the one
    fill-mask and pretrain evaluate share; it now loads its teacher through that one."""
    from bertforge.model import BertModel
    from bertforge.pretraining.shards import PrepareOptions, prepare

    encoder = _teacher(tmp_path / "encoder", BertModel, tokenizer)
    (tmp_path / "books.txt").write_text("It was a bright cold day.\nThe clocks were striking.\n\nCall me Ishmael.\n"
                                        "Some years ago I went to sea.\n", encoding="utf-8")
    prepare([tmp_path / "books.txt"], tmp_path / "shards", tokenizer, PrepareOptions(max_seq_length=32, dupe_factor=1),
            progress=False)
    line = _one_line_error("--task", "mlm", "--teacher", encoder, "--train", tmp_path / "shards", "--output",
                           tmp_path / "out")
    head = ("needs a masked-language-model head (cls.predictions.*), and this checkpoint has none; it can do: "
            "feature-extraction, sentence-embedding, contextual-similarity, attention")
    assert line == f"error: --teacher {encoder}: distill --task mlm {head}"
    fill_mask = CliRunner().invoke(cli, ["fill-mask", "--model", str(encoder), "a [MASK] day"])
    assert fill_mask.output.strip().splitlines()[-1] == f"error: {encoder}: fill-mask {head}"
    assert not (tmp_path / "out").exists()
