"""`bertforge predict` and `evaluate` read a model as the pipelines (and so the server) read it: Google's folders
and checkpoint prefixes, label names, the scores a model's config implies, and windows a short model holds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bertforge.cli.main import cli
from bertforge.errors import ConfigError
from bertforge.model import BertConfig, BertForQuestionAnswering, BertForSequenceClassification
from bertforge.pipelines import pipeline
from conftest import REPO

TF_FIXTURE = REPO / "tests" / "fixtures" / "tf_checkpoint"
BUNDLED = REPO / "src" / "bertforge" / "pretrained"
TEXTS = ["A gripping, beautifully acted film.", "A dull and far too long film that goes nowhere at all."]
CONTEXT = ("The Seine is a river in northern France. Paris, the capital of France, lies on it. The river rises "
           "near Dijon and flows into the English Channel at Le Havre, more than seven hundred kilometres away.")


def _predict(*arguments) -> list[dict]:
    result = CliRunner().invoke(cli, ["predict", *map(str, arguments)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


def _texts(tmp_path):
    path = tmp_path / "texts.tsv"
    path.write_text("sentence\n" + "\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def _squad(tmp_path):
    path = tmp_path / "squad.json"
    questions = [{"id": "q1", "question": "Which river flows through Paris?", "answers": []},
                 {"id": "q2", "question": "Where does the river flow into the sea?", "answers": []}]
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": questions}]}]}))
    return path


def test_predict_and_evaluate_read_googles_folders_and_prefixes(tmp_path):
    """Google's run_classifier output (3 classes, no label names in bert_config.json) and a run_squad prefix:
    the pipelines read them, and so do predict and evaluate, with the same answers."""
    classifier = TF_FIXTURE / "classifier"
    expected = pipeline("text-classification", model=classifier)(TEXTS, top_k=None)
    for model in (classifier, classifier / "model.ckpt-12", classifier / "bert_config.json"):
        lines = _predict("--task", "classification", "--model", model, "--input", _texts(tmp_path))
        assert [line["label"] for line in lines] == [ranked[0]["label"] for ranked in expected]
        for line, ranked in zip(lines, expected, strict=True):
            assert set(line["scores"]) == {"LABEL_0", "LABEL_1", "LABEL_2"}
            assert all(line["scores"][item["label"]] == pytest.approx(item["score"], abs=1e-6) for item in ranked)
    gold = tmp_path / "gold.tsv"
    gold.write_text("sentence\tlabel\n" + "".join(f"{t}\tLABEL_{i}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    result = CliRunner().invoke(cli, ["evaluate", "--task", "classification", "--model", str(classifier),
                                      "--validation", str(gold)])
    assert result.exit_code == 0 and json.loads(result.output)["examples"] == 2, result.output
    prefix = TF_FIXTURE / "squad" / "model.ckpt-88"
    answers = pipeline("question-answering", model=prefix)(
        ["Which river flows through Paris?", "Where does the river flow into the sea?"], CONTEXT)
    lines = _predict("--task", "qa", "--model", prefix, "--input", _squad(tmp_path))
    assert [(line["answer"], line["start"]) for line in lines] == [(a["answer"], a["start"]) for a in answers]


def test_predict_scores_as_the_models_config_implies(tmp_path, tokenizer):
    """A regression model's output is its value, not a softmax over one class (always 1.0); a multi-label
    model's scores are independent sigmoids: transformers' rule, which the pipeline follows."""
    torch.manual_seed(0)
    for problem_type, labels in (("regression", 1), ("multi_label_classification", 3)):
        folder = tmp_path / problem_type
        config = BertConfig.from_size("tiny", vocab_size=len(tokenizer), id2label={i: f"L{i}" for i in range(labels)})
        config.problem_type = problem_type
        BertForSequenceClassification(config).save_pretrained(folder, tokenizer=tokenizer)
        expected = pipeline("text-classification", model=folder)(TEXTS, top_k=None)
        lines = _predict("--task", "classification", "--model", folder, "--input", _texts(tmp_path))
        for line, ranked in zip(lines, expected, strict=True):
            assert line["score"] == pytest.approx(ranked[0]["score"], abs=1e-6)
            assert line["scores"] == pytest.approx({item["label"]: item["score"] for item in ranked}, abs=1e-6)
        if problem_type == "regression":
            assert all(line["score"] != pytest.approx(1.0) for line in lines)
        else:
            assert all(not np.isclose(sum(line["scores"].values()), 1.0) for line in lines)


def test_a_short_window_qa_model_is_read_in_windows_it_can_hold(tmp_path, tokenizer):
    """A QA model of 64 positions: the task's window (384) and doc stride (128) are cut to fit, as the
    pipeline cuts them, instead of failing; a --max-length past its positions is refused in one line."""
    torch.manual_seed(0)
    folder = tmp_path / "short"
    config = BertConfig.from_size("tiny", vocab_size=len(tokenizer), max_position_embeddings=64)
    BertForQuestionAnswering(config).save_pretrained(folder, tokenizer=tokenizer)
    answers = pipeline("question-answering", model=folder)(
        ["Which river flows through Paris?", "Where does the river flow into the sea?"], CONTEXT)
    lines = _predict("--task", "qa", "--model", folder, "--input", _squad(tmp_path))
    assert [(line["answer"], line["start"]) for line in lines] == [(a["answer"], a["start"]) for a in answers]
    result = CliRunner().invoke(cli, ["evaluate", "--task", "qa", "--model", str(folder), "--validation",
                                      str(_squad(tmp_path)), "--max-length", "128"])
    assert result.exit_code == 2 and result.output.strip() == \
        f"error: --max-length 128: the model {folder} reads 3 to 64 tokens", result.output


def test_predict_tags_and_answers_as_the_pipelines_do(tmp_path, tokenizer):
    """`predict --task ner` on sentences cuts them into BERT's words and reads the model's whole length, as the
    token-classification pipeline (and the server) do: before, "Paris." was one word and pieces past 128 were
    tagged O. `predict --task qa` reads the windows the QA pipeline reads, within the tokenizer's
    model_max_length (before, 384 whatever the tokenizer said)."""
    texts = ["Angela Merkel visited Paris.", "東京 Tokyo is in Japan, said John Smith.",
             " ".join(["The quick brown fox from London met Mary Jones in Berlin."] * 20)]
    table = tmp_path / "sentences.jsonl"
    table.write_text("".join(json.dumps({"sentence": text}) + "\n" for text in texts), encoding="utf-8")
    tagger = pipeline("token-classification", model=BUNDLED / "conll-distilled")
    assert len(tagger.tokenizer(texts[2])["input_ids"]) > 128
    lines = _predict("--task", "ner", "--model", BUNDLED / "conll-distilled", "--input", table)
    for text, line in zip(texts, lines, strict=True):
        first_pieces = {piece["start"]: piece for piece in tagger(text, aggregation_strategy="none", ignore_labels=[])}
        position = 0
        for word, tag, score in zip(line["words"], line["tags"], line["scores"], strict=True):
            start = text.index(word, position)
            position = start + len(word)
            assert first_pieces[start]["word"].startswith(word[0].lower()), (word, first_pieces[start])
            assert (first_pieces[start]["entity"], first_pieces[start]["score"]) == (tag, pytest.approx(score, abs=1e-5))
        assert position == len(text.rstrip())
    assert lines[0]["words"][-2:] == ["Paris", "."]

    torch.manual_seed(0)
    folder = tmp_path / "qa128"
    short = type(tokenizer).from_pretrained(model_max_length=128)
    config = BertConfig.from_size("tiny", vocab_size=len(short))
    BertForQuestionAnswering(config).save_pretrained(folder, tokenizer=short)
    context = " ".join([CONTEXT] * 4)
    squad = tmp_path / "long.json"
    squad.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "Which river flows through Paris?", "answers": []}]}]}]}))
    answers = pipeline("question-answering", model=folder)(question="Which river flows through Paris?", context=context)
    lines = _predict("--task", "qa", "--model", folder, "--input", squad)
    assert [(line["answer"], line["start"], line["score"]) for line in lines] == \
        [(answers["answer"], answers["start"], pytest.approx(answers["score"], abs=1e-5))]


def test_another_tasks_model_starts_a_run_with_new_head_and_a_regression_model_is_named(tmp_path, tokenizer):
    """A sentence classifier's encoder starts an NER run with --new-head (refused before, the help's advice
    notwithstanding), and without it the refusal says so. A regression model is named as one where class labels
    are trained or scored: evaluate said its labels were unknown, finetune blamed config.json's sizes."""
    from conftest import fixture_data

    conll = fixture_data("conll2003", "train.txt")
    start = ["finetune", "--task", "ner", "--model", str(BUNDLED / "sst2-distilled"), "--train", str(conll),
             "--train-limit", "4", "--max-steps", "1", "--batch-size", "2", "--output"]
    result = CliRunner().invoke(cli, [*start, str(tmp_path / "refused")])
    assert result.exit_code == 2 and result.output.strip().endswith(
        "holds the head of a BertForSequenceClassification; give --new-head to start from its encoder"), result.output
    result = CliRunner().invoke(cli, [*start, str(tmp_path / "ner"), "--new-head"])
    assert result.exit_code == 0, result.output

    torch.manual_seed(0)
    regression, table = tmp_path / "regression", tmp_path / "scores.tsv"
    config = BertConfig.from_size("tiny", vocab_size=len(tokenizer), id2label={0: "L0"})
    config.problem_type = "regression"
    BertForSequenceClassification(config).save_pretrained(regression, tokenizer=tokenizer)
    table.write_text("sentence\tlabel\ngood\t3.5\nbad\t1.0\nfine\t2\n", encoding="utf-8")
    refusal = f"{regression}: a regression model (problem_type regression, one output); --task classification " \
              f"trains and scores class labels; "
    result = CliRunner().invoke(cli, ["evaluate", "--task", "classification", "--model", str(regression),
                                      "--validation", str(table)])
    assert result.exit_code == 2 and result.output.strip() == \
        f"error: --model {refusal}`bertforge predict` gives its values", result.output
    result = CliRunner().invoke(cli, ["finetune", "--task", "classification", "--model", str(regression), "--train",
                                      str(table), "--output", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output.strip().endswith(
        f"--model {refusal}give --new-head to train a classifier on its encoder"), result.output


def test_evaluate_scores_what_predict_labels(tmp_path, caplog):
    """`evaluate` reads texts up to the model's length, as `predict` and the pipeline do: before, it cut them at
    128 pieces, so reviews whose verdict comes after a long summary all scored as their summary. Texts cut by
    a shorter --max-length are counted in a warning, as the pipelines count them (before, in silence)."""
    summary = " ".join(["The film follows a family over three summers in a small town by the sea."] * 9)
    texts = [f"{summary} In the end it is a wonderful, moving and beautifully acted film.",
             f"{summary} In the end it is a dull, clumsy and painfully boring film."]
    table = tmp_path / "reviews.tsv"
    table.write_text("sentence\n" + "\n".join(texts) + "\n", encoding="utf-8")
    model = BUNDLED / "sst2-distilled"
    assert len(pipeline("text-classification", model=model).tokenizer(summary)["input_ids"]) > 128
    labels = [line["label"] for line in _predict("--task", "classification", "--model", model, "--input", table)]
    assert len(set(labels)) == 2, labels  # the verdict decides: the reviews differ only there
    gold = tmp_path / "gold.tsv"
    gold.write_text("sentence\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in zip(texts, labels)), encoding="utf-8")
    result = CliRunner().invoke(cli, ["evaluate", "--task", "classification", "--model", str(model),
                                      "--validation", str(gold)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["accuracy"] == 1.0, result.output
    result = CliRunner().invoke(cli, ["evaluate", "--task", "classification", "--model", str(model),
                                      "--validation", str(gold), "--max-length", "128"])
    assert result.exit_code == 0 and "2 of 2 inputs were longer than 128 tokens and were truncated" in caplog.text


def test_a_length_past_the_model_is_one_message_in_every_command(tmp_path, tokenizer):
    """--max-length is checked by one rule: predict on a classifier (through the pipeline) and evaluate said a
    length past the model's positions two ways, and data commands refused lengths below 8 that embed took.
    A sentence-transformers max_seq_length that cannot be a length is named with its file: it blamed the
    --max-length no one gave."""
    from bertforge.errors import CheckpointError

    torch.manual_seed(0)
    folder = tmp_path / "short"
    config = BertConfig.from_size("tiny", vocab_size=len(tokenizer), max_position_embeddings=64,
                                  id2label={0: "LABEL_0", 1: "LABEL_1"})
    BertForSequenceClassification(config).save_pretrained(folder, tokenizer=tokenizer)
    gold = tmp_path / "gold.tsv"
    gold.write_text("sentence\tlabel\n" + "".join(f"{t}\tLABEL_{i}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    expected = f"error: --max-length 100: the model {folder} reads 3 to 64 tokens"
    for command in (["predict", "--input", _texts(tmp_path)], ["evaluate", "--validation", gold],
                    ["embed", "--input", _texts(tmp_path), "--column", "sentence"]):
        result = CliRunner().invoke(cli, [*map(str, command), "--model", str(folder), "--max-length", "100"]
                                    + (["--task", "classification"] if command[0] != "embed" else []))
        assert result.exit_code == 2 and result.output.strip() == expected, (command, result.output)
    assert len(_predict("--task", "classification", "--model", folder, "--input", _texts(tmp_path),
                        "--max-length", "5")) == 2
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 0}')
    with pytest.raises(CheckpointError, match=rf"^{folder / 'sentence_bert_config.json'}: max_seq_length must be a "
                                              r"whole number of at least 3, got 0$"):
        pipeline("sentence-embedding", model=folder)


def test_bf16_is_the_pipelines_bfloat16_in_predict_and_evaluate(tmp_path):
    """--bf16 in predict and evaluate runs bfloat16 weights, as pipeline(dtype="bfloat16") and predict for
    classifiers do: NER and evaluate ran float32 weights under autocast, so the same flag gave other scores."""
    table = tmp_path / "sentences.jsonl"
    table.write_text(json.dumps({"sentence": "Angela Merkel visited Paris with John Smith."}) + "\n", encoding="utf-8")
    tagger = pipeline("token-classification", model=BUNDLED / "conll-distilled", dtype="bfloat16")
    pieces = {p["start"]: p for p in tagger("Angela Merkel visited Paris with John Smith.", aggregation_strategy="none",
                                            ignore_labels=[])}
    line, = _predict("--task", "ner", "--model", BUNDLED / "conll-distilled", "--input", table, "--bf16")
    position = 0
    for word, tag, score in zip(line["words"], line["tags"], line["scores"], strict=True):
        start = "Angela Merkel visited Paris with John Smith.".index(word, position)
        position = start + len(word)
        assert (pieces[start]["entity"], pieces[start]["score"]) == (tag, pytest.approx(score, abs=1e-6)), word


def test_predict_reads_its_input_as_embed_does(tmp_path):
    """predict read texts with the training reader: a .txt file of texts was a table whose first line named
    its columns, and an empty line stopped it. It now reads input as embed does (a text a line, empty lines
    skipped and counted), and each output line says which input line it answers, as embed's do."""
    texts = tmp_path / "texts.txt"
    texts.write_text(f"{TEXTS[0]}\n\n{TEXTS[1]}\n", encoding="utf-8")
    model = BUNDLED / "sst2-distilled"
    lines = _predict("--task", "classification", "--model", model, "--input", texts)
    assert [(line["line"], line["text"]) for line in lines] == [(1, TEXTS[0]), (3, TEXTS[1])]
    expected = pipeline("text-classification", model=model)(TEXTS)
    assert [line["label"] for line in lines] == [e["label"] for e in expected]
    table = tmp_path / "sentences.jsonl"
    table.write_text("".join(json.dumps({"sentence": t}) + "\n" for t in ("", "John Smith lives in Paris.")))
    line, = _predict("--task", "ner", "--model", BUNDLED / "conll-distilled", "--input", table)
    assert line["line"] == 2 and line["words"][:2] == ["John", "Smith"]


def test_a_damaged_config_is_named_not_taken_for_another_head(tmp_path):
    """Which classifier a folder holds is read from config.json's architectures: a config that was not JSON
    made predict say the token classifier held a sequence classifier's head, and a string where a list belongs
    made the pipeline say the folder had no token-classification head."""
    texts = tmp_path / "texts.jsonl"
    texts.write_text(json.dumps({"sentence": "John Smith lives in Paris."}) + "\n", encoding="utf-8")
    source = BUNDLED / "conll-distilled"
    for name, damage in (("cut", lambda text: text[:40]),
                         ("string", lambda text: json.dumps({**json.loads(text), "architectures": "BertForTokenClassification"}))):
        folder = tmp_path / name
        folder.mkdir()
        for file in source.iterdir():
            (folder / file.name).symlink_to(file)
        (folder / "config.json").unlink()
        (folder / "config.json").write_text(damage((source / "config.json").read_text()), encoding="utf-8")
        result = CliRunner().invoke(cli, ["predict", "--task", "ner", "--model", str(folder), "--input", str(texts)])
        assert result.exit_code == 2 and result.output.startswith(f"error: {folder}/config.json: "), result.output
        assert "head" not in result.output, result.output
    with pytest.raises(ConfigError, match="'architectures' must be a list of class names"):
        pipeline("token-classification", model=tmp_path / "string")


def test_a_missing_column_names_predicts_own_option(tmp_path):
    """predict chooses its columns with --text-column and --text-pair-column; a missing one told the user to
    choose it with --column or --pair-column, embed's options, which predict does not take."""
    table = tmp_path / "pairs.tsv"
    table.write_text("premise\thypothesis\na cat\tan animal\n", encoding="utf-8")
    model = str(BUNDLED / "sst2-distilled")
    for task, columns, option in (("classification", [], "--text-column"),
                                  ("pair-classification", ["--text-column", "premise", "--text-pair-column", "claim"],
                                   "--text-pair-column")):
        result = CliRunner().invoke(cli, ["predict", "--task", task, "--model", model, "--input", str(table), *columns])
        assert result.exit_code == 2 and result.output.endswith(
            f"pairs.tsv:2: no column '{columns[-1] if columns else 'sentence'}' (found: premise, hypothesis); "
            f"choose it with {option}\n"), result.output


def test_a_text_a_line_given_to_predict_ner_is_refused_not_cut_to_first_words(tmp_path):
    """A .txt file is CoNLL to predict --task ner. One sentence a line tagged each line's first word alone
    ('Angela'), without a word, when there was one line or blank lines between them; lines of other lengths
    were a malformed CoNLL line with no hint of the table that reads sentences."""
    command = ["predict", "--task", "ner", "--model", str(BUNDLED / "conll-distilled"), "--input"]
    hint = "; sentences of several words a line are read from a table (.jsonl, .csv, .parquet) with --text-column\n"
    for name, text, message in (
            ("one.txt", "Angela Merkel visited Paris\n", "one.txt:1: read as CoNLL (a word a line, in its first "
                                                         "column), every sentence is one line of 4 words, and only its "
                                                         "first word would be tagged"),
            ("spaced.txt", "Angela Merkel visited Paris\n\nBob lives in London\n", "spaced.txt:1: read as CoNLL"),
            ("ragged.txt", "Angela Merkel visited Paris\nBob lives in big London\n",
             "ragged.txt:2: malformed CoNLL line 'Bob lives in big London': 5 columns, the file's first token line "
             "has 4")):
        (tmp_path / name).write_text(text, encoding="utf-8")
        result = CliRunner().invoke(cli, [*command, str(tmp_path / name)])
        assert result.exit_code == 2 and result.output.startswith(f"error: {tmp_path / message}"), result.output
        assert result.output.endswith(hint), result.output
    (tmp_path / "words.conll").write_text("EU NNP\nrejects VBZ\n\nParis NNP\n", encoding="utf-8")
    assert [line["words"] for line in _predict(*command[1:], tmp_path / "words.conll")] == [["EU", "rejects"], ["Paris"]]
