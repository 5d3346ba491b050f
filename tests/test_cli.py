"""The `bertforge` command: every registered command loads, errors are one clean line, and the
demo (the README's first command) runs end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import bertforge
from bertforge.cli.main import COMMANDS, cli
from conftest import fixture_data


def test_every_command_has_help():
    runner = CliRunner()
    listing = runner.invoke(cli, ["--help"])
    assert listing.exit_code == 0, listing.output
    for name in COMMANDS:
        assert name in listing.output
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_the_command_listing_loads_no_command_module():
    """`bertforge --help` lists every command from COMMANDS alone: the embedding commands' options load torch."""
    script = ("import sys; from bertforge.cli.main import cli; cli(['--help'], standalone_mode=False); "
              "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('bertforge.cli.') "
              "and m not in ('bertforge.cli.main', 'bertforge.cli.environment')))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    *listing, loaded = result.stdout.splitlines()
    assert loaded == "[]", result.stdout
    listing = "\n".join(listing)
    for name, (_, summary) in COMMANDS.items():
        assert f"  {name} " in listing and summary.split()[0] in listing


def test_python_dash_m_and_version():
    result = subprocess.run([sys.executable, "-m", "bertforge", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "0.1.0" in result.stdout, result.stderr


def test_user_error_is_one_line_without_traceback(tmp_path):
    result = CliRunner().invoke(cli, ["tokenize", "--model", str(tmp_path / "nowhere"), "hello"])
    # the command's own exit (a crash would leave its exception here, and CliRunner prints no traceback)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.exception
    assert result.output == (f"error: tokenizer not found: {tmp_path / 'nowhere'} is neither a directory nor a "
                             f"vocab.txt file\n")


@pytest.mark.parametrize("command", [
    ["pretrain", "prepare", "{missing}", "{out}"],
    ["pretrain", "prepare", "{corpus}", "{out}", "--vocab", "{missing}"],
    ["pretrain", "train", "{missing}", "{out}"],
    ["finetune", "--task", "classification", "--train", "{missing}", "--output", "{out}"],
    ["finetune", "--task", "classification", "--train", "{corpus}", "--validation", "{missing}", "--output", "{out}"],
    ["distill", "--task", "classification", "--teacher", "{missing}", "--train", "{corpus}", "--output", "{out}"],
], ids=["prepare-corpus", "prepare-vocab", "train-data", "finetune-train", "finetune-validation", "distill-teacher"])
def test_a_missing_input_of_a_long_command_is_named(tmp_path, command):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A sentence.\tx\n")
    missing = tmp_path / "mistyped"
    result = CliRunner().invoke(cli, [a.format(missing=missing, out=tmp_path / "out", corpus=corpus) for a in command])
    assert result.exit_code == 2 and f"error: {missing}: no such file or directory" in result.output, result.output
    assert not (tmp_path / "out").exists()


BUNDLED = str(Path(bertforge.__file__).parent / "pretrained")


@pytest.mark.parametrize("command, message", [
    (["tokenize", "--input", "{dir}/in.jsonl", "--output", "{dir}/in.jsonl"],
     "--output {dir}/in.jsonl: would overwrite the input {dir}/in.jsonl"),
    (["embed", "--input", "{dir}/in.jsonl", "--output", "{dir}/in.jsonl"],
     "--output {dir}/in.jsonl: would overwrite the input"),
    (["embed", "--input", "{dir}/in.jsonl", "--output", "{dir}"], "--output {dir}: would overwrite the input"),
    (["embed", "--output", "{dir}/other", "hello"],
     "--output {dir}/other: is not empty and holds no *.parquet, so it is not an earlier output of this command"),
    (["predict", "--task", "classification", "--model", BUNDLED + "/sst2-distilled", "--input", "{dir}/in.jsonl",
      "--text-column", "text", "--output", "{dir}/in.jsonl"], "--output {dir}/in.jsonl: would overwrite the input"),
    (["convert", "{dir}/model", "{dir}/model"], "DESTINATION {dir}/model: would overwrite the input {dir}/model"),
    (["convert", "{dir}/model", "{dir}/other"], "DESTINATION {dir}/other: is not empty and holds no config.json"),
    (["convert", "{dir}/model", "{dir}/model/sub"], "DESTINATION {dir}/model/sub: is inside the input {dir}/model, "
                                                   "which writing there would change; give an output outside it"),
    (["finetune", "--task", "classification", "--train", "{dir}/in.jsonl", "--model", "{dir}/model", "--output",
      "{dir}/model/run"], "--output {dir}/model/run: is inside the input {dir}/model"),
    (["pretrain", "prepare", "{dir}/in.jsonl", "{dir}", "--vocab", BUNDLED + "/bertforge-mini"],
     "{dir}: would overwrite the input {dir}/in.jsonl"),
    (["fill-mask", "--input", "{dir}/in.jsonl", "--output", "{dir}/in.jsonl"],
     "--output {dir}/in.jsonl: would overwrite the input"),
    (["nsp", "--input", "{dir}/in.jsonl", "--output", "{dir}/in.jsonl"],
     "--output {dir}/in.jsonl: would overwrite the input"),
    (["evaluate", "--task", "classification", "--model", BUNDLED + "/sst2-distilled", "--validation",
      "{dir}/in.json", "--output", "{dir}/in.json"], "--output {dir}/in.json: would overwrite the input"),
    (["probe", "--train", "{dir}/in.json", "--output", "{dir}/in.json"],
     "--output {dir}/in.json: would overwrite the input"),
], ids=["tokenize-same-file", "embed-same-file", "embed-shards-over-input", "embed-shards-over-other-files",
        "predict-same-file", "convert-onto-itself", "convert-over-other-files", "convert-inside-its-source",
        "finetune-inside-its-model", "prepare-over-its-corpus",
        "fill-mask-same-file", "nsp-same-file", "evaluate-same-file", "probe-same-file"])
def test_an_output_that_would_destroy_an_input_or_other_files_is_refused_and_nothing_changes(tmp_path, command,
                                                                                               message):
    """Outputs replace their target whole (a file, or a directory swapped in): where that target is the input,
    or a directory of files this command did not write, the command must refuse before it loses them."""
    import shutil

    for name in ("in.jsonl", "in.json"):  # a JSON report (evaluate, probe) can only be written over a .json
        (tmp_path / name).write_text('{"text": "hello world"}\n', encoding="utf-8")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("important\n", encoding="utf-8")
    shutil.copytree(BUNDLED + "/bertforge-mini", tmp_path / "model")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = CliRunner().invoke(cli, [a.format(dir=tmp_path) for a in command])
    line = result.output.strip()
    assert result.exit_code == 2 and "\n" not in line and line.startswith("error: " + message.format(dir=tmp_path)), \
        result.output
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_an_earlier_output_of_the_same_command_is_replaced(tmp_path):
    """The refusal above must not stop a command writing again where it wrote before."""
    for _ in range(2):
        result = CliRunner().invoke(cli, ["embed", "--output", str(tmp_path / "vectors"), "hello"])
        assert result.exit_code == 0, result.output
        result = CliRunner().invoke(cli, ["convert", BUNDLED + "/bertforge-mini", str(tmp_path / "model")])
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "vectors").iterdir()) == ["part-00000.parquet"]


def test_predict_writes_json_or_jsonl_only(tmp_path):
    source = tmp_path / "in.tsv"
    source.write_text("sentence\na fine film\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["predict", "--task", "classification", "--model", f"{BUNDLED}/sst2-distilled",
                                      "--input", str(source), "--output", str(tmp_path / "out.csv")])
    assert result.exit_code == 2 and result.output.strip() == f"error: --output {tmp_path / 'out.csv'}: use a .json " \
        "or .jsonl file", result.output


