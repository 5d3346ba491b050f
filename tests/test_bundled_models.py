"""The models bertforge ships (src/bertforge/pretrained/): each beats a trivial baseline by a stated
margin on a slice of data it never trained on (tests/fixtures/data, see its README), so that a broken
model cannot ship; each states its held-out figures in one file, evaluation.json, that its README
quotes and `bertforge demo` prints. A new bundled model needs one entry in CHECKS.

Also: transformers reads the bundled classifier the same way, and the pipelines and `serve` pick the
bundled models when given none."""

from __future__ import annotations

import collections
import gzip
import json
import random
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from conftest import fixture_data

from bertforge.paths import PRETRAINED_DIR, bundled_model_path
from bertforge.pipelines import pipeline

GOLD_NAMES = {"0": "negative", "1": "positive"}


# --- the held-out slices -------------------------------------------------------------------------

def sst2_unseen_sentences() -> list[tuple[str, str]]:
    """The fixture's 200 whole review sentences of the unseen-sentences split, no phrase of which the teacher
    or the student trained on."""
    rows = fixture_data("sst2", "unseen_sentences.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [(text.strip(), GOLD_NAMES[label.strip()]) for text, label in (row.split("\t") for row in rows)]


def heldout_book_sentences() -> list[list[str]]:
    """Per held-out Gutenberg book (the last 4, never pre-trained on), the sentences of its excerpt.
    A plain split after . ! ? is enough here: the models are scored, not the splitter."""
    with gzip.open(fixture_data("corpus", "gutenberg_heldout.jsonl.gz"), "rt", encoding="utf-8") as f:
        books = [json.loads(line)["text"] for line in f]
    sentences = []
    for text in books:
        paragraphs = (" ".join(p.split()) for p in text.split("\n\n"))
        sentences.append([s for p in paragraphs for s in re.split(r"(?<=[.!?])\s+", p) if len(s.split()) >= 4])
    return sentences


def masked_word_items(vocab: set[str], limit: int = 300) -> list[tuple[str, str]]:
    """(sentence with one whole word replaced by [MASK], that word): only words that are a single
    vocabulary piece, so one [MASK] stands for the whole word; one word per sentence, at random."""
    rng = random.Random(0)
    items = []
    for book in heldout_book_sentences():
        for sentence in book:
            words = sentence.split(" ")
            candidates = [i for i, w in enumerate(words) if w.isascii() and w.isalpha() and w.lower() in vocab]
            if len(words) < 6 or not candidates:
                continue
            i = rng.choice(candidates)
            items.append((" ".join(words[:i] + ["[MASK]"] + words[i + 1:]), words[i].lower()))
    rng.shuffle(items)
    return items[:limit]


def sentence_pairs(limit: int = 300) -> list[tuple[str, str, bool]]:
    """(A, B, B follows A) as in BERT's NSP data, exactly half and half: B is the next sentence, or a
    random sentence of another book."""
    rng = random.Random(0)
    books = heldout_book_sentences()
    starts = [(b, i) for b, book in enumerate(books) for i in range(len(book) - 1)]
    rng.shuffle(starts)
    pairs = []
    for n, (b, i) in enumerate(starts[:limit]):
        if n % 2 == 0:
            pairs.append((books[b][i], books[b][i + 1], True))
        else:
            pairs.append((books[b][i], rng.choice([s for j, o in enumerate(books) if j != b for s in o]), False))
    return pairs


def squad_heldout() -> list[tuple[str, str, list[str]]]:
    """(question, context, reference answers) of the first paragraphs of the 5 articles minilm-squad
    was never trained on."""
    data = json.loads(gzip.decompress(fixture_data("squad", "squad-v1.1-dev-part-heldout.json.gz").read_bytes()))
    return [(qa["question"], paragraph["context"], [a["text"] for a in qa["answers"]])
            for article in data["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


# --- scores, written from the official definitions (not bertforge's code) ----------------------------

def squad_normalize(text: str) -> list[str]:
    """SQuAD v1.1's evaluate script: lower case, no punctuation, no articles, split on whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def squad_f1(prediction: str, references: list[str]) -> float:
    def f1(truth: str) -> float:
        ours, gold = squad_normalize(prediction), squad_normalize(truth)
        common = sum((collections.Counter(ours) & collections.Counter(gold)).values())
        return 0.0 if common == 0 else 2 * common / (len(ours) + len(gold))
    return max(f1(truth) for truth in references)


def vocabulary(model: Path) -> set[str]:
    return set((model / "vocab.txt").read_text(encoding="utf-8").splitlines())


# --- what each bundled model must do --------------------------------------------------------------

def fill_mask_predictions(model: Path, top_k: int) -> tuple[list[list[str]], list[str]]:
    """The model's top_k guesses for masked whole words of held-out text, and the words."""
    items = masked_word_items(vocabulary(model))
    predictions = pipeline("fill-mask", model=model)([text for text, _ in items], top_k=top_k)
    return [[p["token_str"] for p in guesses] for guesses in predictions], [word for _, word in items]


def fill_mask_top1_vs_unigram(model: Path) -> tuple[float, float]:
    """Top-1 accuracy on masked words, and the best constant guess's (the most frequent of the masked
    words, known in hindsight): what a model of word frequencies alone gets at best."""
    guesses, words = fill_mask_predictions(model, top_k=1)
    accuracy = sum(g[0] == word for g, word in zip(guesses, words)) / len(words)
    return accuracy, collections.Counter(words).most_common(1)[0][1] / len(words)


def fill_mask_top10_vs_chance(model: Path) -> tuple[float, float]:
    """How often the masked word is among the 10 best guesses, and chance (10 of the vocabulary)."""
    guesses, words = fill_mask_predictions(model, top_k=10)
    return sum(word in g for g, word in zip(guesses, words)) / len(words), 10 / len(vocabulary(model))


def next_sentence_accuracy(model: Path) -> tuple[float, float]:
    """Accuracy on held-out sentence pairs, and chance (the pairs are half and half)."""
    pairs = sentence_pairs()
    results = pipeline("next-sentence", model=model)([(a, b) for a, b, _ in pairs])
    accuracy = sum((r["label"] == "isNext") == gold for r, (_, _, gold) in zip(results, pairs)) / len(pairs)
    return accuracy, 0.5


def question_answering_f1(model: Path) -> tuple[float, float]:
    """Mean SQuAD F1 on held-out questions, and the better of two answer-blind baselines: the first
    k words of the context (best k from 1 to 5), and the context sentence sharing most words with
    the question."""
    examples = squad_heldout()
    answers = pipeline("question-answering", model=model)([q for q, _, _ in examples], [c for _, c, _ in examples])
    f1 = sum(squad_f1(a["answer"], refs) for a, (_, _, refs) in zip(answers, examples)) / len(examples)

    def overlap_sentence(question: str, context: str) -> str:
        asked = set(squad_normalize(question))
        return max(re.split(r"(?<=[.!?])\s+", context), key=lambda s: len(asked & set(squad_normalize(s))))

    first_words = max(sum(squad_f1(" ".join(c.split()[:k]), refs) for _, c, refs in examples) / len(examples)
                      for k in range(1, 6))
    overlap = sum(squad_f1(overlap_sentence(q, c), refs) for q, c, refs in examples) / len(examples)
    return f1, max(first_words, overlap)


def classification_accuracy(model: Path) -> tuple[float, float]:
    """Accuracy on unseen SST-2 sentences, and the majority class's share of them."""
    rows = sst2_unseen_sentences()
    predicted = [best["label"] for best in pipeline("text-classification", model=model)([t for t, _ in rows])]
    accuracy = sum(p == gold for p, (_, gold) in zip(predicted, rows)) / len(rows)
    majority = collections.Counter(gold for _, gold in rows).most_common(1)[0][1] / len(rows)
    return accuracy, majority


def conll_sentences(name: str) -> list[tuple[list[str], list[str]]]:
    """(words, IOB2 tags) of each sentence of a CoNLL-2003 fixture file."""
    sentences, words, tags = [], [], []
    for line in fixture_data("conll2003", name).read_text(encoding="utf-8").splitlines() + [""]:
        if line and not line.startswith("-DOCSTART-"):
            words.append(line.split()[0])
            tags.append(line.split()[-1])
        elif words:
            sentences.append((words, tags))
            words, tags = [], []
    return sentences


def word_tags(words: list[str], entities: list[dict]) -> list[str]:
    """IOB2 tags of the words (joined by spaces) from the pipeline's character spans."""
    tags, start = [], 0
    for word in words:
        entity = next((e for e in entities if e["start"] <= start < e["end"]), None)
        tags.append("O" if entity is None else ("B-" if entity["start"] == start else "I-") + entity["entity_group"])
        start += len(word) + 1
    return tags


def named_entity_f1(model: Path) -> tuple[float, float]:
    """Entity F1 (seqeval: CoNLL's exact span and type match) on the 100 held-out sentences of
    eng.testa, and that of tagging each word with its most frequent tag in the training fixture
    (unseen words: O), a lexical baseline like the CoNLL-2003 shared task's."""
    from seqeval.metrics import f1_score

    sentences = conll_sentences("valid.txt")
    entities = pipeline("token-classification", model=model)([" ".join(words) for words, _ in sentences])
    gold = [tags for _, tags in sentences]
    predicted = [word_tags(words, found) for (words, _), found in zip(sentences, entities)]
    seen = collections.defaultdict(collections.Counter)
    for words, tags in conll_sentences("train.txt"):
        for word, tag in zip(words, tags):
            seen[word][tag] += 1
    lexical = [[seen[w].most_common(1)[0][0] if w in seen else "O" for w in words] for words, _ in sentences]
    return f1_score(gold, predicted), f1_score(gold, lexical)


@dataclass(frozen=True)
class Check:
    measure: Callable[[Path], tuple[float, float]]  # model directory -> (score, baseline), both in 0..1
    margin: float  # how far above the baseline the score must be
    why: str  # why that margin, in one line


# Measured on the fixtures on 2026-11-30 (bertforge-minilm-gutenberg and bertforge-mini: 2026-12-01);
# each margin leaves room for a model somewhat worse than today's and none for one that is broken.
CHECKS: dict[str, tuple[Check, ...]] = {
    "bertforge-minilm-gutenberg": (
        Check(fill_mask_top1_vs_unigram, 0.15,
              "measured 36.0% vs 10.7% (24.0% before its second stage); 15 points is 5.5 standard errors of 300 words"),
        Check(next_sentence_accuracy, 0.15, "measured 77.3% (52.0% before its second stage); 15 points is 5 "
                                            "standard errors of 300 coin flips: noise cannot pass"),
    ),
    "bertforge-mini": (
        Check(fill_mask_top1_vs_unigram, 0.10,
              "measured 34.7% vs 10.7% (the BERT-tiny bundled before: 0.3%); 10 points leaves 5 standard "
              "errors of 300 words for a model somewhat worse than today's"),
        Check(fill_mask_top10_vs_chance, 0.30,
              "measured 65.3% vs 0.03%; weights that load wrong guess at chance; 30 points is under half today's score"),
        Check(next_sentence_accuracy, 0.12, "measured 74.0% (the BERT-tiny bundled before: 50.7%); 12 points is 4 "
                                            "standard errors of 300 coin flips: noise cannot pass"),
    ),
    "minilm-squad": (
        Check(question_answering_f1, 0.25,
              "measured 77.0 vs 20.2 F1 on 138 questions (64.2 for the first, lr-6e-5 model); 25 points is under half that gap"),
    ),
    "conll-distilled": (
        Check(named_entity_f1, 0.40, "lexical baseline 7.8 F1 (300 training sentences); 40 points asks for half "
                                     "its 88.7 held out, a teacher 500 steps into training already had 66.2 here"),
    ),
    "sst2-distilled": (
        Check(classification_accuracy, 0.30,
              "measured 89.5% vs 52.5%; 30 points asks 82.5%, 6.5 below its teacher's 89.0% on unseen sentences"),
    ),
}


def check_params():
    for name, checks in CHECKS.items():
        for check in checks:
            yield pytest.param(name, check, id=f"{name}-{check.measure.__name__}")


@pytest.mark.slow
@pytest.mark.parametrize(("name", "check"), list(check_params()))
def test_bundled_model_beats_the_baseline_on_held_out_data(name, check):
    score, baseline = check.measure(bundled_model_path(name, "unused"))
    assert score >= baseline + check.margin, (f"{name}: {check.measure.__name__} {score:.1%} is not "
                                              f"{check.margin:.0%} above the baseline {baseline:.1%} ({check.why})")


def test_every_bundled_model_is_checked_and_states_its_figures():
    """A model added to src/bertforge/pretrained/ needs an entry in CHECKS and an evaluation.json:
    the held-out figures that its README quotes and `bertforge demo` prints."""
    bundled = sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").is_file())
    assert bundled == sorted(CHECKS), "each bundled model needs its checks in CHECKS, and each entry its model"
    for name in bundled:
        evaluation = json.loads((PRETRAINED_DIR / name / "evaluation.json").read_text(encoding="utf-8"))
        assert set(evaluation) == {"split", "command", "figures"}, name
        assert "never trained on" in evaluation["split"], name
        assert evaluation["command"].startswith("bertforge "), name
        assert evaluation["figures"], name
        for figure in evaluation["figures"]:
            assert set(figure) <= {"metric", "value", "unit", "baseline"} and figure["metric"], (name, figure)
            assert figure["unit"] == "%" and 0 <= figure["value"] <= 100, (name, figure)
            if "baseline" in figure:
                assert set(figure["baseline"]) == {"name", "value"}, (name, figure)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_the_readme_and_the_demo_quote_the_evaluation_file(name, capsys):
    from bertforge.cli.demo import show_held_out_figures

    model = PRETRAINED_DIR / name
    figures = json.loads((model / "evaluation.json").read_text(encoding="utf-8"))["figures"]
    readme = (model / "README.md").read_text(encoding="utf-8")
    assert "evaluation.json" in readme, f"{name}/README.md should say where its figures come from"
    show_held_out_figures(model)
    demo = " ".join(capsys.readouterr().out.split())  # the demo wraps its lines
    for figure in figures:
        value = f"{figure['value']:g}"
        assert value in readme, f"{name}/README.md does not quote {figure['metric']} {value}"
        assert f"{figure['metric']} {value}{figure['unit']}" in demo, demo


def test_the_pipelines_default_to_the_bundled_models():
    from bertforge.pipelines import pipeline_class

    defaults = {"fill-mask": "bertforge-minilm-gutenberg", "next-sentence": "bertforge-minilm-gutenberg",
                "question-answering": "minilm-squad", "text-classification": "sst2-distilled"}
    for task, name in defaults.items():
        assert pipeline_class(task).default_model() == bundled_model_path(name, "unused"), task


def test_transformers_reads_the_bundled_classifier_with_the_same_scores():
    """The float16 file loads in transformers' BertForSequenceClassification (cast to float32, as
    bertforge's loader does) and gives the pipeline's probabilities."""
    from transformers import AutoModelForSequenceClassification, BertTokenizerFast

    classify = pipeline("text-classification", model=bundled_model_path("sst2-distilled", "unused"))
    reference = AutoModelForSequenceClassification.from_pretrained(str(classify.model_path),
                                                                   dtype=torch.float32).eval()
    tokenizer = BertTokenizerFast.from_pretrained(str(classify.model_path))
    texts = [text for text, _ in sst2_unseen_sentences()[:16]]
    with torch.inference_mode():
        probabilities = reference(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    names = [reference.config.id2label[i] for i in range(reference.config.num_labels)]
    assert names == ["negative", "positive"]
    for row, result in zip(probabilities, classify(texts, top_k=None)):
        ours = {item["label"]: item["score"] for item in result}
        torch.testing.assert_close(torch.tensor([ours[name] for name in names]), row, atol=1e-5, rtol=0)


def test_serve_loads_the_bundled_classifier_by_default():
    from bertforge.cli.serve import bundled_models
    from bertforge.model.capabilities import checkpoint_tasks

    served = dict(bundled_models())
    assert served["sst2-distilled"] == bundled_model_path("sst2-distilled", "unused")
    assert "text-classification" in checkpoint_tasks(served["sst2-distilled"])
    # one model per task that needs a head: no other bundled model classifies
    assert [name for name, path in served.items() if "text-classification" in checkpoint_tasks(path)] == \
        ["sst2-distilled"]
