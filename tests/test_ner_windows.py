"""NER evaluation and `bertforge predict --task ner` read every word of a sentence longer than --max-length: it is
read in overlapping windows (the tokenizer's overflowing tokens), each word tagged from its first piece in the
window where it has the most context (BERT's run_squad rule). Before, the words past max_length were tagged O
with probability 0. On the bundled CoNLL-2003 tagger and the CoNLL-2003 fixture."""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from bertforge.cli.finetune import load_task_model
from bertforge.cli.main import cli
from bertforge.io.datasets import TaggedSentence, read_conll
from bertforge.tasks.ner import TokenClassificationTask
from bertforge.tasks.squad import doc_stride_for
from conftest import REPO, fixture_data

TAGGER = REPO / "src" / "bertforge" / "pretrained" / "conll-distilled"
MERKEL = "Angela Merkel visited Paris .".split()  # 6 word pieces
MERKEL_TAGS = ["B-PER", "I-PER", "O", "B-LOC", "O"]


@pytest.fixture(scope="module")
def tagger():
    _, task, tokenizer, model = load_task_model("ner", TAGGER)
    return task, tokenizer, model


def sentence(words: list[str], tags: list[str] | None = None) -> TaggedSentence:
    return TaggedSentence(words=list(words), tags=tags or ["O"] * len(words), source="test:1")


def test_a_long_sentences_last_words_are_tagged_as_in_a_short_one(tagger):
    task, tokenizer, model = tagger
    assert [tag for tag, _ in task.predict(model, [sentence(MERKEL)], tokenizer, 32)[0]] == MERKEL_TAGS
    long = task.predict(model, [sentence(MERKEL * 12)], tokenizer, 32)[0]  # 72 pieces: windows of 30
    assert [tag for tag, _ in long] == MERKEL_TAGS * 12 and min(p for _, p in long) > 0.9, long

    # Real text: twelve sentences of the fixture as one of 376 pieces. Read in windows of 30 or 62 pieces, it is
    # tagged almost as read whole (before: the first 23 or 55 of its 350 words, the others O with probability 0).
    words = [w for s in read_conll(fixture_data("conll2003", "valid.txt"))[:12] for w in s.words]
    whole = [tag for tag, _ in task.predict(model, [sentence(words)], tokenizer, 512)[0]]
    for max_length in (32, 64):
        windowed = task.predict(model, [sentence(words)], tokenizer, max_length)[0]
        assert min(p for _, p in windowed) > 0.3
        assert sum(tag == w for (tag, _), w in zip(windowed, whole)) >= 0.95 * len(words)


def test_each_word_is_read_from_its_first_piece_in_the_window_where_it_has_the_most_context(tokenizer):
    """Each logit row names its window and position (a label of its own), so the tags say where each word was
    read; expected: the windows worked out from the sentence's pieces. A word of 30 pieces spans windows that
    start inside it; they must not read it again."""
    long_word = "zqx" * 10  # z ##q ##x ##z ...: 30 pieces
    words = MERKEL * 3 + [long_word] + MERKEL * 4
    max_length = 16
    pieces = tokenizer(words, is_split_into_words=True, add_special_tokens=False).word_ids()
    assert pieces.count(words.index(long_word)) > max_length
    budget, stride = max_length - 2, doc_stride_for(max_length)  # pieces a window holds; its overlap with the next
    starts = list(range(0, len(pieces) - stride, budget - stride))  # until a window reaches the end
    expected = []
    for word in range(len(words)):
        first = pieces.index(word)
        holding = [(k, s, min(s + budget, len(pieces))) for k, s in enumerate(starts) if s <= first < s + budget]
        context = [min(first - s, end - 1 - first) + 0.01 * (end - s) for _, s, end in holding]
        k, s, _ = holding[context.index(max(context))]  # the first of equals
        expected.append(f"{k}:{first - s + 1}")  # + 1: [CLS]

    labels = [f"{k}:{p}" for k in range(len(starts)) for p in range(max_length)]
    task = TokenClassificationTask(labels)
    features = task.encode([sentence(words)], tokenizer, max_length, with_labels=False, windows=True)
    assert len(features) == len(starts) and all(f["sentence"] == 0 for f in features)
    logits = []
    for k, feature in enumerate(features):
        row = torch.zeros(len(feature["input_ids"]), len(labels))
        row[torch.arange(len(row)), [labels.index(f"{k}:{p}") for p in range(len(row))]] = 10.0
        logits.append(row.numpy())
    assert [tag for tag, _ in task.word_predictions(features, logits, [sentence(words)])[0]] == expected
    inside = {k for k, s in enumerate(starts) if pieces[s - 1] == pieces[s] == words.index(long_word)}
    unread = set(range(len(starts))) - {int(e.split(":")[0]) for e in expected}
    assert unread and unread < inside  # windows that start inside the long word: some read the words after it


class Oracle(torch.nn.Module):
    """Logits that put each window's gold tags (its `labels`) on its pieces, O elsewhere."""

    device = torch.device("cpu")

    def __init__(self, features: list[dict], tags: int):
        super().__init__()
        self.tags, self.labels = tags, {tuple(f["input_ids"]): f["labels"] for f in features}

    def evaluating(self):
        return contextlib.nullcontext()

    def forward(self, input_ids, attention_mask, token_type_ids, output_hidden_states=False):
        logits = torch.zeros(*input_ids.shape, self.tags)
        for row, (ids, mask) in enumerate(zip(input_ids, attention_mask)):
            labels = self.labels[tuple(ids[:int(mask.sum())].tolist())]
            logits[row, torch.arange(len(labels)), [max(label, 0) for label in labels]] = 10.0
        return SimpleNamespace(logits=logits)


def test_the_evaluation_scores_every_word(tokenizer):
    """With gold tags at every window's first pieces, entity F1 is 1 at a max length that 57 of the 100 sentences
    pass. Before, the words past it counted as O: recall 0.58, F1 0.72."""
    sentences = read_conll(fixture_data("conll2003", "valid.txt"))
    task = TokenClassificationTask.from_sentences(sentences)
    eval_set = task.eval_set(sentences, tokenizer, 12)
    scores = task.evaluate(Oracle(eval_set.features, len(task.labels)), eval_set)
    assert (scores["f1"], scores["recall"], scores["sentences"]) == (1.0, 1.0, len(sentences)), scores
    assert len(eval_set.features) > 2 * len(sentences)


def test_predict_and_evaluate_commands_read_a_long_sentence_whole(tmp_path, caplog):
    conll = tmp_path / "long.conll"
    rows = [(MERKEL * 10, MERKEL_TAGS * 10), (MERKEL, MERKEL_TAGS)]
    conll.write_text("\n".join("".join(f"{w} {t}\n" for w, t in zip(*row)) for row in rows), encoding="utf-8")
    model = ["--task", "ner", "--model", str(TAGGER), "--max-length", "32"]
    result = CliRunner().invoke(cli, ["predict", *model, "--input", str(conll)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [line["tags"] for line in lines] == [tags for _, tags in rows]
    assert min(min(line["scores"]) for line in lines) > 0.9
    result = CliRunner().invoke(cli, ["evaluate", *model, "--validation", str(conll)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["f1"] == 1.0
    assert "--max-length" not in caplog.text  # nothing is cut, so nothing is said