def test_predict_ner_tags_the_sentences_of_a_table_and_warns_on_a_lone_conll_sentence(tmp_path, caplog):
    """Before, a file of sentences a line was read as CoNLL: one "sentence" of each line's first word."""
    import json

    table, lines = tmp_path / "in.csv", tmp_path / "in.txt"
    table.write_text("sentence\nJohn lives in Paris\nMary works at Google\n", encoding="utf-8")
    lines.write_text("John lives in Paris\nMary works at Google\n", encoding="utf-8")
    command = ["predict", "--task", "ner", "--model", f"{BUNDLED}/conll-distilled", "--input"]
    result = CliRunner().invoke(cli, [*command, str(table)])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["words"] for line in result.output.splitlines()] == \
        [["John", "lives", "in", "Paris"], ["Mary", "works", "at", "Google"]]
    assert CliRunner().invoke(cli, [*command, str(lines)]).exit_code == 0
    assert "read as CoNLL (a word a line, in its first column): one sentence of 2 words from 2 lines of 4 " \
           "columns" in caplog.text


@pytest.mark.parametrize("task, content", [("classification", "sentence\tlabel\n"), ("ner", ""),
                                           ("qa", '{"version": "1.1", "data": []}')])
def test_predict_on_a_file_without_examples_says_so(tmp_path, task, content):
    models = {"classification": "sst2-distilled", "ner": "conll-distilled", "qa": "minilm-squad"}
    source = tmp_path / ("in.json" if task == "qa" else "in.tsv" if task == "classification" else "in.txt")
    source.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(cli, ["predict", "--task", task, "--model", f"{BUNDLED}/{models[task]}",
                                      "--input", str(source)])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith(f"error: {source}"), \
        result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("task, columns, message", [
    ("classification", ["--label-column", "sentence"],
     "--text-column and --label-column both name the column 'sentence'; each must name a column of its own"),
    ("classification", ["--text-pair-column", "label"],
     "--text-pair-column label: --task classification reads one text; use --task pair-classification for pairs"),
    ("pair-classification", ["--text-pair-column", "sentence"],
     "--text-column and --text-pair-column both name the column 'sentence'"),
    ("classification", ["--tag-column", "2"],
     "--tag-column 2: --task classification reads no CoNLL tags; the option is for --task ner"),
], ids=["label-is-the-text", "pair-column-without-pairs", "pair-is-the-text", "tag-column-without-tags"])
def test_columns_that_would_train_on_the_wrong_field_are_refused(tmp_path, task, columns, message):
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\ngood film\t1\nbad film\t0\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["finetune", "--task", task, "--train", str(train), *columns,
                                      "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.strip().startswith("error: " + message), result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, message", [
    (["predict", "--task", "qa", "--model", f"{BUNDLED}/minilm-squad", "--input", "{data}/squad/"
      "squad-v1.1-dev-part-heldout.json.gz"], "--tag-column 1: --task qa reads no CoNLL tags; the option is for --task ner"),
    (["predict", "--task", "ner", "--model", f"{BUNDLED}/conll-distilled", "--input", "{data}/conll2003/valid.txt"],
     "--tag-column 1: {data}/conll2003/valid.txt is read for its words to tag, not for tags; the option is for labelled "
     "CoNLL files"),
    (["distill", "--task", "mlm", "--teacher", "teacher", "--train", "shards", "--output", "out"],
     "--tag-column: for a task's data files; --task mlm reads prepared shards"),
], ids=["predict-qa", "predict-ner", "distill-mlm"])
def test_a_tag_column_that_would_not_be_read_is_refused(command, message):
    """--tag-column names the tags of labelled CoNLL files: elsewhere it was ignored without a word."""
    data = fixture_data()
    result = CliRunner().invoke(cli, [*(a.format(data=data) for a in command), "--tag-column", "1"])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1] == "error: " + message.format(data=data), \
        result.output


