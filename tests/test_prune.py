"""`bertforge distill --prune`: a student cut from its teacher (Minitron's width pruning). Checked on real SST-2
sentences: dropping parts that carry nothing leaves the teacher's outputs unchanged, the parts with no activation
are the ones dropped and every kept weight is the teacher's own, a student cut from its teacher starts closer to
it than a fresh one, and bad combinations end in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bertforge.cli.main import cli
from bertforge.distillation.prune import prune_width, pruned_config
from bertforge.errors import ConfigError
from bertforge.model import BertConfig, BertForSequenceClassification
from bertforge.tasks import ClassificationTask, read_task_data
from bertforge.training.logs import TRAIN_LOG

from conftest import fixture_data

pytestmark = pytest.mark.usefixtures("one_thread")
LABELS = {0: "0", 1: "1"}


@pytest.fixture(scope="module")
def sentences(tokenizer) -> list[dict]:
    """96 SST-2 training sentences, encoded as a task encodes them."""
    examples = read_task_data("classification", fixture_data("sst2", "train.tsv"))[:96]
    return ClassificationTask(list(LABELS.values())).encode(examples, tokenizer, 64)


def _teacher(hidden: int = 64, heads: int = 4, intermediate: int = 128, layers: int = 2):
    torch.manual_seed(0)
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, id2label=LABELS)
    return BertForSequenceClassification(config).eval()


def _logits(model, features: list[dict]) -> torch.Tensor:
    batch = [f["input_ids"] for f in features]
    longest = max(map(len, batch))
    ids = torch.tensor([ids + [0] * (longest - len(ids)) for ids in batch])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=(ids != 0).long()).logits


def _cut(teacher, config: BertConfig, sentences) -> BertForSequenceClassification:
    student = BertForSequenceClassification(config).eval()
    student.load_state_dict(prune_width(teacher, config, sentences))
    return student


def test_cutting_units_that_carry_nothing_leaves_the_teachers_outputs_unchanged(sentences):
    teacher = _teacher()
    dead = {0: torch.arange(0, 128, 4), 1: torch.arange(1, 128, 4)}  # 32 units a layer: GELU(0) = 0 reaches nothing
    for i, units in dead.items():
        teacher.bert.encoder.layers[i].intermediate.weight.data[units] = 0
        teacher.bert.encoder.layers[i].intermediate.bias.data[units] = 0
    student = _cut(teacher, pruned_config(teacher.config, 64, 96), sentences)
    assert student.config.intermediate_size == 96
    for i, units in dead.items():
        kept = [unit for unit in range(128) if unit not in set(units.tolist())]
        torch.testing.assert_close(student.bert.encoder.layers[i].output.weight,
                                   teacher.bert.encoder.layers[i].output.weight[:, kept], rtol=0, atol=0)
    torch.testing.assert_close(_logits(student, sentences), _logits(teacher, sentences), rtol=1e-5, atol=1e-5)
    # keeping everything is the teacher itself
    whole = _cut(teacher, pruned_config(teacher.config, 64, 128), sentences)
    torch.testing.assert_close(_logits(whole, sentences), _logits(teacher, sentences), rtol=0, atol=0)


def test_silent_channels_and_heads_are_the_ones_dropped_and_kept_weights_are_the_teachers(sentences):
    teacher = _teacher()  # 64 wide, 4 heads of 16
    bert = teacher.bert
    silent = list(range(32, 64))  # every LayerNorm writes 0 to these channels
    for norm in [bert.embeddings.norm] + [n for layer in bert.encoder.layers
                                          for n in (layer.attention_norm, layer.output_norm)]:
        norm.weight.data[silent] = 0
        norm.bias.data[silent] = 0
    dropped_heads = {0: [0, 3], 1: [1, 2]}
    for i, heads in dropped_heads.items():  # zero values: these heads' contexts are 0
        for head in heads:
            rows = slice(2 * 64 + head * 16, 2 * 64 + (head + 1) * 16)
            bert.encoder.layers[i].attention.qkv.weight.data[rows] = 0
            bert.encoder.layers[i].attention.qkv.bias.data[rows] = 0
    config = pruned_config(teacher.config, 32, 128)
    assert (config.num_attention_heads, config.head_dim) == (2, 16)
    student = _cut(teacher, config, sentences)
    hidden = list(range(32))
    torch.testing.assert_close(student.bert.embeddings.word.weight, bert.embeddings.word.weight[:, hidden])
    torch.testing.assert_close(student.classifier.weight, teacher.classifier.weight[:, hidden])
    torch.testing.assert_close(student.bert.pooler.dense.weight, bert.pooler.dense.weight[hidden][:, hidden])
    for i, heads in dropped_heads.items():
        kept = [head for head in range(4) if head not in heads]
        columns = [head * 16 + d for head in kept for d in range(16)]
        rows = [part * 64 + column for part in range(3) for column in columns]
        ours, theirs = student.bert.encoder.layers[i], bert.encoder.layers[i]
        torch.testing.assert_close(ours.attention.qkv.weight, theirs.attention.qkv.weight[rows][:, hidden])
        torch.testing.assert_close(ours.attention.qkv.bias, theirs.attention.qkv.bias[rows])
        torch.testing.assert_close(ours.attention.out.weight, theirs.attention.out.weight[hidden][:, columns])
        torch.testing.assert_close(ours.intermediate.weight, theirs.intermediate.weight[:, hidden])
        torch.testing.assert_close(ours.output_norm.bias, theirs.output_norm.bias[hidden])


def test_a_width_that_is_not_whole_heads_is_refused():
    teacher = _teacher()
    with pytest.raises(ConfigError, match="multiple of the teacher's head size \\(16\\)"):
        pruned_config(teacher.config, 40, 128)
    with pytest.raises(ConfigError, match="feed-forward width of 256"):
        pruned_config(teacher.config, 32, 256)


# --- the command ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wide_teacher(tmp_path_factory, tokenizer) -> Path:
    """A 4-layer, 256-wide classifier (2 heads of 128) whose head is scaled up, so that its outputs differ from
    sentence to sentence as a trained teacher's do."""
    directory = tmp_path_factory.mktemp("teacher")
    teacher = _teacher(hidden=256, heads=2, intermediate=512, layers=4)
    teacher.classifier.weight.data *= 10
    teacher.save_pretrained(directory, tokenizer)
    return directory


