"""The `finetune` command's training options reach the run: the learning rate and batch size it defaults to for
the model's width and the task, layer-wise rate decay, the cosine schedule, weight decay, Adam's settings and
gradient clipping, frozen word embeddings, batches drawn at random, and progress written to a log file in a few
plain lines."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from bertforge.cli.main import cli
from bertforge.errors import ConfigError
from bertforge.model import BertConfig, BertForSequenceClassification, BertModel, default_model_path
from bertforge.runcard import read_card, rerun_command
from bertforge.tasks.trainer import FeatureBatches
from bertforge.tokenization import BertTokenizer
from bertforge.training import TrainingArguments, learning_rate_factor

from training_helpers import _finetune_command


pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_finetune_logged_to_a_file_writes_its_progress_in_a_few_plain_lines(tiny_encoder, tmp_path):
    """Every step logs its figures; off a terminal (CliRunner's stderr, like a log file) the bar must not redraw
    for each of them: it shows where it starts and where it ends, each on a line of its own."""
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "run", "--max-steps", "12"))
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if line.startswith("fine-tuning:")]
    assert "\r" not in result.stderr and 2 <= len(progress) <= 3, result.stderr
    assert "0/12" in progress[0] and "12/12" in progress[-1] and "loss=" in progress[-1]


def test_finetune_without_learning_rate_takes_the_default_for_the_models_width(tiny_encoder, tmp_path):
    """2e-4 at batch 32 (the sweep's choice for 384-wide MiniLM) up to 384 wide, BERT's 3e-5 above; the
    card records the rate the run used, and the run's metrics agree."""
    wide = tmp_path / "wide-encoder"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=512, num_hidden_layers=1, num_attention_heads=8,
                         intermediate_size=64)).save_pretrained(wide, BertTokenizer.from_pretrained(default_model_path()))
    for encoder, expected in ((tiny_encoder, 2e-4), (wide, 3e-5)):
        output = tmp_path / f"run-{encoder.name}"
        command = _finetune_command(encoder, output, "--max-steps", "1")
        at = command.index("--learning-rate")
        del command[at:at + 2]
        command[command.index("--batch-size") + 1] = "32"
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, result.output
        assert read_card(output)["options"]["learning_rate"] == expected
        metrics = json.loads((output / "metrics.json").read_text())
        assert metrics["args"]["learning_rate"] == expected


def test_finetune_defaults_batch_16_and_decay_for_single_sentences_only(tiny_encoder, tmp_path):
    """With neither option given: batch 16, the rate scaled to it (2e-4 × √(16/32)), and layer-wise decay 0.8
    for classification, none for sentence pairs and NER; the card records what the run took, so
    `rerun` keeps it if the defaults change again."""
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("sentence1\tsentence2\tlabel\n" + "".join(f"a{i}\tb{i}\t{i % 2}\n" for i in range(40)))
    conll = tmp_path / "tags.conll"
    conll.write_text("".join(f"word{i} O\nParis B-LOC\n\n" for i in range(40)))
    runs = {"classification": ([], 0.8), "pair-classification": (["--train", str(pairs), "--text-column", "sentence1",
                                                                    "--text-pair-column", "sentence2"], 1.0),
            "ner": (["--train", str(conll)], 1.0)}
    for task, (data, decay) in runs.items():
        output = tmp_path / task
        command = _finetune_command(tiny_encoder, output, "--max-steps", "1", *data)
        command[command.index("--task") + 1] = task
        for option in ("--batch-size", "--learning-rate"):
            at = command.index(option)
            del command[at:at + 2]
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, (task, result.output)
        settings = json.loads((output / "metrics.json").read_text())["args"]
        assert (settings["batch_size"], settings["layer_lr_decay"]) == (16, decay), task
        assert settings["learning_rate"] == pytest.approx(2e-4 * 0.5 ** 0.5)
        options = read_card(output)["options"]
        assert (options["batch_size"], options["layer_lr_decay"]) == (16, decay)
        rerun = rerun_command(read_card(output))
        pinned = rerun[rerun.index("--batch-size"):]
        # a sentence classifier also records its pooling: the tiny encoder's own [CLS]
        assert pinned == ["--batch-size", "16", "--layer-lr-decay", str(decay)] + \
            (["--classifier-pooling", "cls"] if task == "classification" else [])