@pytest.mark.parametrize("command, content, message", [
    (["fill-mask", "--input", "{file}"], "Paris is [MASK].\n\nno mask here\n",
     "{file}:3: no [MASK] token to fill: 'no mask here'"),
    (["nsp", "--input", "{file}"], "She cooked pasta\tIt was good\nhello\t \n",
     "{file}:2: the second text of the pair is empty"),
    (["nsp", "--input", "{file}"], "She cooked pasta\tIt was good\nhello\t\u200b\u200b\n",
     "{file}:2: the second text of the pair is empty"),
    (["nsp", "--input", "{file}", "--column", "a", "--pair-column", "c"], '{{"a": "x", "b": "y"}}\n',
     "{file}:1: no key 'c' (found: a, b); choose it with --pair-column"),
], ids=["fill-mask-line-without-mask", "nsp-half-a-pair", "nsp-half-a-pair-zero-width", "nsp-pair-column"])
def test_an_input_line_at_fault_is_named_with_its_file_and_line(tmp_path, command, content, message):
    """Line numbers count the file's lines (empty ones too), and the option to change is the one at fault."""
    source = tmp_path / ("in.jsonl" if content.startswith("{") else "in.txt")
    source.write_text(content.format(), encoding="utf-8")
    result = CliRunner().invoke(cli, [a.format(file=source) for a in command])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1] == "error: " + message.format(file=source), \
        result.output