@pytest.fixture(scope="module")
def sst2(tmp_path_factory) -> Path:
    lines = fixture_data("sst2", "train.tsv").read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("sst2") / "train.tsv"
    path.write_text("\n".join(lines[:97]) + "\n", encoding="utf-8")
    return path


def _distill(*arguments) -> CliRunner:
    return CliRunner().invoke(cli, ["distill", "--task", "classification", "--threads", "1", "--batch-size", "16",
                                    *map(str, arguments)])


def _first_soft_loss(output: Path) -> float:
    header, first = (output / TRAIN_LOG).read_text(encoding="utf-8").splitlines()[:2]
    return float(dict(zip(header.split(","), first.split(",")))["soft_loss"])


def test_a_student_cut_from_its_teacher_starts_closer_to_it_than_a_fresh_one(wide_teacher, sst2, tmp_path):
    common = ("--teacher", wide_teacher, "--train", sst2, "--student-size", "L2-H128", "--epochs", 2,
              "--learning-rate", "1e-4")
    pruned = _distill(*common, "--prune", "--output", tmp_path / "pruned")
    assert pruned.exit_code == 0, pruned.output
    student = json.loads(pruned.stdout.strip().splitlines()[-1].rsplit("\r", 1)[-1])["student"]
    assert (student["layers"], student["hidden_size"], student["attention_heads"]) == (2, 128, 1)
    assert student["from_teacher_layers"] == [0, 2] and student["pruned_on"] == 96
    assert BertForSequenceClassification.from_pretrained(tmp_path / "pruned").config.hidden_size == 128
    fresh = _distill(*common, "--output", tmp_path / "fresh")
    assert fresh.exit_code == 0, fresh.output
    assert _first_soft_loss(tmp_path / "pruned") < 0.75 * _first_soft_loss(tmp_path / "fresh")


@pytest.mark.parametrize("options, message", [
    (("--prune",), "give --student-size"),
    (("--prune", "--student-layers", 2), "give --student-size, not --student-layers"),
    (("--prune", "--student-size", "L2-H128", "--student", "."), "give one of them"),
])
def test_prune_without_a_size_to_cut_to_is_refused(wide_teacher, sst2, tmp_path, options, message):
    result = _distill("--teacher", wide_teacher, "--train", sst2, *options, "--output", tmp_path / "out")
    lines = [line for line in result.output.split("\n") if line.strip() and not line.startswith("\r")]
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert message in lines[0]
