"""Shared fixtures: the data (the small copies in tests/fixtures/data, the full files beside the
repo), the default checkpoint, reference tokenizers and a small randomly initialised transformers
checkpoint with pre-training heads; and the fixtures that the files testing one command share:
`bertforge distill`'s tiny teachers and slices of SST-2, CoNLL and SQuAD (tests/test_distill*.py, whose
helpers are in distill_helpers.py), pre-training's corpus and prepared shards (tests/test_pretraining*.py).

Tests that need the full ../shared/data call `require_data`: it skips where the data is absent,
fails under CI=true, and the run ends with one line saying how many tests needed it. Under CI=true
every skip is a failure: CI has the data, Chromium and the test dependencies, so a skip there
can only hide a broken setup."""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import os
import sys
from pathlib import Path

import pytest

# The helper modules' asserts report as a test's own do (pytest rewrites only test modules by itself).
pytest.register_assert_rewrite("distill_helpers", "server_fixtures", "server_helpers", "training_helpers")

REPO = Path(__file__).resolve().parents[1]
# BERTFORGE_DATA points elsewhere (or nowhere, to see what a fresh clone runs).
DATA = Path(os.environ.get("BERTFORGE_DATA") or REPO.parent / "shared" / "data").resolve()
FIXTURE_DATA = REPO / "tests" / "fixtures" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# What asked for the full data: test node ids, and the code of the functions on the stack (to
# count every test of a cached fixture that did, not only the first).
_needs_data_ids: set[str] = set()
_needs_data_code: set = set()


def require_data(*parts: str) -> Path:
    """A file under ../shared/data: skipped where absent, a failure where CI=true."""
    _record_data_need()
    path = DATA.joinpath(*parts)
    if not path.exists():
        if IN_CI:
            pytest.fail(f"CI=true but the real data is not at {path}", pytrace=False)
        pytest.skip(f"real data not found at {path}")
    return path


def _record_data_need() -> None:
    current = os.environ.get("PYTEST_CURRENT_TEST")
    if current:
        _needs_data_ids.add(current.rsplit(" (", 1)[0])
    frame = sys._getframe(2)
    while frame is not None:
        _needs_data_code.add(frame.f_code)
        frame = frame.f_back


def fixture_data(*parts: str) -> Path:
    """A file of the small copy of the data in tests/fixtures/data (same layout as ../shared/data)."""
    path = FIXTURE_DATA.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"no test fixture {path}: see tests/fixtures/data/README.md")
    return path


def data_file(*parts: str, full: bool) -> Path:
    """The full file (`require_data`) or its fixture copy: for tests that run on both."""
    return require_data(*parts) if full else fixture_data(*parts)


def uncased_vocab() -> Path:
    """bert-base-uncased's vocab.txt: the bundled default model's, the same bytes as ../shared/data/vocab's."""
    from bertforge.model import default_model_path

    return default_model_path() / "vocab.txt"


# Each fixture is a prefix of the full file (tests/fixtures/make_data.py), so these helpers read
# the fixture whenever it holds the rows asked for: the same rows either way, on every machine.

@functools.cache
def _fixture_gutenberg_lines() -> tuple[str, ...]:
    with gzip.open(fixture_data("corpus", "gutenberg_train.jsonl.gz"), "rt", encoding="utf-8") as f:
        return tuple(line for record in f for line in json.loads(record)["text"].splitlines() if line.strip())


def fixture_gutenberg_lines() -> list[str]:
    """Every non-empty line of the Gutenberg fixture (three books)."""
    return list(_fixture_gutenberg_lines())


def gutenberg_lines(limit: int, skip: int = 0, full: bool = False) -> list[str]:
    """Non-empty lines `skip` to `skip + limit` of the Gutenberg corpus: from the fixture when it
    holds them, else from the full corpus; `full=True` always the full corpus."""
    if not full and skip + limit <= len(_fixture_gutenberg_lines()):
        return list(_fixture_gutenberg_lines()[skip:skip + limit])
    with gzip.open(require_data("corpus", "gutenberg_train.jsonl.gz"), "rt", encoding="utf-8") as f:
        lines = (line for record in f for line in json.loads(record)["text"].splitlines() if line.strip())
        return list(itertools.islice(lines, skip, skip + limit))