def test_finetune_layer_lr_decay_moves_the_lower_layers_less(tiny_encoder, tmp_path):
    start = BertModel.from_pretrained(tiny_encoder).state_dict()
    moved = {}
    for decay in ("1", "0.1"):
        output = tmp_path / f"decay{decay}"
        result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, output, "--max-steps", "3",
                                                           "--layer-lr-decay", decay))
        assert result.exit_code == 0, result.output
        assert json.loads((output / "metrics.json").read_text())["args"]["layer_lr_decay"] == float(decay)
        weights = BertForSequenceClassification.from_pretrained(output).bert.state_dict()
        moved[decay] = {name: float((weights[name] - start[name]).abs().max())
                        for name in ("embeddings.word.weight", "encoder.layers.1.output.weight")}
    # the top layer moves at 0.1 times the peak rate, the embeddings at 0.001 times
    assert moved["0.1"]["embeddings.word.weight"] < moved["1"]["embeddings.word.weight"] / 100
    assert moved["1"]["encoder.layers.1.output.weight"] / 20 < moved["0.1"]["encoder.layers.1.output.weight"] \
        < moved["1"]["encoder.layers.1.output.weight"] / 5
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "zero", "--layer-lr-decay", "0"))
    assert result.exit_code == 2 and "Invalid value for '--layer-lr-decay': 0.0 is not in the range 0<x<=1" \
        in result.output


def test_finetune_lr_scheduler_type_cosine_reaches_the_run(tiny_encoder, tmp_path):
    output = tmp_path / "cosine"
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, output, "--max-steps", "8",
                                                       "--lr-scheduler-type", "cosine"))
    assert result.exit_code == 0, result.output
    assert json.loads((output / "metrics.json").read_text())["args"]["lr_scheduler_type"] == "cosine"
    rows = (output / "train_log.csv").read_text().splitlines()
    column = rows[0].split(",").index("learning_rate")
    logged = [float(row.split(",")[column]) for row in rows[1:]]
    # --max-steps 8 is the schedule's length: 1 warm-up step (10%), then the cosine over the other 7
    assert logged == pytest.approx([1e-3 * learning_rate_factor(s, 1, 8, "cosine") for s in range(8)])
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "step", "--lr-scheduler-type", "step"))
    assert result.exit_code == 2 and "Invalid value for '--lr-scheduler-type': 'step' is not one of 'linear', " \
        "'cosine'." in result.output


def test_finetune_weight_decay_shrinks_the_weight_matrices_only(tiny_encoder, tmp_path):
    trained = {}
    for decay in ("0", "0.5"):
        output = tmp_path / f"wd{decay}"
        result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, output, "--max-steps", "1",
                                                           "--layer-lr-decay", "1", "--weight-decay", decay))
        assert result.exit_code == 0, result.output
        assert json.loads((output / "metrics.json").read_text())["args"]["weight_decay"] == float(decay)
        trained[decay] = BertForSequenceClassification.from_pretrained(output).state_dict()
    start = BertModel.from_pretrained(tiny_encoder).state_dict()
    # One AdamW step at the peak rate 1e-3 (no warm-up step in a 1-step run): the same gradient step in
    # both runs, and with decay each matrix also shrinks by 1e-3 × 0.5 of its start; vectors do not decay.
    for name in ("embeddings.word.weight", "encoder.layers.1.output.weight", "encoder.layers.0.output.bias",
                 "embeddings.norm.weight"):
        shrink = -1e-3 * 0.5 * start[name] if start[name].ndim >= 2 else torch.zeros_like(start[name])
        assert torch.allclose(trained["0.5"][f"bert.{name}"] - trained["0"][f"bert.{name}"], shrink, atol=1e-7), name
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "bad", "--weight-decay", "-0.1"))
    assert result.exit_code == 2 and "Invalid value for '--weight-decay': -0.1 is not in the range x>=0." \
        in result.output
    with pytest.raises(ConfigError, match="weight_decay must be 0 or more, got -0.1"):
        TrainingArguments(output_dir="x", weight_decay=-0.1)


