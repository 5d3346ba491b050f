"""The distillation objective, checked against independent computations: the soft-target KL and the hidden-state
cosine, unlabelled rows counted in the soft term only, the attention loss comparing each student head with the
teacher head it came from; the teacher outputs cached for it equal fresh ones. In a run, --hidden-weight and
--attention-weight teach a cut student what it kept of its teacher, and are refused where nothing matches."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from bertforge.distillation import add_teacher_logits
from bertforge.distillation.losses import hidden_cosine, soft_target_kl
from bertforge.model import BertForSequenceClassification, BertForTokenClassification
from bertforge.tasks import ClassificationTask, QuestionAnsweringTask, TokenClassificationTask, read_task_data
from bertforge.training.logs import TRAIN_LOG

from distill_helpers import _distill, _falls, _one_line_error, _train_log

pytestmark = pytest.mark.usefixtures("one_thread")


def test_losses_match_an_independent_computation():
    torch.manual_seed(0)
    student, teacher, temperature = torch.randn(5, 7), torch.randn(5, 7), 2.5
    p = np.exp(teacher.numpy() / temperature)
    p /= p.sum(-1, keepdims=True)
    q = np.exp(student.numpy() / temperature)
    q /= q.sum(-1, keepdims=True)
    kl = (p * (np.log(p) - np.log(q))).sum() * temperature ** 2
    assert soft_target_kl(student, teacher, temperature).item() == pytest.approx(kl, rel=1e-5)
    a, b = torch.randn(4, 16), torch.randn(4, 16)
    cosine = 1 - (a.numpy() * b.numpy()).sum(-1) / np.linalg.norm(a.numpy(), axis=-1) / np.linalg.norm(b.numpy(), axis=-1)
    assert hidden_cosine(a, b).item() == pytest.approx(cosine.sum(), rel=1e-5)


def test_unlabelled_rows_count_in_the_soft_term_only():
    """The objective's loss against numpy: α × mean KL over all rows + (1 − α) × mean cross-entropy
    over the labelled rows (label -100: a row the teacher alone labels)."""
    from types import SimpleNamespace

    from bertforge.distillation import DistillationObjective

    torch.manual_seed(0)
    student, teacher = torch.randn(6, 3), torch.randn(6, 3)
    labels = torch.tensor([0, 2, -100, 1, -100, -100])
    batch = {"input_ids": torch.zeros(6, 4, dtype=torch.long), "attention_mask": torch.ones(6, 4, dtype=torch.long),
             "token_type_ids": torch.zeros(6, 4, dtype=torch.long), "labels": labels, "teacher_logits": teacher}
    objective = DistillationObjective("sequence", alpha=0.3, temperature=2.0)
    assert objective.counts(batch) == [6, 3, 0]
    loss, _ = objective.loss(lambda **inputs: SimpleNamespace(logits=student), batch, [6, 3, 0])

    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    s, t = student.numpy().astype(np.float64), teacher.numpy().astype(np.float64)
    kl = (np.exp(log_softmax(t / 2)) * (log_softmax(t / 2) - log_softmax(s / 2))).sum(-1).mean() * 4
    labelled = [0, 1, 3]
    cross_entropy = -log_softmax(s)[labelled, labels.numpy()[labelled]].mean()
    assert loss.item() == pytest.approx(0.3 * kl + 0.7 * cross_entropy, rel=1e-5)

    # with --hidden-weight: + β × the mean over real tokens (not padding) of 1 − cos(student, teacher)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
    student_hidden, teacher_hidden = torch.randn(6, 4, 5), torch.randn(6, 4, 5).half()
    batch.update(attention_mask=mask, teacher_hidden=teacher_hidden)
    objective = DistillationObjective("sequence", alpha=0.3, temperature=2.0, hidden_weight=0.4)
    assert objective.counts(batch) == [6, 3, 16]
    loss, _ = objective.loss(lambda **inputs: SimpleNamespace(logits=student, hidden_states=(None, student_hidden)),
                             batch, [6, 3, 16])
    real = mask.numpy().astype(bool)
    a, b = student_hidden.numpy()[real], teacher_hidden.float().numpy()[real]
    cosine = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert loss.item() == pytest.approx(0.3 * kl + 0.7 * cross_entropy + 0.4 * (1 - cosine).mean(), rel=1e-5)


def test_the_attention_loss_compares_each_student_head_with_the_teacher_head_it_came_from():
    """γ × the mean over real tokens of the KL between the teacher's and the student's attention rows, averaged
    over the mapped layers and heads, against numpy; padded queries and keys add nothing."""
    from types import SimpleNamespace

    from bertforge.distillation import DistillationObjective

    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])

    def attention(heads):  # rows that sum to 1 over the real keys, 0 on padded ones
        scores = torch.randn(3, heads, 4, 4).masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
        return scores.softmax(-1)

    teacher_maps = tuple(attention(3) for _ in range(3))  # a teacher of 3 layers with 3 heads each
    student_maps = tuple(attention(2) for _ in range(2))  # a student of 2 layers with 2 heads each
    attention_map = [(0, torch.tensor([0, 2])), (2, torch.tensor([1, 2]))]
    teacher = torch.nn.Module()
    teacher.forward = lambda **inputs: SimpleNamespace(attentions=teacher_maps)
    batch = {"input_ids": torch.ones(3, 4, dtype=torch.long), "attention_mask": mask,
             "token_type_ids": torch.zeros(3, 4, dtype=torch.long), "labels": torch.tensor([0, 1, -100]),
             "teacher_logits": torch.zeros(3, 2)}
    logits = torch.zeros(3, 2)
    objective = DistillationObjective("sequence", alpha=1.0, temperature=1.0, attention_weight=0.5, teacher=teacher,
                                      attention_map=attention_map)
    assert objective.counts(batch) == [3, 2, 9]
    loss, values = objective.loss(lambda **inputs: SimpleNamespace(logits=logits, attentions=student_maps), batch,
                                  [3, 2, 9])
    kl = []
    for student, (layer, heads) in zip(student_maps, attention_map):
        for h, teacher_head in enumerate(heads.tolist()):
            for row, length in enumerate(mask.sum(1).tolist()):
                t = teacher_maps[layer][row, teacher_head, :length, :length].double().numpy()
                s = student[row, h, :length, :length].double().numpy()
                kl.append((t * np.log(t / s)).sum(-1))  # (length,): one per real query token
    per_token = np.concatenate(kl).reshape(2, 2, 9).mean((0, 1))  # the 9 real tokens, averaged over layers, heads
    assert loss.item() == pytest.approx(0.5 * per_token.mean(), rel=1e-5)  # the soft term is 0: equal logits
    assert values[DistillationObjective.statistics.index("attention")].item() == pytest.approx(per_token.sum(),
                                                                                                rel=1e-5)
    # the teacher's own maps give no loss
    same = tuple(teacher_maps[layer][:, heads] for layer, heads in attention_map)
    loss, _ = objective.loss(lambda **inputs: SimpleNamespace(logits=logits, attentions=same), batch, [3, 2, 9])
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("task", ["classification", "ner", "qa"])
def test_cached_teacher_outputs_equal_fresh_ones(task, teachers, tokenizer, sst2, conll, squad):
    """The cache is computed once, in padded length-sorted batches; each entry must be what the teacher
    gives the feature alone, unpadded."""
    if task == "classification":
        task_object, data = ClassificationTask(["0", "1"]), read_task_data(task, sst2 / "train.tsv")[:40]
    elif task == "ner":
        data = read_task_data(task, conll)[:40]
        task_object = TokenClassificationTask(BertForTokenClassification.from_pretrained(teachers["ner"]).config
                                              .id2label.values())
    else:
        task_object, data = QuestionAnsweringTask(), read_task_data(task, squad)[:12]
    teacher = task_object.model_class.from_pretrained(teachers[task])
    channels = torch.tensor([5, 0, 17, 30])  # the student's channels, in the student's order
    features = add_teacher_logits(teacher, task_object.train_features(data, tokenizer, 192), batch_size=16,
                                  hidden_channels=channels)
    with torch.no_grad():
        for feature in features:
            ids = torch.tensor([feature["input_ids"]])
            fresh = teacher(ids, torch.ones_like(ids), torch.tensor([feature["token_type_ids"]]),
                            output_hidden_states=True)
            np.testing.assert_allclose(feature["teacher_logits"], fresh.logits[0].numpy(), atol=1e-5, rtol=1e-5)
            hidden = fresh.hidden_states[-1][0][:, channels].numpy()
            assert feature["teacher_hidden"].dtype == np.float16 and feature["teacher_hidden"].shape == hidden.shape
            np.testing.assert_allclose(feature["teacher_hidden"], hidden, atol=2e-3, rtol=1e-3)  # float16's step


def _train_log_columns(output: Path) -> list[str]:
    with open(output / TRAIN_LOG, encoding="utf-8") as f:
        return next(csv.reader(f))


@pytest.mark.parametrize("loss", ["hidden", "attention"])
def test_a_cut_student_learns_the_teachers_hidden_state_or_attention_on_what_it_kept(wide_teacher, sst2, tmp_path,
                                                                                     loss):
    """--hidden-weight: the teacher's channels the cut kept; --attention-weight: the teacher heads it kept."""
    common = ("--task", "classification", "--teacher", wide_teacher, "--train", sst2 / "train.tsv", "--student-size",
              "L2-H128", "--prune", "--epochs", 4, "--learning-rate", "1e-3")
    summary = _distill(*common, f"--{loss}-weight", 1, "--output", tmp_path / "learnt")
    assert summary["student"][f"{loss}_weight"] == 1
    # the control: the same run with a weight too small to matter, which logs the same distance
    _distill(*common, f"--{loss}-weight", "1e-9", "--output", tmp_path / "measured-only")
    learnt, measured = (_falls(tmp_path / name, f"{loss}_loss")[1] for name in ("learnt", "measured-only"))
    assert learnt < 0.7 * measured, (learnt, measured)
    # the loss is added to the soft and hard terms, never in their place
    total, soft, hard, added = (_train_log(tmp_path / "learnt", column)[-1]
                                for column in ("loss", "soft_loss", "hard_loss", f"{loss}_loss"))
    assert total == pytest.approx(0.5 * soft + 0.5 * hard + added, rel=1e-3)
    _distill(*common, "--max-steps", 1, "--output", tmp_path / "logits-only")
    assert f"{loss}_loss" not in _train_log_columns(tmp_path / "logits-only")


