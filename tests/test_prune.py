"""`bertforge.distillation.prune`: a student cut from its teacher (Minitron's depth and width pruning). Checked on
real SST-2 sentences: the layers that change nothing are the ones that leave, dropping parts that carry nothing leaves
the teacher's outputs unchanged, the parts with no activation are the ones dropped and every kept weight is the
teacher's own, and a width that is not whole heads is refused.
The command (`distill --prune`) is tested in test_distill_prune.py."""

from __future__ import annotations


import pytest
import torch

from bertforge.distillation.prune import important_layers, prune_width, pruned_config
from bertforge.errors import ConfigError
from bertforge.model import BertConfig, BertForSequenceClassification
from bertforge.tasks import ClassificationTask, read_task_data

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
    state, *_ = prune_width(teacher, config, sentences)
    student.load_state_dict(state)
    return student


def _pass_through(layer) -> None:
    """Make a post-LayerNorm layer write nothing into the residual stream: with its LayerNorms' unit scale and
    zero shift it then maps a LayerNorm's output to itself (up to eps)."""
    for linear in (layer.attention.out, layer.output):
        linear.weight.data.zero_()
        linear.bias.data.zero_()


def test_the_layers_that_change_nothing_are_the_first_to_leave(sentences):
    teacher = _teacher(layers=5)
    for i in (1, 3):
        _pass_through(teacher.bert.encoder.layers[i])
    assert important_layers(teacher, 4, sentences) in ([0, 2, 3, 4], [0, 1, 2, 4])  # 1 and 3 tie
    assert important_layers(teacher, 3, sentences) == [0, 2, 4]
    teacher.train()
    assert important_layers(teacher, 5, sentences) == [0, 1, 2, 3, 4]
    assert teacher.training  # measured in eval mode (no dropout), then the mode is restored


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