def test_demo_stopped_in_its_fine_tune_does_not_offer_a_resume_it_cannot_do(monkeypatch):
    """The demo fine-tunes in a temporary directory that goes when it stops: the engine's "--resume DIR"
    would name a deleted directory and an option the demo does not have."""
    from bertforge.cli import demo
    from bertforge.training import TrainingInterrupted

    for step in ("show_tokenization", "show_contextual_embeddings", "show_pretrained_heads"):
        monkeypatch.setattr(demo, step, lambda *args: None)

    def stopped(workdir, steps):
        raise TrainingInterrupted(f"stopped at step 3 of {steps}: the same command with --resume {workdir} ...")

    monkeypatch.setattr(demo, "show_quick_finetune", stopped)
    result = CliRunner().invoke(cli, ["demo"])
    assert result.exit_code == 130 and result.output.strip() == "demo stopped", result.output


def test_demo_tells_the_story_end_to_end():
    """The README's first command: every step runs on the bundled models and data, and the bundled
    QA model finds the answer in the demo's context."""
    result = CliRunner().invoke(cli, ["demo", "--finetune-steps", "4"])
    assert result.exit_code == 0, result.output
    for step in ("1. WordPiece tokenization", "2. Contextual embeddings", "3. Fill-mask and next-sentence",
                 "4. A quick fine-tune", "5. Checkpoints bertforge reads", "6. Question answering", "7. Named entities"):
        assert step in result.output
    assert "the fine-tuned folder without vocab.txt gives the same answers" in result.output
    assert "let us start pre ##train ##ing the model ." in result.output
    assert "validation accuracy" in result.output
    answers = [line for line in result.output.splitlines() if "Who introduced BERT?" in line]
    assert len(answers) == 1 and "'Jacob Devlin'" in answers[0], answers
    assert "Angela Merkel (PER" in result.output and "Berlin (LOC" in result.output, result.output