def sst2_sentences(limit: int | None = None, split: str = "train", full: bool = False) -> list[str]:
    """The first `limit` SST-2 sentences (all of the full file with None): from the fixture when it
    holds them."""
    fixture = fixture_data("sst2", f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
    fits = limit is not None and limit <= len(fixture) and not full
    rows = fixture if fits else require_data("sst2", f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [row.split("\t")[0] for row in rows[:limit]]


# The vocabulary tests' slices of the Gutenberg fixture (three books), so that they run the same everywhere: the
# lines the vocabularies are trained on, and the lines after them to check on.
TRAIN_LINES = 4_000  # about 230 kB
CHECK_LINES = 1_900


@pytest.fixture(scope="module")
def train_lines() -> list[str]:
    return gutenberg_lines(TRAIN_LINES)


@pytest.fixture(scope="module")
def check_lines() -> list[str]:
    """Lines the vocabularies were not trained on."""
    return gutenberg_lines(CHECK_LINES, skip=TRAIN_LINES)


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from bertforge.model import default_model_path

    return default_model_path()


def _reference_tokenizer_dir(tmp_path_factory, default_model_dir: Path, lowercase: bool) -> Path:
    # The bundled model's vocab.txt is bert-base-uncased's (the same bytes as ../shared/data/vocab).
    directory = tmp_path_factory.mktemp("uncased" if lowercase else "cased")
    (directory / "vocab.txt").write_bytes((default_model_dir / "vocab.txt").read_bytes())
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": lowercase, "tokenizer_class": "BertTokenizer", "model_max_length": 512}))
    return directory


@pytest.fixture(scope="session")
def uncased_dir(tmp_path_factory, default_model_dir) -> Path:
    return _reference_tokenizer_dir(tmp_path_factory, default_model_dir, lowercase=True)


@pytest.fixture(scope="session")
def cased_dir(tmp_path_factory, default_model_dir) -> Path:
    return _reference_tokenizer_dir(tmp_path_factory, default_model_dir, lowercase=False)


# Known encodings with the bert-base-uncased vocabulary, from its vocab.txt line numbers: `i` 1045,
# `love` 2293, `paris` 3000. The vocabulary has no capitalised words, so a tokenizer that keeps the
# case maps `I` and `Paris` to [UNK] (100).
KNOWN_ENCODINGS = {
    True: {"I love Paris": [101, 1045, 2293, 3000, 102]},
    False: {"I love Paris": [101, 100, 2293, 100, 102], "i love paris": [101, 1045, 2293, 3000, 102]},
}


def check_reference(reference, lowercase: bool) -> None:
    """Fail unless `reference` encodes the known cases: a reference that maps every word to [UNK]
    (transformers 5 built with `vocab_file=`), or that ignores the casing asked for, would make
    every parity test pass or fail for the wrong reason."""
    for text, ids in KNOWN_ENCODINGS[lowercase].items():
        got = reference(text)["input_ids"]
        assert got == ids, f"reference tokenizer (lowercase={lowercase}) gives {got} for {text!r}, not {ids}"


def reference_tokenizer(directory: Path):
    """transformers' fast tokenizer, built with from_pretrained and checked on known cases first."""
    from transformers import BertTokenizerFast

    reference = BertTokenizerFast.from_pretrained(str(directory))
    lowercase = json.loads((directory / "tokenizer_config.json").read_text())["do_lower_case"]
    check_reference(reference, lowercase)
    return reference


@pytest.fixture(scope="session")
def tiny_pretraining_checkpoint(tmp_path_factory, default_model_dir) -> Path:
    """A randomly initialised transformers BertForPreTraining (tiny size, bert-base-uncased
    vocabulary), saved by transformers: a checkpoint with MLM and NSP heads for pipelines."""
    import shutil

    import torch
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512)
    model = BertForPreTraining(config).eval()
    directory = tmp_path_factory.mktemp("tiny-pretraining")
    model.save_pretrained(directory)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(default_model_dir / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """A tiny random encoder with the default model's vocabulary: fine-tuning starts from it."""
    import torch

    from bertforge.model import BertConfig, BertModel, default_model_path
    from bertforge.tokenization import BertTokenizer

    directory = tmp_path_factory.mktemp("tiny-encoder")
    torch.manual_seed(0)
    BertModel(BertConfig.from_size("tiny", vocab_size=30522)).save_pretrained(
        directory, BertTokenizer.from_pretrained(default_model_path()))
    return directory


# --- CI strictness and the data summary -----------------------------------------------------------

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where everything must run: {reason}"
    return report


_ITEMS = pytest.StashKey[list]()


def pytest_collection_finish(session) -> None:
    session.config.stash[_ITEMS] = list(session.items)


def _needs_data(item) -> bool:
    if item.nodeid in _needs_data_ids:
        return True
    # A fixture's result is cached: later tests that use it never call require_data themselves.
    fixture_defs = getattr(item, "_fixtureinfo", None)
    fixture_defs = fixture_defs.name2fixturedefs.values() if fixture_defs else ()
    return any(getattr(d.func, "__code__", None) in _needs_data_code for defs in fixture_defs for d in defs)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # A wrapper, so the line comes after the short summary of skips and failures, just above the counts.
    yield
    reported = {r.nodeid for reports in terminalreporter.stats.values() for r in reports
                if hasattr(r, "nodeid")}
    count = sum(1 for item in config.stash.get(_ITEMS, []) if item.nodeid in reported and _needs_data(item))
    where = "ran here" if DATA.is_dir() else f"{'failed (CI=true)' if IN_CI else 'skipped'}: not found at {DATA}"
    terminalreporter.write_line(f"{count} tests need ../shared/data: {where}")


@pytest.fixture(scope="session")
def tokenizer():
    """The default model's tokenizer (the bert-base-uncased vocabulary)."""
    from bertforge.tokenization import BertTokenizer

    return BertTokenizer.from_pretrained()


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A directory where nothing can be made: /sys as root (whom os.access lets write anywhere, as on a
    read-only mount), a read-only directory otherwise."""
    if os.geteuid() != 0:
        (tmp_path / "read-only").mkdir(mode=0o555)
        return tmp_path / "read-only"
    if not os.path.isdir("/sys"):
        pytest.skip("no /sys to stand for a read-only directory")
    return Path("/sys")


@pytest.fixture(scope="module")
def one_thread():
    """Training tests on the 2 shared cores: one torch thread per process avoids oversubscription."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def kill_at_first_checkpoint(command: list[str], run: Path, timeout: float) -> int:
    """Start a training command, SIGKILL it as soon as its first checkpoint is complete (its
    manifest written last), and return the step that checkpoint holds."""
    import signal
    import subprocess
    import time

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = run / "checkpoint" / "checkpoint.json"
    deadline = time.time() + timeout
    while not manifest.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return json.loads(manifest.read_text())["step"]


# --- bertforge distill: the teachers and slices of data tests/test_distill*.py share --------------

@pytest.fixture(scope="module")
def teachers(tmp_path_factory, tokenizer) -> dict[str, Path]:
    from bertforge.model import BertForPreTraining, BertForQuestionAnswering, BertForTokenClassification
    from bertforge.tasks import TokenClassificationTask, read_task_data
    from distill_helpers import _fine_tuned_sst2_teacher, _teacher

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


@pytest.fixture(scope="module")
def wide_teacher(tmp_path_factory, tokenizer) -> Path:
    """A 4-layer, 256-wide classifier (2 heads of 128): wide enough to cut an L2-H128 student from."""
    from bertforge.model import BertForSequenceClassification
    from distill_helpers import SST2_LABELS, _teacher

    return _teacher(tmp_path_factory.mktemp("wide") / "sst2", BertForSequenceClassification, tokenizer, hidden=256,
                    id2label=SST2_LABELS)


# --- pre-training: a corpus and its shards, which tests/test_pretraining*.py share ----------------

@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    """Six documents of real text: slices of the first Gutenberg books, as JSON Lines."""
    records = []
    with gzip.open(fixture_data("corpus", "gutenberg_train.jsonl.gz"), "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            records += [text[start:start + 25_000] for start in (20_000, 60_000, 100_000)]
            if len(records) >= 6:
                break
    path = tmp_path_factory.mktemp("corpus") / "books.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, corpus_file, tokenizer) -> Path:
    from bertforge.pretraining import PrepareOptions, prepare

    directory = tmp_path_factory.mktemp("data")
    prepare([corpus_file], directory, tokenizer, PrepareOptions(dupe_factor=5, shard_size=500), progress=False)
    return directory
