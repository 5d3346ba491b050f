"""A pre-trained model and the commands that read it: `pretrain export` (float16, the dropout for fine-tuning, a
run's folder, a hand-edited checkpoint), `pretrain evaluate` and `convert`, never over their source, and the
checks of a model against the prepared data (heads, vocabulary, positions) by every command that reads one."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from bertforge.cli.main import cli
from bertforge.model import BertConfig, BertModel, BertForPreTraining
from bertforge.pretraining.trainer import train
from pretraining_helpers import _config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_export_run_directory_as_float16(data_dir, tmp_path):
    train(_config(data_dir, tmp_path / "run", max_steps=2, checkpoint_every=2))
    result = CliRunner().invoke(cli, ["pretrain", "export", str(tmp_path / "run"), str(tmp_path / "half")])
    assert result.exit_code == 0, result.output
    half = load_file(tmp_path / "half" / "model.safetensors")
    full = load_file(tmp_path / "run" / "final" / "model.safetensors")
    assert all(t.dtype == torch.float16 for t in half.values()) and half.keys() == full.keys()
    for name in full:
        torch.testing.assert_close(half[name].float(), full[name], atol=1e-3, rtol=1e-3)
    result = CliRunner().invoke(cli, ["pretrain", "evaluate", str(tmp_path / "half"), str(data_dir), "--instances", "16"])
    assert result.exit_code == 0 and 0.0 <= json.loads(result.output)["mlm_accuracy"] <= 1.0


def test_export_of_a_run_whose_checkpoint_was_hand_edited_names_the_file(data_dir, tmp_path):
    """Before, settings that are not a run's (a key TrainingConfig lacks, or no object at all) ended in a TypeError
    or KeyError from rebuilding the model."""
    train(_config(data_dir, tmp_path / "run", max_steps=2, checkpoint_every=2))
    manifest = tmp_path / "run" / "checkpoint" / "checkpoint.json"
    state = json.loads(manifest.read_text())
    for args, words in (({**state["args"], "layers": 3}, "its 'args' are not a pretrain train run's settings ("),
                        ([1, 2], "'args' is [1, 2], not an object")):
        manifest.write_text(json.dumps({**state, "args": args}))
        result = CliRunner().invoke(cli, ["pretrain", "export", str(tmp_path / "run"), str(tmp_path / "out")])
        assert result.exit_code == 2 and result.output.startswith(f"error: export {tmp_path / 'run'}: ") \
            and f"{manifest}: " in result.output and words in result.output, result.output


def test_export_sets_the_dropout_for_fine_tuning(data_dir, tmp_path):
    """A run pre-trained without dropout exports with the dropout fine-tuning wants; the weights are unchanged."""
    train(_config(data_dir, tmp_path / "run", max_steps=2, checkpoint_every=2, dropout=0.0))
    for source, name in ((tmp_path / "run", "from-run"), (tmp_path / "run" / "final", "from-model")):
        result = CliRunner().invoke(cli, ["pretrain", "export", str(source), str(tmp_path / name),
                                          "--dtype", "float32", "--dropout", "0.1"])
        assert result.exit_code == 0, result.output
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["hidden_dropout_prob"] == config["attention_probs_dropout_prob"] == 0.1
        exported = load_file(tmp_path / name / "model.safetensors")
        for key, tensor in load_file(tmp_path / "run" / "final" / "model.safetensors").items():
            assert torch.equal(exported[key], tensor), key
    assert json.loads((tmp_path / "run" / "final" / "config.json").read_text())["hidden_dropout_prob"] == 0.0
    result = CliRunner().invoke(cli, ["pretrain", "export", str(tmp_path / "run"), str(tmp_path / "x"), "--dropout", "1"])
    assert result.exit_code == 2 and "Invalid value for '--dropout'" in result.output and "Traceback" not in result.output


def test_export_of_a_run_without_its_checkpoint_points_to_final(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    result = CliRunner().invoke(cli, ["pretrain", "export", str(run), str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"error: {run}: no config.json (or Google's bert_config.json) there\n" in result.output
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=30522)).save_pretrained(run / "final")
    result = CliRunner().invoke(cli, ["pretrain", "export", str(run), str(tmp_path / "out")])
    assert result.exit_code == 2 and f"{run}: a training run's folder, with no model of its own; its final model " \
        f"is {run / 'final'}: use that" in result.output
    assert not (tmp_path / "out").exists()


def test_evaluate_refuses_a_model_without_pretraining_heads(data_dir, tmp_path):
    """Random MLM and NSP heads would be scored as if trained: refused as fill-mask and nsp refuse them."""
    BertModel(BertConfig.from_size("tiny", vocab_size=30522)).save_pretrained(tmp_path / "encoder")
    result = CliRunner().invoke(cli, ["pretrain", "evaluate", str(tmp_path / "encoder"), str(data_dir)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{tmp_path / 'encoder'}: pretrain evaluate needs a masked-language-model head (cls.predictions.*) " \
           "and a next-sentence-prediction head" in result.output
    assert "it can do: feature-extraction" in result.output


def test_evaluate_rejects_zero_batch_size_and_instances(data_dir, tmp_path):
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=30522)).save_pretrained(tmp_path / "model")
    for option in ("--batch-size", "--instances"):
        result = CliRunner().invoke(cli, ["pretrain", "evaluate", str(tmp_path / "model"), str(data_dir), option, "0"])
        assert result.exit_code == 2 and option in result.output and "0" in result.output, result.output


def test_a_model_on_another_vocabulary_is_refused_by_every_command_that_reads_shards(data_dir, tmp_path, tokenizer):
    """A reordered vocab.txt has as many tokens: every id would be read as another token. A smaller table
    cannot hold the data's ids at all. pretrain train --init-from, pretrain evaluate and distill --task mlm
    check both with PretrainingData.check_model, so they say the same."""
    from bertforge.tokenization import BertTokenizer

    tokens = sorted(tokenizer.vocab, key=tokenizer.vocab.get)
    shuffled = tokens[:1000] + tokens[1000:][::-1]
    (tmp_path / "vocab.txt").write_text("\n".join(shuffled) + "\n", encoding="utf-8")
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=len(tokens))).save_pretrained(
        tmp_path / "reordered", tokenizer=BertTokenizer.from_pretrained(tmp_path / "vocab.txt"))
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=100)).save_pretrained(tmp_path / "small")
    for model, message in (("reordered", f"its vocabulary is not the one {data_dir} was prepared with"),
                           ("small", f"its vocabulary has 100 pieces, the prepared data {len(tokenizer)}")):
        model = tmp_path / model
        for option, command in (
                ("--init-from", ["pretrain", "train", data_dir, tmp_path / "run", "--init-from", model,
                                 "--max-steps", "2"]),
                ("MODEL_DIR", ["pretrain", "evaluate", model, data_dir]),
                ("--teacher", ["distill", "--task", "mlm", "--teacher", model, "--train", data_dir,
                               "--output", tmp_path / "student", "--max-steps", "2"])):
            result = CliRunner().invoke(cli, list(map(str, command)))
            assert result.exit_code == 2 and f"{option} {model}: {message}" in result.output, result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "student").exists()


def test_a_model_with_fewer_positions_than_the_data_is_refused_naming_both(data_dir, tmp_path):
    """pretrain evaluate said `sequence of 128 tokens is longer than the model's max_position_embeddings (64);
    truncate it (max_length=64)`: neither folder, and an option the command lacks."""
    model = tmp_path / "short"
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=30522, max_position_embeddings=64)).save_pretrained(model)
    for option, command in (("MODEL_DIR", ["pretrain", "evaluate", model, data_dir]),
                            ("--init-from", ["pretrain", "train", data_dir, tmp_path / "run", "--init-from", model,
                                             "--max-steps", "2"])):
        result = CliRunner().invoke(cli, list(map(str, command)))
        assert result.exit_code == 2 and result.output == (
            f"error: {option} {model}: it has 64 positions (max_position_embeddings), fewer than the 128 tokens "
            f"{data_dir} was prepared for; prepare the data with --max-seq-length 64, or use a model with more "
            "positions\n"), result.output
    assert not (tmp_path / "run").exists()


def test_export_and_convert_write_a_new_folder_never_over_their_source_or_others_files(tmp_path):
    model = tmp_path / "model"
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=30522)).save_pretrained(model)
    from bertforge.tokenization import BertTokenizer

    BertTokenizer.from_pretrained().save_pretrained(model)
    weights = (model / "model.safetensors").read_bytes()
    result = CliRunner().invoke(cli, ["pretrain", "export", str(model), str(model)])
    assert result.exit_code == 2 and "would overwrite the input" in result.output
    assert (model / "model.safetensors").read_bytes() == weights
    run = tmp_path / "finetuned"  # a fine-tuning run's folder: its model beside its logs
    run.mkdir()
    for name in ("config.json", "metrics.json", "train_log.csv"):
        (run / name).write_text("{}")
    for command in (["pretrain", "export", str(model), str(run)], ["convert", str(model), str(run)]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2 and "holds metrics.json, train_log.csv, which this command does not write" \
            in result.output, result.output
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.json", "train_log.csv"]
    assert CliRunner().invoke(cli, ["pretrain", "export", str(model), str(tmp_path / "half")]).exit_code == 0
    assert CliRunner().invoke(cli, ["pretrain", "export", str(model), str(tmp_path / "half"),
                                    "--dtype", "bfloat16"]).exit_code == 0  # an earlier export is replaced


def test_every_command_that_reads_a_model_takes_a_file_of_its_folder(data_dir, tmp_path):
    """pretrain train --init-from and the MODEL_DIR of pretrain evaluate and export were click directories: given
    model/config.json, which predict --model takes, they stopped at click's `Directory '.../config.json' is a file.`
    convert took the file but read it as a TensorFlow checkpoint (`config.json.index: cannot read`)."""
    from bertforge.tokenization import BertTokenizer

    model = tmp_path / "model"
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=30522)).save_pretrained(model, BertTokenizer.from_pretrained())
    config_file = str(model / "config.json")
    result = CliRunner().invoke(cli, ["pretrain", "evaluate", config_file, str(data_dir), "--instances", "8"])
    assert result.exit_code == 0 and json.loads(result.output)["instances"] == 8, result.output
    for command in (["pretrain", "export", "--dtype", "float32"], ["convert"]):
        result = CliRunner().invoke(cli, [*command, config_file, str(tmp_path / "out")])
        assert result.exit_code == 0, (command, result.output)
        assert load_file(tmp_path / "out" / "model.safetensors").keys() == load_file(model / "model.safetensors").keys()
    result = CliRunner().invoke(cli, ["pretrain", "train", str(data_dir), str(tmp_path / "run"), "--init-from",
                                      config_file, "--max-steps", "1", "--batch-size", "2"])
    assert result.exit_code == 0 and (tmp_path / "run" / "final" / "config.json").is_file(), result.output
