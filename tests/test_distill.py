"""`bertforge distill`: students from tiny random-weight teachers on real slices (SST-2, CoNLL,
SQuAD, Gutenberg shards). Checked against independent computations and transformers: the
distillation loss falls, cached teacher outputs equal fresh ones, a DistilBERT-layout student gives
transformers' logits, and bad inputs end in one line."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bertforge.cli.main import cli
from bertforge.distillation import add_teacher_logits, augment, student_config, teacher_layer_indices
from bertforge.distillation.losses import hidden_cosine, soft_target_kl
from bertforge.distillation.prune import important_layers
from bertforge.errors import ConfigError
from bertforge.io.datasets import TextExample
from bertforge.model import (BertConfig, BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                             BertForTokenClassification)
from bertforge.runcard import read_card
from bertforge.tasks import ClassificationTask, QuestionAnsweringTask, TokenClassificationTask, read_task_data
from bertforge.training.logs import TRAIN_LOG

from conftest import fixture_data

SST2_LABELS = {0: "0", 1: "1"}


pytestmark = pytest.mark.usefixtures("one_thread")




def _teacher(directory: Path, head, tokenizer, layers: int = 4, hidden: int = 32, id2label=None, seed: int = 0):
    """A tiny random-weight teacher with the bert-base-uncased vocabulary, saved with its tokenizer. Its
    task head is scaled up so that its outputs differ from input to input, as a trained teacher's do
    (BERT's initialisation gives near-uniform distributions, nothing to learn from)."""
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=512, id2label=id2label)
    model = head(config).eval()
    for name in ("classifier", "qa_outputs"):
        if hasattr(model, name):
            getattr(model, name).weight.data *= 10
    if hasattr(model, "mlm"):  # the decoder is tied to the word embeddings, whose scale the input LayerNorm undoes
        model.bert.embeddings.word.weight.data *= 30
    model.save_pretrained(directory, tokenizer)
    return directory


def _fine_tuned_sst2_teacher(directory: Path, tokenizer) -> Path:
    """A tiny classifier fine-tuned for a few seconds on 96 SST-2 sentences: unlike a random network's,
    its [CLS] outputs differ from sentence to sentence."""
    from bertforge.tasks import FinetuneArgs, finetune

    task = ClassificationTask(list(SST2_LABELS.values()))
    features = task.train_features(read_task_data("classification", fixture_data("sst2", "train.tsv"))[:96],
                                   tokenizer, 128)
    config = BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                        id2label=SST2_LABELS)
    finetune(lambda: BertForSequenceClassification(config), task, features, None,
             FinetuneArgs(output_dir=str(directory), epochs=8, batch_size=16, learning_rate=2e-3, progress=False),
             tokenizer)
    return directory


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teachers")
    ner_tags = TokenClassificationTask.from_sentences(read_task_data("ner", fixture_data("conll2003", "train.txt"))).labels
    return {"classification": _fine_tuned_sst2_teacher(root / "sst2", tokenizer),
            "ner": _teacher(root / "ner", BertForTokenClassification, tokenizer, hidden=128,
                            id2label=dict(enumerate(ner_tags))),
            "qa": _teacher(root / "qa", BertForQuestionAnswering, tokenizer, hidden=128),
            "mlm": _teacher(root / "mlm", BertForPreTraining, tokenizer)}