def test_a_student_of_all_the_teachers_layers_has_the_teachers_attention(wide_teacher, tokenizer, sst2):
    """The map pairs each of the student's heads with the teacher's it was copied from: a student holding every
    layer attends as the teacher does, so the loss is 0; one holding every other layer pairs layers 0 and 2."""
    from types import SimpleNamespace

    from bertforge.cli.distill import _student
    from bertforge.distillation import DistillationObjective
    from bertforge.distillation.task import attention_teacher

    teacher = BertForSequenceClassification.from_pretrained(wide_teacher).eval()
    _, _, half = _student(teacher, 2, None, "bert")
    assert [(layer, heads.tolist()) for layer, heads in half.attention_map] == [(0, [0, 1]), (2, [0, 1])]
    batch = tokenizer([e.text for e in read_task_data("classification", sst2 / "train.tsv")[:8]], padding=True,
                      return_tensors="pt")
    # beside the student runs the teacher's encoder through layer 2 only, with the teacher's maps there
    encoder = attention_teacher(teacher, half.attention_map)
    assert len(encoder.encoder.layers) == 3 and encoder.pooler is None
    with torch.no_grad():
        for mine, full in zip(encoder(**batch, output_attentions=True).attentions,
                              teacher(**batch, output_attentions=True).attentions, strict=False):
            torch.testing.assert_close(mine, full, rtol=0, atol=0)
    build, _, match = _student(teacher, 4, None, "bert")
    student = build().eval()
    batch = {**batch, "labels": torch.zeros(8, dtype=torch.long), "teacher_logits": torch.zeros(8, 2)}
    objective = DistillationObjective("sequence", 1.0, 1.0, attention_weight=1.0,
                                      teacher=attention_teacher(teacher, match.attention_map),
                                      attention_map=match.attention_map)
    with torch.no_grad():
        loss, values = objective.loss(lambda **inputs: SimpleNamespace(
            logits=torch.zeros(8, 2), attentions=student(**inputs).attentions), batch,
            objective.counts(batch))
    assert values[DistillationObjective.statistics.index("attention")].item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("task, options, message", [
    ("classification", ("--student-size", "L2-H128"), "(H128) has no channel-for-channel match in the teacher's (H256)"),
    ("mlm", ("--student-layers", 2), "--task mlm has its own hidden-state cosine loss"),
])
def test_a_hidden_state_loss_without_matching_channels_is_refused(wide_teacher, sst2, tmp_path, task, options,
                                                                   message):
    line = _one_line_error("--task", task, "--teacher", wide_teacher, "--train", sst2 / "train.tsv", *options,
                           "--hidden-weight", 1, "--output", tmp_path / "out")
    assert message in line


@pytest.mark.parametrize("task, options, message", [
    ("classification", ("--student-size", "L2-H128"), "--attention-weight 1: the student's attention heads do not "
                                                       "come from the teacher's (a fresh or pre-trained student)"),
    ("mlm", ("--student-layers", 2), "--attention-weight is for task students"),
])
def test_an_attention_loss_without_the_teachers_heads_is_refused(wide_teacher, sst2, tmp_path, task, options, message):
    line = _one_line_error("--task", task, "--teacher", wide_teacher, "--train", sst2 / "train.tsv", *options,
                           "--attention-weight", 1, "--output", tmp_path / "out")
    assert message in line