def test_finetune_adam_beta2_epsilon_and_max_grad_norm_reach_the_optimiser(tiny_encoder, tmp_path):
    start = BertModel.from_pretrained(tiny_encoder).state_dict()["embeddings.word.weight"]
    moved = {}
    for name, options in (("default", []), ("set", ["--adam-beta2", "0.98", "--adam-epsilon", "1e-5",
                                                    "--max-grad-norm", "1e-9"])):
        output = tmp_path / name
        result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, output, "--max-steps", "4",
                                                           "--weight-decay", "0", *options))
        assert result.exit_code == 0, result.output
        groups = json.loads((output / "checkpoint" / "checkpoint.json").read_text())["optimizer"]["param_groups"]
        assert {tuple(group["betas"]) for group in groups} == {(0.9, 0.98 if options else 0.999)}
        assert {group["eps"] for group in groups} == {1e-5 if options else 1e-6}
        weights = BertForSequenceClassification.from_pretrained(output).bert.state_dict()["embeddings.word.weight"]
        moved[name] = float((weights - start).abs().max())
        rows = (output / "train_log.csv").read_text().splitlines()
        column = rows[0].split(",").index("grad_norm")
        assert all(float(row.split(",")[column]) > 1e-3 for row in rows[1:])  # the norm before clipping
    # gradients clipped to a total norm of 1e-9 fall far below AdamW's epsilon (1e-5): steps of lr / 10,000 at most
    assert moved["set"] < moved["default"] / 100
    for option, value, message in (("--adam-beta2", "1", "1.0 is not in the range 0<=x<1"),
                                   ("--adam-epsilon", "0", "0.0 is not in the range x>0"),
                                   ("--ema-decay", "1", "1.0 is not in the range 0<=x<1"),
                                   ("--max-grad-norm", "0", "0.0 is not in the range x>0")):
        result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "bad", option, value))
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output and message in result.output


def test_freeze_word_embeddings_keeps_the_token_table_and_trains_the_rest(tiny_encoder, tmp_path):
    start = BertModel.from_pretrained(tiny_encoder).state_dict()
    output = tmp_path / "frozen"
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, output, "--max-steps", "4",
                                                       "--freeze-word-embeddings"))
    assert result.exit_code == 0, result.output
    trained = BertForSequenceClassification.from_pretrained(output).bert.state_dict()
    assert torch.equal(trained["embeddings.word.weight"], start["embeddings.word.weight"])
    moved = [name for name, weight in trained.items() if name in start and not torch.equal(weight, start[name])]
    assert "embeddings.position.weight" in moved and len(moved) == len(start) - 1
    optimizer = json.loads((output / "checkpoint" / "checkpoint.json").read_text())["optimizer"]
    assert sum(len(group["params"]) for group in optimizer["param_groups"]) == len(start) + 2 - 1  # + head, − table
    assert json.loads((output / "metrics.json").read_text())["args"]["freeze_word_embeddings"] is True
    assert read_card(output)["options"]["freeze_word_embeddings"] is True


def test_finetune_without_group_by_length_draws_batches_at_random(tiny_encoder, tmp_path):
    features = [{"input_ids": [0] * n} for n in range(1, 401)]
    spreads = {}
    for group_by_length in (True, False):
        source = FeatureBatches(features, 8, seed=3, smallest=1, group_by_length=group_by_length)
        epochs = [source._epoch_batches(epoch) for epoch in (0, 1)]
        for batches in epochs:  # every example once an epoch, in batches of 8
            assert sorted(i for batch in batches for i in batch) == list(range(400))
            assert {len(batch) for batch in batches} == {8}
        assert epochs[0] != epochs[1]
        spreads[group_by_length] = [max(map(len, (features[i]["input_ids"] for i in batch))) -
                                    min(map(len, (features[i]["input_ids"] for i in batch))) for batch in epochs[0]]
    # one window of 50 batches holds all 400: the grouped batches are runs of 8 consecutive lengths;
    # random draws of 8 from 400 span about 7/9 of the range
    assert max(spreads[True]) == 7 and sum(spreads[False]) / 50 > 200
    output = tmp_path / "random"
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, output, "--max-steps", "1",
                                                       "--no-group-by-length"))
    assert result.exit_code == 0, result.output
    assert json.loads((output / "metrics.json").read_text())["args"]["group_by_length"] is False
    assert read_card(output)["options"]["group_by_length"] is False