def test_tokenize_does_not_import_torch(tmp_path):
    """Tokenizing needs no tensors: the command must start without torch (~1 s) or NumPy."""
    (tmp_path / "in.txt").write_text("Let us start pretraining the model.\n", encoding="utf-8")
    code = ("import sys\n"
            "from bertforge.cli.main import cli\n"
            "try:\n"
            f"    cli(['tokenize', '--input', {str(tmp_path / 'in.txt')!r}, '--output', {str(tmp_path / 'o.jsonl')!r}])\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
    assert (tmp_path / "o.jsonl").read_text(encoding="utf-8").count("\n") == 1


@pytest.mark.parametrize("command", [["finetune", "--task", "classification", "--train", "x.tsv", "--output", "o"],
                                     ["distill", "--task", "classification", "--teacher", "t", "--train", "x.tsv",
                                      "--student-layers", "1", "--output", "o"],
                                     ["pretrain", "prepare", "c.txt", "o"], ["pretrain", "train", "d", "o"],
                                     ["probe", "--train", "x.tsv"]])
def test_a_seed_out_of_range_is_refused_by_its_option(command):
    """Before, -1 or 2**64 reached torch's or scikit-learn's seeding: a ValueError traceback once training began
    (finetune, distill, pretrain) or a message about --test-fraction (probe)."""
    for seed in ("-1", str(2**64)):
        result = CliRunner().invoke(cli, [*command, "--seed", seed])
        assert result.exit_code == 2 and f"Invalid value for '--seed': {seed} is not in the range 0<=x<=4294967295" \
            in result.output, result.output


@pytest.mark.parametrize("command", [["evaluate", "--task", "classification", "--model", f"{BUNDLED}/sst2-distilled",
                                      "--validation"], ["probe", "--train"]])
def test_a_json_report_is_not_written_over_a_data_file(tmp_path, command):
    """Before, `evaluate ... --output test.tsv` (and probe's) replaced the data file with the metrics, exit 0."""
    data, victim = tmp_path / "data.tsv", tmp_path / "victim.tsv"
    for path in (data, victim):
        path.write_text("sentence\tlabel\ngood\t1\nbad\t0\n", encoding="utf-8")
    result = CliRunner().invoke(cli, [*command, str(data), "--output", str(victim)])
    assert result.exit_code == 2 and result.output.strip() == f"error: --output {victim}: use a .json file", \
        result.output
    assert victim.read_text(encoding="utf-8") == "sentence\tlabel\ngood\t1\nbad\t0\n"


def test_predict_ner_keeps_a_special_token_one_word_as_the_pipeline_does(tmp_path):
    """A table's sentences are cut into the words the model's tokenizer reads: "[MASK]" was three words, "[",
    "MASK" and "]", each tagged, where the token-classification pipeline tags one."""
    import json

    from bertforge.pipelines import pipeline

    model, text = BUNDLED + "/conll-distilled", "John [MASK] lives in Paris."
    table = tmp_path / "sentences.jsonl"
    table.write_text(json.dumps({"sentence": text}) + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["predict", "--task", "ner", "--model", model, "--input", str(table)])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["words"] == ["John", "[MASK]", "lives", "in", "Paris", "."]
    pieces = pipeline("token-classification", model=model)(text, aggregation_strategy="none", ignore_labels=[])
    assert line["tags"] == [piece["entity"] for piece in pieces]  # a piece a word here


def test_reading_sentences_to_tag_from_python_takes_the_tokenizer(tmp_path):
    """read_task_data cuts a table's sentences as predict does; without the tokenizer it says what it needs (it
    gave sentences without words, which failed later in the tokenizer)."""
    import json

    from bertforge.errors import ConfigError
    from bertforge.tasks import read_task_data
    from bertforge.tokenization import BertTokenizer

    table = tmp_path / "sentences.jsonl"
    table.write_text(json.dumps({"sentence": "John [MASK] lives in Paris."}) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer.from_pretrained(BUNDLED + "/conll-distilled")
    sentences = read_task_data("ner", table, labelled=False, tokenizer=tokenizer)
    assert [s.words for s in sentences] == [["John", "[MASK]", "lives", "in", "Paris", "."]]
    with pytest.raises(ConfigError, match=r"sentences.jsonl: sentences to tag are cut into the words of the model's "
                                          r"tokenizer: give tokenizer="):
        read_task_data("ner", table, labelled=False)


def test_convert_refuses_a_case_option_a_folder_contradicts(tmp_path):
    """Before, `--no-do-lower-case` on a folder whose tokenizer_config.json records lower-casing was ignored, exit 0."""
    source = Path(BUNDLED) / "sst2-distilled"
    result = CliRunner().invoke(cli, ["convert", str(source), str(tmp_path / "out"), "--no-do-lower-case"])
    assert result.exit_code == 2 and result.output.strip() == (
        f"error: --no-do-lower-case: {source} records do_lower_case true in tokenizer_config.json, which its model "
        f"was trained with; the option is for folders that do not record it"), result.output
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(cli, ["convert", str(source), str(tmp_path / "out"), "--do-lower-case"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("arguments, line", [
    (["finetune", "--task", "classification", "--train", "{sst2}", "--output", "{tmp}/run", "--learning-rate", "-1"],
     "error: --learning-rate must be positive"),
    (["finetune", "--task", "classification", "--train", "{sst2}", "--output", "{tmp}/run", "--warmup-ratio", "2"],
     "error: --warmup-ratio must be in [0, 1)"),
    (["finetune", "--task", "classification", "--train", "{sst2}", "--output", "{tmp}/run", "--epochs", "0"],
     "error: --epochs must be positive, got 0.0"),
    (["fill-mask", "--top-k", "100000", "Paris is the [MASK] of France."],
     "error: --top-k 100000 is larger than the vocabulary (30522 tokens)"),
    (["similarity", "--word", "bank", "a bank", "the bank", "--layer", "99"],
     "error: --layer: 99 is not a layer of this model (0 = embeddings .. 6, or negative from the last)"),
    (["embed", "--layers", "9", "a bank"],
     "error: --layers: 9 is not a layer of this model (0 = embeddings .. 6, or negative from the last)"),
])
def test_a_setting_is_named_by_the_commands_option(tmp_path, arguments, line):
    """The checks are the Python API's (learning_rate must be positive); the command line names its own option."""
    from conftest import fixture_data

    sst2 = fixture_data("sst2", "train.tsv")
    result = CliRunner().invoke(cli, [a.format(sst2=sst2, tmp=tmp_path) for a in arguments])
    assert result.exit_code == 2 and result.output.strip() == line, result.output


def test_tokenize_cuts_to_max_length_and_counts_the_cut_texts(caplog):
    import json

    result = CliRunner().invoke(cli, ["tokenize", "Let us start pretraining the model.", "short", "--max-length", "6"])
    assert result.exit_code == 0, result.output
    assert "1 of 2 inputs were longer than 6 tokens and were truncated" in caplog.text
    first, second = (json.loads(line) for line in result.stdout.strip().splitlines())
    assert first["tokens"] == ["[CLS]", "let", "us", "start", "pre", "[SEP]"]
    assert first["offsets"] == [[0, 0], [0, 3], [4, 6], [7, 12], [13, 16], [0, 0]]
    assert second["tokens"] == ["[CLS]", "short", "[SEP]"]