@pytest.fixture(scope="module")
def sst2(tmp_path_factory) -> dict[str, Path]:
    """Slices of SST-2: 96 training and 32 validation sentences."""
    root = tmp_path_factory.mktemp("sst2")
    lines = fixture_data("sst2", "train.tsv").read_text(encoding="utf-8").splitlines()
    (root / "train.tsv").write_text("\n".join(lines[:97]) + "\n", encoding="utf-8")
    (root / "dev.tsv").write_text("\n".join([lines[0]] + lines[97:129]) + "\n", encoding="utf-8")
    (root / "unlabelled.tsv").write_text("sentence\n" + "\n".join(l.split("\t")[0] for l in lines[129:161]) + "\n",
                                         encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def conll(tmp_path_factory) -> Path:
    """The first 60 sentences of the CoNLL-2003 fixture."""
    text = fixture_data("conll2003", "train.txt").read_text(encoding="utf-8")
    path = tmp_path_factory.mktemp("conll") / "train.txt"
    path.write_text("\n\n".join(text.strip().split("\n\n")[:60]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def squad(tmp_path_factory) -> Path:
    """Two articles of the SQuAD fixture, their first 3 paragraphs."""
    with gzip.open(fixture_data("squad", "squad-v1.1-dev-part-train.json.gz"), "rt", encoding="utf-8") as f:
        data = json.load(f)
    data["data"] = [{**article, "paragraphs": article["paragraphs"][:3]} for article in data["data"][:2]]
    path = tmp_path_factory.mktemp("squad") / "squad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _distill(*arguments) -> dict:
    result = CliRunner().invoke(cli, ["distill", "--threads", "1", "--batch-size", "16", *map(str, arguments)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


PROGRESS_LINE = re.compile(r"[\w ]+: +\d+%\|")


def _one_line_error(*arguments) -> str:
    result = CliRunner().invoke(cli, ["distill", "--threads", "1", *map(str, arguments)])
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    # The teacher's pass shows progress (plain lines here, as in a log file); the error is the only other line.
    lines = [line for line in result.output.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _train_log(output: Path, column: str) -> list[float]:
    with open(output / TRAIN_LOG, encoding="utf-8") as f:
        return [float(row[column]) for row in csv.DictReader(f)]


def _train_log_columns(output: Path) -> list[str]:
    with open(output / TRAIN_LOG, encoding="utf-8") as f:
        return next(csv.reader(f))


def _falls(output: Path, column: str = "loss") -> tuple[float, float]:
    """The mean of a training-log column over the first and the last quarter of the run."""
    values = _train_log(output, column)
    quarter = max(1, len(values) // 4)
    return float(np.mean(values[:quarter])), float(np.mean(values[-quarter:]))


# --- the pieces ------------------------------------------------------------------------------

def test_student_layers_are_every_other_teacher_layer_as_in_distilbert():
    assert teacher_layer_indices(12, 6) == [0, 2, 4, 6, 8, 10]
    assert teacher_layer_indices(6, 3) == [0, 2, 4]
    assert teacher_layer_indices(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="--student-layers 7: the teacher has 6 layers"):
        teacher_layer_indices(6, 7)


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


def test_perturbed_copies_mask_swap_and_cut_at_tang_et_al_rates_and_carry_no_label():
    examples = read_task_data("classification", fixture_data("sst2", "train.tsv"))
    copies = augment(examples, 4, seed=7, mask_token="[MASK]")
    assert copies == augment(examples, 4, seed=7, mask_token="[MASK]")  # reproducible from the seed
    assert copies != augment(examples, 4, seed=8, mask_token="[MASK]")
    assert all(copy.label is None and copy.text_pair is None for copy in copies)
    originals = {example.source: example.text.split() for example in examples}
    pairs = [(copy.text.split(), originals[copy.source.removesuffix(f" (perturbed copy {n})")])
             for copy in copies for n in range(1, 5) if copy.source.endswith(f" (perturbed copy {n})")]
    assert len(pairs) == len(copies) and all(text for text, _ in pairs)
    # Sentences of 15+ words: a copy of 5 words or fewer is an n-gram cut; the others keep every position.
    long = [(text, original) for text, original in pairs if len(original) >= 15]
    cut = [text for text, original in long if len(text) <= 5]
    assert 0.2 < len(cut) / len(long) < 0.3, len(cut) / len(long)  # 0.25
    whole = [(text, original) for text, original in long if len(text) > 5]
    assert all(len(text) == len(original) for text, original in whole)
    words = sum(len(text) for text, _ in whole)
    masked = sum(word == "[MASK]" for text, _ in whole for word in text) / words
    swapped = sum(new != old and new != "[MASK]" for text, original in whole for new, old in zip(text, original)) / words
    assert 0.085 < masked < 0.115 and 0.075 < swapped < 0.115, (masked, swapped)  # 0.1 each (a swap may draw the same word)


def test_a_perturbed_copy_equal_to_its_original_is_dropped_and_pairs_perturb_both_texts():
    # One word, and the only word to swap in is itself: a copy changes only by the mask, about 1 in 10.
    copies = augment([TextExample("fine", None, "1", "one.tsv:2")], 100, seed=0, mask_token="[MASK]")
    assert 0 < len(copies) < 30 and {copy.text for copy in copies} == {"[MASK]"}
    pair = TextExample(" ".join(f"a{i}" for i in range(30)), " ".join(f"b{i}" for i in range(30)), "yes", "p.tsv:2")
    copies = augment([pair], 20, seed=0, mask_token="[MASK]")
    assert all(copy.text_pair is not None for copy in copies)
    assert any(copy.text != pair.text for copy in copies) and any(copy.text_pair != pair.text_pair for copy in copies)


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


# --- the command -------------------------------------------------------------------------------

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


def test_a_student_learns_from_perturbed_copies_too(teachers, sst2, tmp_path):
    output = tmp_path / "student"
    summary = _distill("--task", "classification", "--teacher", teachers["classification"], "--train",
                       sst2 / "train.tsv", "--augment", 2, "--student-layers", 2, "--epochs", 6, "--learning-rate",
                       "1e-3", "--output", output)
    # 96 rows, 2 copies each, less those that came out unchanged (many SST-2 rows are phrases of 1-3 words)
    assert summary["student"]["augment"] == 2 and 96 < summary["student"]["unlabelled_features"] < 192
    assert json.loads((output / "metrics.json").read_text())["train_examples"] == 96 + summary["student"][
        "unlabelled_features"]
    first, last = _falls(output)
    assert last < 0.7 * first, (first, last)


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


def _pretrained(directory: Path, tokenizer, layers: int, hidden: int) -> Path:
    """A small BertForPreTraining of BERT's initialisation, saved with its tokenizer (a stand-in for bertforge-mini)."""
    torch.manual_seed(3)
    BertForPreTraining(BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                                  intermediate_size=2 * hidden)).save_pretrained(directory, tokenizer)
    return directory


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


@pytest.fixture(scope="module")
def wide_teacher(tmp_path_factory, tokenizer) -> Path:
    """A 4-layer, 256-wide classifier (2 heads of 128): wide enough to cut an L2-H128 student from."""
    return _teacher(tmp_path_factory.mktemp("wide") / "sst2", BertForSequenceClassification, tokenizer, hidden=256,
                    id2label=SST2_LABELS)


def test_a_student_cut_from_its_teacher_starts_closer_to_it_than_a_fresh_one(wide_teacher, sst2, tmp_path):
    common = ("--task", "classification", "--teacher", wide_teacher, "--train", sst2 / "train.tsv", "--student-size",
              "L2-H128", "--epochs", 2, "--learning-rate", "1e-4")
    student = _distill(*common, "--prune", "--output", tmp_path / "pruned")["student"]
    assert (student["layers"], student["hidden_size"], student["attention_heads"]) == (2, 128, 1)
    assert student["from_teacher_layers"] == [0, 2] and student["layers_chosen_by"] == "spaced"
    assert student["pruned_on"] == 96
    assert BertForSequenceClassification.from_pretrained(tmp_path / "pruned").config.hidden_size == 128
    _distill(*common, "--output", tmp_path / "fresh")
    assert _train_log(tmp_path / "pruned", "soft_loss")[0] < 0.75 * _train_log(tmp_path / "fresh", "soft_loss")[0]


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


def test_prune_keeps_the_layers_that_matter_or_evenly_spaced_ones(wide_teacher, sst2, tokenizer, tmp_path):
    teacher = BertForSequenceClassification.from_pretrained(wide_teacher)
    first = teacher.bert.encoder.layers[0]
    for linear in (first.attention.out, first.output):  # it adds nothing: its LayerNorms pass the input through
        linear.weight.data.zero_()
        linear.bias.data.zero_()
    teacher.save_pretrained(tmp_path / "teacher", tokenizer)
    common = ("--task", "classification", "--teacher", tmp_path / "teacher", "--train", sst2 / "train.tsv",
              "--student-size", "L2-H128", "--max-steps", 1, "--prune")
    assert _distill(*common, "--output", tmp_path / "spaced")["student"]["from_teacher_layers"] == [0, 2]
    important = _distill(*common, "--prune-depth", "importance", "--output", tmp_path / "important")["student"]
    assert important["layers_chosen_by"] == "importance"
    teacher.eval()
    sentences = ClassificationTask(list(SST2_LABELS.values())).train_features(
        read_task_data("classification", sst2 / "train.tsv"), tokenizer, 128)
    assert important["from_teacher_layers"] == important_layers(teacher, 2, sentences)
    assert len(important["from_teacher_layers"]) == 2 and 0 not in important["from_teacher_layers"]


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


@pytest.mark.parametrize("options", [("--prune", "--student-size", "L2-H128"), ("--student-size", "L2-H128"),
                                     ("--student-layers", 2)], ids=["cut", "fresh", "teacher-layers"])
def test_a_students_classifier_pools_as_asked_or_as_its_teacher_does(wide_teacher, sst2, tmp_path, options):
    common = ("--task", "classification", "--teacher", wide_teacher, "--train", sst2 / "train.tsv", *options,
              "--max-steps", 1)
    _distill(*common, "--output", tmp_path / "as-teacher")
    _distill(*common, "--classifier-pooling", "mean", "--output", tmp_path / "mean")
    assert BertForSequenceClassification.from_pretrained(tmp_path / "as-teacher").config.classifier_pooling == "cls"
    assert BertForSequenceClassification.from_pretrained(tmp_path / "mean").config.classifier_pooling == "mean"


def test_classifier_pooling_is_refused_for_a_task_without_a_sentence_classifier(teachers, conll, tmp_path):
    line = _one_line_error("--task", "ner", "--teacher", teachers["ner"], "--train", conll,
                           "--classifier-pooling", "mean", "--output", tmp_path / "out")
    assert line == "error: --classifier-pooling is for a sentence classifier (--task classification or " \
                   "pair-classification), not --task ner"


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


def test_prune_on_an_empty_training_set_is_refused(wide_teacher, tmp_path):
    """--prune measures the teacher on training inputs: a file without any is named before the cut."""
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n", encoding="utf-8")
    line = _one_line_error("--task", "classification", "--teacher", wide_teacher, "--train", tmp_path / "train.tsv",
                           "--student-size", "L2-H128", "--prune", "--output", tmp_path / "out")
    assert f"{tmp_path / 'train.tsv'}: no training examples in the file" in line


@pytest.mark.parametrize("options, message", [
    (("--prune",), "error: --prune needs --student-size, the size to cut the teacher down to (e.g. L4-H256)"),
    (("--prune", "--student-layers", 2), "error: --student-layers 2 with --prune: --prune cuts the teacher down to a "
                                         "--student-size (e.g. L4-H256); give --student-size instead"),
    (("--prune", "--student-size", "L2-H128", "--student", "."), "give one of them"),
    (("--prune-depth", "spaced", "--student-size", "L2-H128"), "give --prune too"),
])
def test_prune_without_a_size_to_cut_to_is_refused(wide_teacher, sst2, tmp_path, options, message):
    line = _one_line_error("--task", "classification", "--teacher", wide_teacher, "--train", sst2 / "train.tsv",
                           *options, "--output", tmp_path / "out")
    assert message in line


def test_general_distillation_on_shards_saves_a_masked_lm_transformers_loads(teachers, tokenizer, tmp_path):
    from transformers import DistilBertForMaskedLM

    from bertforge.pretraining.shards import PrepareOptions, prepare

    corpus = tmp_path / "books.jsonl"
    with gzip.open(fixture_data("corpus", "gutenberg_train.jsonl.gz"), "rt", encoding="utf-8") as f:
        corpus.write_text(json.dumps({"text": json.loads(next(f))["text"][20_000:45_000]}) + "\n", encoding="utf-8")
    prepare([corpus], tmp_path / "shards", tokenizer, PrepareOptions(max_seq_length=64, dupe_factor=2),
            progress=False)
    output = tmp_path / "general"
    summary = _distill("--task", "mlm", "--teacher", teachers["mlm"], "--train", tmp_path / "shards", "--validation",
                       tmp_path / "shards", "--max-steps", 60, "--learning-rate", "2e-3", "--save-as", "distilbert",
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


# --- mistakes end in one line ---------------------------------------------------------------------

def test_perturbed_copies_serve_classification_only(teachers, conll, tmp_path):
    line = _one_line_error("--task", "ner", "--teacher", teachers["ner"], "--train", conll, "--augment", 2,
                           "--output", tmp_path / "out")
    assert line.startswith("error: --augment 2 with --task ner:") and "classification" in line


def test_a_teacher_fine_tuned_for_another_task_is_refused(teachers, sst2, tmp_path):
    line = _one_line_error("--task", "classification", "--teacher", teachers["ner"], "--train", sst2 / "train.tsv",
                           "--output", tmp_path / "out")
    assert "BertForSequenceClassification" in line and "BertForTokenClassification" in line


def test_a_student_deeper_or_wider_than_its_teacher_is_refused(teachers, sst2, tmp_path):
    line = _one_line_error("--task", "classification", "--teacher", teachers["classification"], "--train",
                           sst2 / "train.tsv", "--student-layers", 5, "--output", tmp_path / "out")
    assert "--student-layers 5: the teacher has 4 layers" in line
    line = _one_line_error("--task", "classification", "--teacher", teachers["classification"], "--train",
                           sst2 / "train.tsv", "--student-size", "L2-H128", "--output", tmp_path / "out")
    assert "--student-size L2-H128" in line and "larger than its teacher (L4-H32)" in line


def test_a_pretrained_student_must_fit_its_teacher(teachers, sst2, tokenizer, tmp_path):
    start = ("--task", "classification", "--teacher", teachers["classification"], "--train", sst2 / "train.tsv")
    wide = _pretrained(tmp_path / "wide", tokenizer, layers=2, hidden=64)
    line = _one_line_error(*start, "--student", wide, "--output", tmp_path / "out")
    assert f"--student {wide}: the student (L2-H64) is larger than its teacher (L4-H32)" in line
    other = _pretrained(tmp_path / "other", tokenizer, layers=2, hidden=16)
    words = (other / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (other / "vocab.txt").write_text("\n".join(words[:2000] + ["notaword"] + words[2001:]) + "\n", encoding="utf-8")
    line = _one_line_error(*start, "--student", other, "--output", tmp_path / "out")
    assert f"--student {other}: its vocabulary differs from the teacher's" in line
    cased = _pretrained(tmp_path / "cased", type(tokenizer).from_pretrained(do_lower_case=False), layers=2, hidden=16)
    line = _one_line_error(*start, "--student", cased, "--output", tmp_path / "out")  # it said "vocabulary differs"
    assert line == f"error: --student {cased}: its tokenizer has do_lower_case false, the teacher's true; a student " \
                   "must have been pre-trained on text cased as the teacher's inputs are"
    line = _one_line_error(*start, "--student", other, "--student-size", "L2-H16", "--output", tmp_path / "out")
    assert "without --student-layers, --student-size and --save-as" in line
    line = _one_line_error(*start, "--student", tmp_path, "--output", tmp_path / "out")
    assert f"--student {tmp_path}: no config.json (or Google's bert_config.json) there" in line
    line = _one_line_error("--task", "mlm", "--teacher", teachers["mlm"], "--train", tmp_path, "--student", other,
                           "--output", tmp_path / "out")
    assert "--task mlm: the student starts from the teacher's layers (--student-layers), not --student-size, " \
           "--student or --prune" in line
    line = _one_line_error("--task", "mlm", "--teacher", teachers["mlm"], "--train", tmp_path, "--prune",
                           "--output", tmp_path / "out")
    assert "not --student-size, --student or --prune" in line
    line = _one_line_error("--task", "mlm", "--teacher", teachers["mlm"], "--train", tmp_path, "--layer-lr-decay", 0.8,
                           "--output", tmp_path / "out")
    assert "--layer-lr-decay 0.8 is for fine-tuning a task student; --task mlm trains all of its layers at one rate" \
        in line


def test_labels_the_teacher_does_not_know_are_refused(teachers, sst2, tmp_path):
    rows = (sst2 / "train.tsv").read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad.tsv"
    bad.write_text("\n".join(rows[:6] + ["a sentence with a new label\tneutral"]) + "\n", encoding="utf-8")
    line = _one_line_error("--task", "classification", "--teacher", teachers["classification"], "--train", bad,
                           "--output", tmp_path / "out")
    assert f"{bad}:7" in line and "'neutral'" in line and "teacher" in line


def test_a_run_continues_only_with_the_same_targets(teachers, sst2, tmp_path):
    """--resume goes through the engine's checkpoint check: other distillation settings are refused."""
    output = tmp_path / "run"
    arguments = ["--task", "classification", "--teacher", teachers["classification"], "--train", sst2 / "train.tsv",
                 "--student-layers", 2, "--max-steps", 4, "--checkpoint-every", 2, "--output", output]
    _distill(*arguments)
    line = _one_line_error(*arguments, "--resume", output, "--alpha", 0.9)
    assert "alpha: checkpoint 0.5, now 0.9" in line
    # distill's --layer-lr-decay (finetune's option) reaches the run; its default is none, not finetune's 0.8
    assert json.loads((output / "checkpoint" / "checkpoint.json").read_text())["run"]["layer_lr_decay"] == 1.0
    line = _one_line_error(*arguments, "--resume", output, "--layer-lr-decay", 0.5)
    assert "layer_lr_decay: checkpoint 1.0, now 0.5" in line
    line = _one_line_error(*arguments, "--resume", output, "--lr-scheduler-type", "cosine")  # reaches the run too
    assert "lr_scheduler_type: checkpoint 'linear', now 'cosine'" in line
    line = _one_line_error(*arguments, "--resume", output, "--weight-decay", 0)
    assert "weight_decay: checkpoint 0.01, now 0.0" in line
    _as_written_before_attention_weight(output)
    assert _one_line_error(*arguments, "--resume", output, "--attention-weight", 1).endswith(
        "attention_weight: checkpoint 0.0, now 1.0")
    assert _distill(*arguments, "--resume", output)["steps"] == 4


def _as_written_before_attention_weight(run: Path) -> None:
    """Rewrite `run`'s checkpoint as bertforge wrote it before --attention-weight: no such setting, and the
    objective's statistics without "attention"."""
    manifest = run / "checkpoint" / "checkpoint.json"
    state = json.loads(manifest.read_text())
    del state["run"]["attention_weight"]
    state["cumulative"] = state["cumulative"][:-1]
    manifest.write_text(json.dumps(state))


@pytest.mark.slow
def test_distillation_killed_mid_epoch_then_resumed_is_bit_identical(teachers, sst2, tmp_path):
    import subprocess
    import sys

    from conftest import kill_at_first_checkpoint

    def command(output):
        return [sys.executable, "-m", "bertforge", "distill", "--task", "classification", "--teacher",
                str(teachers["classification"]), "--train", str(sst2 / "train.tsv"), "--unlabelled",
                str(sst2 / "unlabelled.tsv"), "--student-layers", "2", "--epochs", "2", "--batch-size", "16",
                "--checkpoint-every", "3", "--threads", "1", "--output", str(output)]

    whole = subprocess.run(command(tmp_path / "whole"), capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-2000:]
    steps = json.loads(whole.stdout.strip().splitlines()[-1])["steps"]  # 128 rows / 16 = 8 per epoch
    run = tmp_path / "killed"
    killed_at = kill_at_first_checkpoint(command(run), run, timeout=300)
    assert not (run / "model.safetensors").exists(), "the run finished before it could be killed"
    assert 0 < killed_at < steps and killed_at % (steps // 2), (killed_at, steps)  # mid-epoch
    _as_written_before_attention_weight(run)  # an older bertforge's checkpoint continues just the same
    resumed = subprocess.run([*command(run), "--resume", str(run)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()


def test_distilling_twice_with_the_same_seed_gives_identical_students(teachers, conll, tmp_path):
    """A fresh student (--student-size) is drawn after the seed is set, like a fine-tuning head."""
    weights = []
    for name in ("a", "b"):
        _distill("--task", "ner", "--teacher", teachers["ner"], "--train", conll, "--student-size", "L2-H128",
                 "--max-steps", 3, "--threads", 1, "--seed", 5, "--output", tmp_path / name)
        weights.append((tmp_path / name / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]


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


def test_a_resumed_distillation_sees_every_change_of_its_targets():
    """Distillation identifies its training data by fine-tuning's digest plus the teacher's outputs, so a
    change of any target (a QA answer's end, the segment ids) or of the teacher's logits is seen."""
    import numpy as np

    from bertforge.tasks.trainer import features_digest

    def digest(**change):
        feature = {"input_ids": [101, 2054, 102, 3000, 102], "token_type_ids": [0, 0, 0, 1, 1], "start_positions": 3,
                   "end_positions": 3, "teacher_logits": np.zeros((5, 2), dtype=np.float32), **change}
        return features_digest([feature], arrays=("teacher_logits", "teacher_hidden"))

    same = digest()
    assert digest() == same
    for change in ({"end_positions": 4}, {"start_positions": 4}, {"token_type_ids": [0, 0, 0, 0, 1]},
                   {"teacher_logits": np.ones((5, 2), dtype=np.float32)},
                   {"teacher_hidden": np.zeros((5, 4), dtype=np.float32)}):
        assert digest(**change) != same, change


def test_teacher_and_student_are_taken_as_a_file_of_their_folder_as_predict_takes_a_model(teachers, sst2, tokenizer,
                                                                                          tmp_path):
    """--teacher and --student were click directories: given model/config.json, which predict --model takes, they
    stopped at click's `Directory '.../config.json' is a file.`"""
    wide = _pretrained(tmp_path / "wide", tokenizer, layers=2, hidden=64)
    line = _one_line_error("--task", "classification", "--teacher", teachers["classification"] / "config.json",
                           "--train", sst2 / "train.tsv", "--student", wide / "config.json", "--output", tmp_path / "out")
    assert f"--student {wide}: the student (L2-H64) is larger than its teacher (L4-H32)" in line


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
