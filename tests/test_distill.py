"""`bertforge distill` for task students: classification, NER and QA students of tiny teachers on slices of SST-2,
CoNLL and SQuAD learn (the distillation loss falls) and save, a DistilBERT-layout one giving transformers'
logits. A student takes the named teacher layers, or starts fresh or from a smaller pre-trained model; its
classifier pools as asked or as its teacher does, and its learning rate and every training option reach the run.
The losses, perturbed copies, pruning, --task mlm, resuming and the one-line errors are in test_distill_*.py."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from bertforge.distillation import student_config, teacher_layer_indices
from bertforge.errors import ConfigError
from bertforge.model import (BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                             BertForTokenClassification)
from bertforge.runcard import read_card
from bertforge.tasks import read_task_data

from conftest import fixture_data
from distill_helpers import SST2_LABELS, _distill, _falls, _one_line_error, _pretrained, _teacher

pytestmark = pytest.mark.usefixtures("one_thread")


def test_student_layers_are_every_other_teacher_layer_as_in_distilbert():
    assert teacher_layer_indices(12, 6) == [0, 2, 4, 6, 8, 10]
    assert teacher_layer_indices(6, 3) == [0, 2, 4]
    assert teacher_layer_indices(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="--student-layers 7: the teacher has 6 layers"):
        teacher_layer_indices(6, 7)


def test_a_distilbert_student_of_all_layers_computes_what_its_teacher_does(teachers, tokenizer, conll):
    """Folding token type 0 into the positions loses nothing on single sentences: a DistilBERT-layout
    student holding every teacher layer gives the teacher's token logits."""
    from bertforge.distillation import copy_teacher_weights

    teacher = BertForTokenClassification.from_pretrained(teachers["ner"])
    config = student_config(teacher.config, layers=4, layout="distilbert")
    student = BertForTokenClassification(config)
    copy_teacher_weights(teacher, student, [0, 1, 2, 3])
    assert student.config.is_distilbert and student.bert.embeddings.token_type is None
    batch = tokenizer([s.words for s in read_task_data("ner", conll)[:8]], is_split_into_words=True, padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        expected = teacher(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
        got = student.eval()(batch["input_ids"], batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_student_takes_the_named_teacher_layers(teachers):
    from bertforge.distillation import copy_teacher_weights

    teacher = BertForSequenceClassification.from_pretrained(teachers["classification"])
    student = BertForSequenceClassification(student_config(teacher.config, layers=2))
    copy_teacher_weights(teacher, student, teacher_layer_indices(4, 2))
    for j, i in enumerate([0, 2]):
        for (name, got), (_, expected) in zip(student.bert.encoder.layers[j].state_dict().items(),
                                              teacher.bert.encoder.layers[i].state_dict().items()):
            assert torch.equal(got, expected), (j, name)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)


def test_classification_student_learns_and_saves_as_distilbert_for_transformers(teachers, sst2, tmp_path, tokenizer):
    from transformers import DistilBertForSequenceClassification

    output = tmp_path / "student"
    summary = _distill("--task", "classification", "--teacher", teachers["classification"], "--train",
                       sst2 / "train.tsv", "--validation", sst2 / "dev.tsv", "--unlabelled", sst2 / "unlabelled.tsv",
                       "--student-layers", 2, "--save-as", "distilbert", "--epochs", 10, "--learning-rate", "1e-3",
                       "--output", output)
    assert summary["student"]["from_teacher_layers"] == [0, 2] and summary["student"]["unlabelled_features"] == 32
    first, last = _falls(output)
    assert last < 0.7 * first, (first, last)
    assert (output / "run_card.json").is_file()
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "distilbert" and config["architectures"] == ["DistilBertForSequenceClassification"]

    reference = DistilBertForSequenceClassification.from_pretrained(output).eval()
    ours = BertForSequenceClassification.from_pretrained(output)
    texts = read_task_data("classification", sst2 / "dev.tsv")
    batch = tokenizer([e.text for e in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = ours(batch["input_ids"], batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_ner_student_of_a_fresh_smaller_network_learns(teachers, conll, tmp_path):
    output = tmp_path / "ner-student"
    summary = _distill("--task", "ner", "--teacher", teachers["ner"], "--train", conll, "--hold-out", 10,
                       "--student-size", "L2-H128", "--epochs", 12, "--learning-rate", "1e-3", "--output", output)
    assert summary["student"]["layers"] == 2 and summary["student"]["hidden_size"] == 128
    for column in ("loss", "soft_loss"):  # a fresh student starts far from its teacher's outputs
        first, last = _falls(output, column)
        assert last < 0.7 * first, (column, first, last)
    assert "f1" in summary["best"]


def test_ner_sentences_without_tags_are_cut_into_the_teachers_words(teachers, conll, tmp_path):
    """--unlabelled sentences from a table are cut into words by the teacher's tokenizer, as predict cuts them."""
    unlabelled = tmp_path / "sentences.jsonl"
    unlabelled.write_text('{"sentence": "John [MASK] lives in Paris."}\n{"sentence": "Rain in Spain."}\n')
    summary = _distill("--task", "ner", "--teacher", teachers["ner"], "--train", conll, "--train-limit", 4,
                       "--unlabelled", unlabelled, "--student-layers", 1, "--max-steps", 1, "--output", tmp_path / "out")
    assert summary["student"]["unlabelled_features"] == 2


def test_qa_student_learns_start_and_end_distributions(teachers, squad, tmp_path):
    output = tmp_path / "qa-student"
    _distill("--task", "qa", "--teacher", teachers["qa"], "--train", squad, "--max-length", 192,
             "--student-size", "L2-H128", "--alpha", 0.8, "--epochs", 8, "--learning-rate", "1e-3", "--output", output)
    for column in ("loss", "soft_loss"):
        first, last = _falls(output, column)
        assert last < 0.7 * first, (column, first, last)
    assert BertForQuestionAnswering.from_pretrained(output).config.num_hidden_layers == 2


def test_a_student_starts_from_a_smaller_pretrained_model_with_a_fresh_head(teachers, sst2, tokenizer, tmp_path):
    from bertforge.cli.distill import _student

    pretrained = _pretrained(tmp_path / "mini", tokenizer, layers=2, hidden=16)
    teacher = BertForSequenceClassification.from_pretrained(teachers["classification"])
    build, description, match = _student(teacher, None, None, "bert", pretrained, tokenizer)
    student, start = build(), BertForPreTraining.from_pretrained(pretrained)
    assert description["pretrained"] == str(pretrained) and description["layers"] == 2
    assert match.hidden_channels is None  # 16 channels of its own, no match in the teacher's 32
    assert match.attention_map is None  # its heads were trained apart from the teacher's
    assert student.config.id2label == teacher.config.id2label and student.classifier.out_features == 2
    for name, tensor in start.bert.state_dict().items():  # the encoder and pooler are the pre-trained model's
        torch.testing.assert_close(student.bert.state_dict()[name], tensor, rtol=0, atol=0)

    output = tmp_path / "student"
    summary = _distill("--task", "classification", "--teacher", teachers["classification"], "--train",
                       sst2 / "train.tsv", "--student", pretrained, "--epochs", 10, "--learning-rate", "5e-3",
                       "--output", output)
    assert summary["student"]["pretrained"] == str(pretrained)
    first, last = _falls(output)
    assert last < 0.7 * first, (first, last)
    assert BertForSequenceClassification.from_pretrained(output).config.hidden_size == 16


def test_a_pretrained_student_pools_as_its_teacher_does_unless_asked(teachers, tokenizer, tmp_path):
    """--student DIR keeps DIR's encoder, but its classifier reads what the teacher's reads, as the other
    students' do: the pre-trained model's own config says nothing about the task."""
    from bertforge.cli.distill import _student

    pretrained = _pretrained(tmp_path / "mini", tokenizer, layers=2, hidden=16)
    teacher = BertForSequenceClassification.from_pretrained(teachers["classification"], classifier_pooling="mean")
    for asked, expected in ((None, "mean"), ("cls", "cls")):
        build, *_ = _student(teacher, None, None, "bert", pretrained, tokenizer, classifier_pooling=asked)
        assert build().config.classifier_pooling == expected


def test_without_a_learning_rate_the_student_takes_finetunes_rate_for_its_own_width(teachers, sst2, tokenizer,
                                                                                    tmp_path):
    """finetune's rule (2e-4 up to 384 wide, 3e-5 above, scaled by √(batch / 32)) read from the student the run
    builds, not the teacher: a 512-wide teacher's layers take 3e-5, a narrower student cut to size 2e-4. The card
    and metrics.json record what the run took, and --task mlm follows the same rule."""
    from bertforge.pretraining.shards import PrepareOptions, prepare

    wide = _teacher(tmp_path / "wide", BertForSequenceClassification, tokenizer, layers=2, hidden=512,
                    id2label=SST2_LABELS)
    common = ("--task", "classification", "--teacher", wide, "--train", sst2 / "train.tsv", "--max-steps", 1)
    scale = 0.5 ** 0.5  # batch 16
    for student, expected in ((("--student-layers", 1), 3e-5 * scale), (("--student-size", "L2-H256"), 2e-4 * scale),
                              (("--student-size", "L2-H256", "--prune"), 2e-4 * scale)):
        output = tmp_path / "-".join(map(str, student))
        _distill(*common, *student, "--output", output)
        assert json.loads((output / "metrics.json").read_text())["args"]["learning_rate"] == pytest.approx(expected)
        assert read_card(output)["options"]["learning_rate"] == pytest.approx(expected), student
    corpus = tmp_path / "books.jsonl"
    with gzip.open(fixture_data("corpus", "gutenberg_train.jsonl.gz"), "rt", encoding="utf-8") as f:
        corpus.write_text(json.dumps({"text": json.loads(next(f))["text"][20_000:30_000]}) + "\n", encoding="utf-8")
    prepare([corpus], tmp_path / "shards", tokenizer, PrepareOptions(max_seq_length=64), progress=False)
    output = tmp_path / "general"
    _distill("--task", "mlm", "--teacher", teachers["mlm"], "--train", tmp_path / "shards", "--max-steps", 1,
             "--checkpoint-every", 1, "--output", output)
    run = json.loads((output / "checkpoint" / "checkpoint.json").read_text())["run"]
    assert run["learning_rate"] == read_card(output)["options"]["learning_rate"] == pytest.approx(2e-4 * scale)


@pytest.mark.parametrize("options", [("--prune", "--student-size", "L2-H128"), ("--student-size", "L2-H128"),
                                     ("--student-layers", 2)], ids=["cut", "fresh", "teacher-layers"])
def test_a_students_classifier_pools_as_asked_or_as_its_teacher_does(wide_teacher, sst2, tmp_path, options):
    common = ("--task", "classification", "--teacher", wide_teacher, "--train", sst2 / "train.tsv", *options,
              "--max-steps", 1)
    _distill(*common, "--output", tmp_path / "as-teacher")
    _distill(*common, "--classifier-pooling", "mean", "--output", tmp_path / "mean")
    assert BertForSequenceClassification.from_pretrained(tmp_path / "as-teacher").config.classifier_pooling == "cls"
    assert BertForSequenceClassification.from_pretrained(tmp_path / "mean").config.classifier_pooling == "mean"


def test_every_training_option_distill_shows_reaches_the_run(teachers, sst2, tmp_path):
    """distill shares finetune's options: each must reach the student's training, not be read and dropped."""
    output = tmp_path / "options"
    _distill("--task", "classification", "--teacher", teachers["classification"], "--train", sst2 / "train.tsv",
             "--student-layers", 1, "--max-steps", 2, "--adam-beta2", "0.95", "--max-grad-norm", "2.5",
             "--no-group-by-length", "--freeze-word-embeddings", "--weight-decay", "0.05", "--adam-epsilon", "1e-7",
             "--ema-decay", "0.5", "--checkpoint-every", "2", "--output", output)
    args = json.loads((output / "metrics.json").read_text())["args"]
    assert (args["adam_beta2"], args["max_grad_norm"], args["group_by_length"], args["freeze_word_embeddings"],
            args["weight_decay"], args["adam_epsilon"], args["ema_decay"]) == (0.95, 2.5, False, True, 0.05, 1e-7, 0.5)
    assert "averaged_file" in json.loads((output / "checkpoint" / "checkpoint.json").read_text())
    teacher = BertForSequenceClassification.from_pretrained(teachers["classification"]).bert.embeddings.word.weight
    student = BertForSequenceClassification.from_pretrained(output).bert.embeddings.word.weight
    assert torch.equal(student, teacher)  # frozen from the teacher's table
    line = _one_line_error("--task", "classification", "--teacher", teachers["classification"], "--train",
                           sst2 / "train.tsv", "--label-smoothing-factor", "0.1", "--output", tmp_path / "smooth")
    assert "error: --label-smoothing-factor is for fine-tuning on labels" in line
    line = _one_line_error("--task", "classification", "--teacher", teachers["classification"], "--train",
                           sst2 / "train.tsv", "--linear-probe-first", "--output", tmp_path / "probe")
    assert "error: --linear-probe-first is for fine-tuning on labels" in line
    line = _one_line_error("--task", "classification", "--teacher", teachers["classification"], "--train",
                           sst2 / "train.tsv", "--reinit-layers", "1", "--output", tmp_path / "reinit")
    assert "error: --reinit-layers is for fine-tuning on labels; a student's layers come from the teacher" in line
    line = _one_line_error("--task", "classification", "--teacher", teachers["classification"], "--train",
                           sst2 / "train.tsv", "--rdrop-alpha", "1", "--output", tmp_path / "rdrop")
    assert "error: --rdrop-alpha is for fine-tuning on labels; a student learns from the teacher's softened outputs" in line
    line = _one_line_error("--task", "mlm", "--teacher", teachers["mlm"], "--train", tmp_path,
                           "--freeze-word-embeddings", "--no-group-by-length", "--output", tmp_path / "mlm")
    assert "--freeze-word-embeddings and --no-group-by-length: for task students; --task mlm" in line
