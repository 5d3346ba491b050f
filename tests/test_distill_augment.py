"""`distill --augment`: perturbed copies of the training texts for the teacher to label (Tang et al. 2019), masked,
swapped and cut at the paper's rates, reproducible from the seed, without a copy equal to its original; a student
learns from them, and a task other than classification refuses them."""

from __future__ import annotations

import json

import pytest

from bertforge.distillation import augment
from bertforge.io.datasets import TextExample
from bertforge.tasks import read_task_data

from conftest import fixture_data
from distill_helpers import _distill, _falls, _one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_perturbed_copies_serve_classification_only(teachers, conll, tmp_path):
    line = _one_line_error("--task", "ner", "--teacher", teachers["ner"], "--train", conll, "--augment", 2,
                           "--output", tmp_path / "out")
    assert line.startswith("error: --augment 2 with --task ner:") and "classification" in line
