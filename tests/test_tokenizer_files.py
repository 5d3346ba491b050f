"""A tokenizer's folder as transformers reads and writes it: `save_pretrained` and `save_vocabulary`, and the
one-line errors for folders, files and `from_pretrained` keywords that cannot be used (naming the file, line or
keyword at fault)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertforge import BertTokenizer
from bertforge.errors import CheckpointError, ConfigError, InputError


@pytest.mark.parametrize("file_name", ["tokenizer.json", "tokenizer_config.json"])
def test_an_added_token_matched_as_written_but_not_special_is_refused_naming_it(uncased_dir, tmp_path, file_name):
    """transformers can add a token that is neither special nor normalised; bertforge matches an added token
    one way or the other, so such a folder is refused rather than read as something else."""
    import json

    tokenizer = BertTokenizer.from_pretrained(uncased_dir)
    tokenizer.add_tokens(["covid19"])
    tokenizer.save_pretrained(tmp_path)
    path = tmp_path / file_name
    data = json.loads(path.read_text())
    entries = data["added_tokens"] if file_name == "tokenizer.json" else data["added_tokens_decoder"].values()
    for entry in entries:
        if entry["content"] == "covid19":
            entry["normalized"] = False
    path.write_text(json.dumps(data))
    # each file is read where it is the one that says: tokenizer.json without vocab.txt (transformers 5's folder)
    (tmp_path / ("tokenizer.json" if file_name == "tokenizer_config.json" else "vocab.txt")).unlink()
    with pytest.raises(CheckpointError, match=rf"{path}: added token 'covid19' is neither special nor normalized"):
        BertTokenizer.from_pretrained(tmp_path)


def test_save_pretrained_returns_its_files_and_save_vocabulary_writes_vocab_txt(uncased_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = BertTokenizer.from_pretrained(uncased_dir)
    tokenizer.add_tokens(["covid19"])
    files = tokenizer.save_pretrained(tmp_path / "saved")
    assert files == tuple(str(tmp_path / "saved" / name) for name in ("tokenizer_config.json", "vocab.txt",
                                                                       "tokenizer.json"))
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == sorted(Path(f).name for f in files)
    for prefix, name in ((None, "vocab.txt"), ("mine", "mine-vocab.txt")):
        (written,) = tokenizer.save_vocabulary(tmp_path, filename_prefix=prefix)
        assert written == str(tmp_path / name)
        assert Path(written).read_text(encoding="utf-8").splitlines() == \
            sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get)
    assert AutoTokenizer.from_pretrained(tmp_path / "saved")("a covid19 case")["input_ids"] == \
        tokenizer("a covid19 case")["input_ids"]
    with pytest.raises(InputError, match=r"^save_vocabulary: .*missing is not a directory$"):
        tokenizer.save_vocabulary(tmp_path / "missing")


@pytest.mark.parametrize("config,message", [
    ('{"model_max_length": "512"}', r'model_max_length must be a whole number of at least 3 \(.*\), got "512"$'),
    ('{"model_max_length": 0}', r"model_max_length must be a whole number of at least 3 \(.*\), got 0$"),
    ("[]", "a JSON list, not a JSON object$"),
], ids=["string", "zero", "list"])
def test_a_tokenizer_config_that_cannot_be_used_is_one_line_naming_the_file_and_key(uncased_dir, tmp_path, config,
                                                                                      message):
    import shutil

    shutil.copy(uncased_dir / "vocab.txt", tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(config)
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / 'tokenizer_config.json'}: {message}"):
        BertTokenizer.from_pretrained(tmp_path)
    # transformers writes "no limit" as a huge number, integer or not: the default is kept
    (tmp_path / "tokenizer_config.json").write_text('{"model_max_length": 1e30}')
    assert BertTokenizer.from_pretrained(tmp_path).model_max_length == 512


@pytest.mark.parametrize("file_name", ["vocab.txt", "tokenizer_config.json", "tokenizer.json"])
def test_a_tokenizer_file_that_is_a_directory_is_one_line_naming_it(uncased_dir, tmp_path, file_name):
    BertTokenizer.from_pretrained(uncased_dir).save_pretrained(tmp_path)
    if file_name == "tokenizer.json":
        (tmp_path / "vocab.txt").unlink()  # transformers 5's folder: tokenizer.json is read only without vocab.txt
    (tmp_path / file_name).unlink()
    (tmp_path / file_name).mkdir()
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / file_name}: is a directory, not a file$"):
        BertTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("file_name, content, message", [
    ("tokenizer_config.json", b'{\n "do_lower_case": true,\n "x": "caf\xe9"\n}\n',
     ":3: not UTF-8 text (byte 0xe9 at byte 11 of the line); is it a text file? Save it as UTF-8"),
    ("vocab.txt", b"[PAD]\n[UNK]\ncaf\xe9\n", ":3: not UTF-8 text (byte 0xe9 at byte 4 of the line)"),
    ("vocab.txt", b"[PAD]\n[UNK]\nhello\n[CLS]\nhello\n", ":5: token 'hello' repeats line 3"),
], ids=["config-not-utf8", "vocab-not-utf8", "vocab-repeat"])
def test_a_settings_file_is_named_with_its_line_as_data_files_are(uncased_dir, tmp_path, file_name, content,
                                                                   message):
    """FILE:LINE, as `io.readers` names a data file's line: a settings file that was not UTF-8 said "(byte offset
    N)" and no line, vocab.txt's lines were "FILE, line N"."""
    import shutil

    shutil.copy(uncased_dir / "vocab.txt", tmp_path)
    (tmp_path / file_name).write_bytes(content)
    with pytest.raises(CheckpointError) as caught:
        BertTokenizer.from_pretrained(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / file_name}{message}"), caught.value


