"""`bench/distill_value.py` and `bench/distill_texts.py`: their argument checks (a wrong option stops with one line
naming it, before any work), the run folders of each arm, the extra texts of the distilled arm, the paired gain."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
from bench_helpers import BENCH, stops


@pytest.mark.parametrize("options, message", [
    (["--epochs", "0"], "--epochs must be positive, got 0"),
    (["--train-limit", "0"], "--train-limit must be 1 or more, got 0"),
    (["--lr=-1e-4"], "--learning-rate must be a positive number, got '-1e-4'"),
    (["--augment=-1"], "--augment must be 0 or more, got -1"),
    (["--unlabelled-sentences=-1"], "--unlabelled-sentences must be 0 or more, got -1"),
    (["--joined-rows=-1"], "--joined-rows -1: 0 or more, and not with --unlabelled-sentences (the distilled arm reads "
                           "one --unlabelled file)"),
    (["--joined-rows", "5", "--unlabelled-sentences", "5"], "--joined-rows 5: 0 or more, and not with "
                                                            "--unlabelled-sentences (the distilled arm reads one "
                                                            "--unlabelled file)"),
    (["--joined-rows", "5", "--train-limit", "1"], "--joined-rows joins two different training rows: --train-limit 1 "
                                                   "is too few"),
    (["--batch-size", "0"], "--batch-size must be 1 or more, got 0"),
    (["--layer-lr-decay", "0"], "--layer-lr-decay 0: each layer's share of the rate above it, in (0, 1]"),
    (["--layer-lr-decay", "1.2"], "--layer-lr-decay 1.2: each layer's share of the rate above it, in (0, 1]"),
    (["--alpha", "0"], "--alpha 0: the distilled arm's soft-target weight must be in (0, 1]"),
    (["--alpha", "1.5"], "--alpha 1.5: the distilled arm's soft-target weight must be in (0, 1]"),
    (["--augment-epochs", "2"], "--augment-epochs 2 needs --augment K and a positive number of passes"),
    (["--augment", "1", "--augment-epochs", "0"], "--augment-epochs 0 needs --augment K and a positive number of passes"),
    (["--student", "/no/such/model"], "--student /no/such/model: no config.json (a pre-trained model directory)"),
    (["--fresh-runs", "runs"], "--fresh-runs compares a pre-trained --student with fresh students: give --student too"),
    (["--hidden-weight", "1"], "--hidden-weight 1: 0 or more, and with --prune or --student-layers (the student's "
                               "channels must be the teacher's)"),
    (["--attention-weight", "1"], "--attention-weight 1: 0 or more, and with --prune or --student-layers (the "
                                  "student's heads must be the teacher's)"),
    (["--student-layers", "0"], "--student-layers must be 1 or more, got 0"),
    (["--student-layers", "3", "--prune"], "--student-layers 3 starts the students from the teacher's layers; --prune "
                                           "and --student start them elsewhere: give one"),
])
def test_distill_value_checks_its_options(tmp_path, options, message):
    (tmp_path / "config.json").write_text("{}")
    assert stops("distill_value.py", tmp_path, *options) == (2, f"distill_value.py: error: {message}")


def test_distill_value_prunes_or_starts_from_another_model_not_both(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert stops("distill_value.py", tmp_path, "--prune", "--student", str(tmp_path)) == (
        2, "distill_value.py: error: --prune cuts the students from the teacher; --student starts them from another "
           "model: give one")


def test_distill_value_wants_a_teacher_model(tmp_path):
    assert stops("distill_value.py", tmp_path) == (
        2, f"distill_value.py: error: {tmp_path}: no config.json (the teacher is a model directory)")


def test_the_augmented_arm_takes_the_controls_steps_schedule_and_evaluation_points(tmp_path):
    sys.path.insert(0, str(BENCH))
    from distill_value import augmented_arm

    (tmp_path / "metrics.json").write_text(json.dumps({"total_steps": 6129}))
    # 3 epochs of 2,043 steps; with one copy per row the data doubles at most, so 6 epochs reach 6,129 steps
    assert augmented_arm(1, tmp_path, 3.0) == (6.0, ("--augment", "1", "--max-steps", "6129", "--eval-every", "2043"))


def distill_value_folders(tmp_path: Path, **settings) -> dict[str, list[str]]:
    """distill_value's run folders per arm, at the best arm's settings (the cut student, 3 copies per row in 2
    passes, lr 2e-4, T 2, unseen sentences, seeds 42 and 1) but for `settings`."""
    sys.path.insert(0, str(BENCH))
    from distill_value import arm_folders

    args = argparse.Namespace(**{
        "train_limit": 45075, "learning_rate": "2e-4", "epochs": 3.0, "held_apart": "sentences", "augment": 3,
        "augment_epochs": 2.0, "hidden_weight": 0.0, "attention_weight": 0.0, "alpha": 0.5, "temperature": 2.0, "seeds": [42, 1],
        "unlabelled_sentences": 0, "joined_rows": 0, "layer_lr_decay": 1.0, "batch_size": 32,
        "classifier_pooling": None, **settings})
    return {arm: [run.name for run in runs] for arm, runs in arm_folders(args, tmp_path).items()}


def test_one_control_serves_every_temperature(tmp_path):
    def folders(temperature: float, alpha: float = 0.5, decay: float = 1.0, batch: int = 32) -> dict[str, list[str]]:
        return distill_value_folders(tmp_path, temperature=temperature, alpha=alpha, layer_lr_decay=decay,
                                     batch_size=batch)

    # the distilled folders of earlier runs keep their names, so they are found again rather than retrained
    assert folders(2.0) == {
        "distilled": ["distilled-augment3-passes2-rows45075-lr2e-4-T2-epochs3-unseen-seed42",
                      "distilled-augment3-passes2-rows45075-lr2e-4-T2-epochs3-unseen-seed1"],
        "labels alone": ["labels-alone-rows45075-lr2e-4-epochs3-unseen-seed42",
                         "labels-alone-rows45075-lr2e-4-epochs3-unseen-seed1"]}
    assert folders(4.0)["labels alone"] == folders(2.0)["labels alone"] == folders(2.0, alpha=1.0)["labels alone"]
    assert folders(4.0)["distilled"][0] == "distilled-augment3-passes2-rows45075-lr2e-4-T4-epochs3-unseen-seed42"
    assert folders(2.0, alpha=1.0)["distilled"][0].startswith("distilled-alpha1-augment3-")
    # layer-wise decay trains both arms, so it names both
    assert folders(2.0, decay=0.8) == {
        "distilled": ["distilled-augment3-passes2-rows45075-lr2e-4-decay0.8-T2-epochs3-unseen-seed42",
                      "distilled-augment3-passes2-rows45075-lr2e-4-decay0.8-T2-epochs3-unseen-seed1"],
        "labels alone": ["labels-alone-rows45075-lr2e-4-decay0.8-epochs3-unseen-seed42",
                         "labels-alone-rows45075-lr2e-4-decay0.8-epochs3-unseen-seed1"]}
    # and so does a batch other than distill's 32, and the students' classifier pooling
    assert folders(2.0, batch=16)["distilled"][0] == \
        "distilled-augment3-passes2-rows45075-lr2e-4-batch16-T2-epochs3-unseen-seed42"
    pooled = distill_value_folders(tmp_path, classifier_pooling="mean")
    assert pooled["distilled"][0] == "distilled-augment3-passes2-rows45075-lr2e-4-poolmean-T2-epochs3-unseen-seed42"
    assert pooled["labels alone"][0] == "labels-alone-rows45075-lr2e-4-poolmean-epochs3-unseen-seed42"
    assert folders(2.0, batch=16)["labels alone"][0] == "labels-alone-rows45075-lr2e-4-batch16-epochs3-unseen-seed42"
    # a loss only the distilled arm learns names its folder, not the control's
    attended = distill_value_folders(tmp_path, attention_weight=1.0)
    assert attended["distilled"][0] == "distilled-augment3-passes2-attention1-rows45075-lr2e-4-T2-epochs3-unseen-seed42"
    assert attended["labels alone"][0] == "labels-alone-rows45075-lr2e-4-epochs3-unseen-seed42"


def test_unlabelled_sentences_spread_over_the_corpus_and_name_their_arm(tmp_path):
    sys.path.insert(0, str(BENCH))
    from distill_texts import spread_sentences

    short, long = "too short .", " ".join(["word"] * 41)
    documents = [[f"book {b} sentence {s} of five words" for s in range(10)] + [short, long] for b in range(3)]
    picked = spread_sentences(documents, 6)
    # every book contributes, in corpus order, and only sentences of 5 to 40 words
    assert picked == [f"book {b} sentence {s} of five words" for b in range(3) for s in (0, 5)]
    with pytest.raises(SystemExit, match="only 30 sentences"):
        spread_sentences(documents, 31)

    folders = distill_value_folders(tmp_path, unlabelled_sentences=45075)
    assert folders["distilled"][0] == "distilled-augment3-passes2-gutenberg45075-rows45075-lr2e-4-T2-epochs3-unseen-seed42"
    # the control learns from the labels alone, so the extra texts do not name it: one control serves both arms
    assert folders["labels alone"] == distill_value_folders(tmp_path)["labels alone"]


def test_joined_rows_pair_two_different_training_rows_once_and_name_their_arm(tmp_path):
    sys.path.insert(0, str(BENCH))
    from distill_texts import joined_rows

    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"row {i}\t{i % 2}\n" for i in range(10)))
    path = joined_rows(200, train, 4, tmp_path / "runs")
    assert path.name == "joined-rows-200-of-4.tsv"
    lines = path.read_text().splitlines()
    assert lines[0] == "sentence" and len(lines) == 201
    pairs = {tuple(line.split(" row ")) for line in lines[1:]}
    firsts, seconds = {first for first, _ in pairs}, {f"row {second}" for _, second in pairs}
    # only the first --train-limit rows, never a row joined to itself, both orders drawn
    assert firsts == seconds == {f"row {i}" for i in range(4)}
    assert all(first != f"row {second}" for first, second in pairs) and len(pairs) == 12
    # written once: every seed's run reads the same file
    path.write_text("sentence\nkept\n")
    assert joined_rows(200, train, 4, tmp_path / "runs").read_text() == "sentence\nkept\n"

    folders = distill_value_folders(tmp_path, joined_rows=45075)
    assert folders["distilled"][0] == "distilled-augment3-passes2-joined45075-rows45075-lr2e-4-T2-epochs3-unseen-seed42"
    # the control learns from the labels alone, so the extra texts do not name it: one control serves both arms
    assert folders["labels alone"] == distill_value_folders(tmp_path)["labels alone"]


def test_distill_value_reads_the_teachers_training_file_from_its_run_card(tmp_path):
    sys.path.insert(0, str(BENCH))
    from distill_value import fine_tuned_on

    assert fine_tuned_on(tmp_path) is None
    (tmp_path / "run_card.json").write_text(json.dumps({"options": {"train_path": "runs/split/train.tsv"}}))
    assert fine_tuned_on(tmp_path) == Path("runs/split/train.tsv")


def test_distill_value_pairs_the_arms_by_seed():
    sys.path.insert(0, str(BENCH))
    from distill_value import paired_gain

    gain, error, wins = paired_gain([0.90, 0.91, 0.89, 0.92], [0.89, 0.89, 0.90, 0.90])
    assert gain == pytest.approx(0.01)
    # differences 0.01, 0.02, -0.01, 0.02: sd 0.014142, over √4 seeds
    assert error == pytest.approx(0.0141421 / 2, rel=1e-5)
    assert wins == 3
    with pytest.raises(ValueError):
        paired_gain([0.9, 0.9], [0.9])
