"""transformers 5 checkpoint folders (tokenizer.json, no vocab.txt): the tokenizer read from
tokenizer.json and the tokenizer.json bertforge writes give the references' ids, the folder gives the
same outputs as with vocab.txt, a tokenizer.json that is not WordPiece is refused, and the CLI runs on
and converts such a folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bertforge import BertTokenizer
from bertforge.cli.main import cli
from bertforge.errors import CheckpointError
from format_helpers import TF_FIXTURE, _real_texts


@pytest.fixture(scope="module")
def transformers5_folder(tmp_path_factory, default_model_dir) -> Path:
    """What transformers 5 writes for `model.save_pretrained(d); tokenizer.save_pretrained(d)`:
    config.json, model.safetensors, tokenizer.json, tokenizer_config.json and no vocab.txt."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64)).eval()
    directory = tmp_path_factory.mktemp("transformers5")
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(str(default_model_dir)).save_pretrained(str(directory))
    assert (directory / "tokenizer.json").exists() and not (directory / "vocab.txt").exists()
    return directory


def test_tokenizer_from_tokenizer_json_matches_reference(transformers5_folder, default_model_dir):
    from transformers import AutoTokenizer

    ours = BertTokenizer.from_pretrained(transformers5_folder)
    with_vocab = BertTokenizer.from_pretrained(default_model_dir)
    reference = AutoTokenizer.from_pretrained(str(transformers5_folder))
    texts = _real_texts()
    pairs = list(zip(texts[::2], texts[1::2]))
    assert ours(texts)["input_ids"] == reference(texts)["input_ids"] == with_vocab(texts)["input_ids"]
    got, expected = ours(*zip(*pairs)), reference(*map(list, zip(*pairs)))
    assert got["input_ids"] == expected["input_ids"]
    assert got["token_type_ids"] == expected["token_type_ids"]
    assert ours.all_special_ids == with_vocab.all_special_ids


def test_transformers5_folder_gives_the_same_outputs_as_with_vocab_txt(transformers5_folder, default_model_dir,
                                                                      tmp_path):
    import bertforge

    with_vocab = tmp_path / "with-vocab"
    shutil.copytree(transformers5_folder, with_vocab)
    (with_vocab / "tokenizer.json").unlink()
    shutil.copy(default_model_dir / "vocab.txt", with_vocab / "vocab.txt")
    texts = ["Paris is the capital of [MASK].", "The man went to the [MASK] to buy milk."]
    got = bertforge.pipeline("fill-mask", model=transformers5_folder)(texts, top_k=3)
    expected = bertforge.pipeline("fill-mask", model=with_vocab)(texts, top_k=3)
    assert [[g["token"] for g in row] for row in got] == [[e["token"] for e in row] for row in expected]
    assert [g["score"] for row in got for g in row] == pytest.approx(
        [e["score"] for row in expected for e in row], abs=1e-7)


@pytest.mark.parametrize("lowercase", [True, False])
def test_saved_tokenizer_json_loads_in_the_references_to_the_same_ids(tmp_path, default_model_dir, lowercase):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    ours = BertTokenizer.from_pretrained(default_model_dir, do_lower_case=lowercase)
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "vocab.txt").exists()
    (tmp_path / "vocab.txt").unlink()  # the references must read tokenizer.json alone
    texts = _real_texts() + ["Héllo Wörld 東京 naïve CAFÉ", "\x00odd\u200bchars\tand  spaces"]
    expected = ours(texts)["input_ids"]
    assert [e.ids for e in Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode_batch(texts)] == expected
    assert AutoTokenizer.from_pretrained(str(tmp_path))(texts)["input_ids"] == expected
    assert BertTokenizer.from_pretrained(tmp_path)(texts)["input_ids"] == expected


def test_non_wordpiece_tokenizer_json_is_refused_naming_the_file(tmp_path):
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")])).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(CheckpointError, match=r"tokenizer\.json: model type is 'BPE', not WordPiece"):
        BertTokenizer.from_pretrained(tmp_path)
    result = CliRunner().invoke(cli, ["tokenize", "--model", str(tmp_path), "hello"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert str(tmp_path / "tokenizer.json") in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_runs_on_a_transformers5_folder(transformers5_folder):
    result = CliRunner().invoke(cli, ["fill-mask", "--model", str(transformers5_folder), "Paris is the [MASK]."])
    assert result.exit_code == 0, result.output


def test_convert_a_transformers5_folder_and_a_training_prefix(transformers5_folder, tmp_path):
    runner = CliRunner()
    for source, name in ((transformers5_folder, "t5"), (TF_FIXTURE / "squad" / "model.ckpt-88", "squad")):
        result = runner.invoke(cli, ["convert", str(source), str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    converted = BertTokenizer.from_pretrained(tmp_path / "t5")
    assert converted.vocab == BertTokenizer.from_pretrained(transformers5_folder).vocab
    result = runner.invoke(cli, ["fill-mask", "--model", str(TF_FIXTURE / "google"), "paris is the [MASK] of france"])
    assert result.exit_code == 0, result.output