def test_a_vocab_txt_that_starts_with_a_byte_order_mark_is_refused_naming_its_first_line(uncased_dir, tmp_path):
    """transformers (and tokenizers) read the mark as part of the first token, '\\ufeff[PAD]', so no [PAD]: a
    tokenizer that dropped it would give other ids than theirs for the same folder."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(b"\xef\xbb\xbf" + (uncased_dir / "vocab.txt").read_bytes())
    with pytest.raises(CheckpointError, match=rf"^{vocab}:1: starts with a byte-order mark, .*; save it without one$"):
        BertTokenizer.from_pretrained(tmp_path)


def test_the_current_folder_loads_and_an_empty_path_is_refused(uncased_dir, monkeypatch):
    monkeypatch.chdir(uncased_dir)
    assert BertTokenizer.from_pretrained(".").tokenize("Hello") == ["hello"]
    with pytest.raises(CheckpointError, match=r"^model path '' is empty: give a model folder"):
        BertTokenizer.from_pretrained("")


@pytest.mark.parametrize("keywords,message", [
    ({"do_lower_case": "no"}, r"do_lower_case='no'\): must be True or False"),
    ({"additional_special_tokens": "[unused0]"}, r"additional_special_tokens='\[unused0\]'\): must be a list of str"),
    ({"max_input_chars_per_word": "x"}, r"max_input_chars_per_word='x'\): must be an int"),
])
def test_a_bad_from_pretrained_keyword_is_named_as_the_callers_not_the_files(uncased_dir, keywords, message):
    with pytest.raises(ConfigError, match=rf"^from_pretrained\({message}$"):
        BertTokenizer.from_pretrained(uncased_dir, **keywords)


def test_save_pretrained_refuses_a_place_it_cannot_write_naming_it(uncased_dir, tmp_path):
    tokenizer, file = BertTokenizer.from_pretrained(uncased_dir), tmp_path / "file"
    file.write_text("kept")
    for target, message in ((file, f"save_pretrained {file}: exists and is not a directory"),
                            (file / "sub", f"save_pretrained {file}/sub: {file} is not a directory"),
                            (5, r"save_pretrained\(5\): give a folder path")):
        with pytest.raises(InputError, match=f"^{message}"):
            tokenizer.save_pretrained(target)
    assert file.read_text() == "kept"


def test_a_file_of_the_model_folder_names_its_folder_and_a_short_length_is_refused_when_given(uncased_dir, tmp_path):
    """BertTokenizer.from_pretrained(DIR/config.json) read config.json as a vocabulary ("line 20: token '  },'
    repeats line 14"), where the models read the folder; model_max_length=0 was taken and failed at the first call."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(uncased_dir, folder)
    (folder / "config.json").write_text('{"model_type": "bert"}\n')
    expected = BertTokenizer.from_pretrained(folder)("I love Paris")["input_ids"]
    assert BertTokenizer.from_pretrained(folder / "config.json")("I love Paris")["input_ids"] == expected
    assert BertTokenizer.from_pretrained(folder / "vocab.txt")("I love Paris")["input_ids"] == expected
    with pytest.raises(ConfigError, match=r"^from_pretrained\(model_max_length=0\): must be at least 3"):
        BertTokenizer.from_pretrained(folder, model_max_length=0)


def test_a_text_file_that_cannot_be_a_vocabulary_is_refused_naming_its_line(tmp_path):
    """A README that even lists the special tokens loaded as a vocabulary and gave [UNK] for every word (one
    without them was refused for a repeated empty line). A token holds no whitespace: a line of words is refused;
    the vocabularies bertforge ships and Google's test checkpoints' still load, as does a token of whitespace alone
    or at an end, which the tokenizer never gives and which harms nothing."""
    import re

    import bertforge
    from bertforge.tokenization import load_vocab
    from conftest import REPO

    readme = tmp_path / "README.md"
    readme.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n# tiny-bert\n\nA model card.\n")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(readme))}:6: '# tiny-bert' holds whitespace, "
                                              r"which no token does: this is not a vocab.txt \(one WordPiece token"):
        BertTokenizer.from_pretrained(readme)
    vocabularies = [*(Path(bertforge.__file__).parent / "pretrained").glob("*/vocab.txt"),
                    *(REPO / "tests" / "fixtures" / "tf_checkpoint").glob("*/vocab.txt")]
    assert len(vocabularies) >= 8 and all(len(load_vocab(path)) > 80 for path in vocabularies)
    odd = tmp_path / "vocab.txt"
    odd.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n\u3000\nend \n hello\nhello\n", encoding="utf-8")
    assert BertTokenizer.from_pretrained(odd).tokenize("Hello end") == ["hello", "[UNK]"]


def test_a_vocabulary_with_its_unknown_token_last_reads_as_transformers_reads_it(tmp_path):
    """The special tokens at the end of vocab.txt were taken for added tokens, [UNK] among them, and WordPiece,
    which needs [UNK], refused the file: "the unknown token '[UNK]' is not in the vocabulary" (it is)."""
    from transformers import BertTokenizerFast

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("hello\nworld\n##s\n[PAD]\n[CLS]\n[SEP]\n[MASK]\n[UNK]\n")
    ours, reference = BertTokenizer.from_pretrained(vocab), BertTokenizerFast(str(vocab))
    for text in ("Hello worlds there", "[MASK] hello [UNK]"):
        assert ours(text)["input_ids"] == reference(text)["input_ids"], text
