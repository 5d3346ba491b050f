"""Google's TensorFlow checkpoints, read without TensorFlow: their arrays equal what TensorFlow was
given, their forward passes match transformers models given the same arrays, `bertforge convert` writes
folders transformers loads (float16 too), and a damaged checkpoint is one line naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bertforge import BertTokenizer
from bertforge.cli.main import cli
from bertforge.model import BertForQuestionAnswering
from format_helpers import TF_FIXTURE, _real_texts


TF_FOLDERS = {"google": "bert_model.ckpt", "squad": "model.ckpt-88", "classifier": "model.ckpt-12"}


def _expected_arrays(folder: str) -> dict:
    """The arrays make_fixture.py gave TensorFlow, saved beside the checkpoint by numpy."""
    import numpy as np

    with np.load(TF_FIXTURE / folder / "expected.npz", allow_pickle=False) as data:
        return {name.replace("|", "/"): data[name] for name in data.files}


@pytest.mark.parametrize("folder", sorted(TF_FOLDERS))
def test_tf_checkpoint_arrays_equal_what_tensorflow_was_given(folder):
    import numpy as np

    from bertforge.model.tf_checkpoint import read_tf_arrays

    arrays = read_tf_arrays(TF_FIXTURE / folder / TF_FOLDERS[folder])
    expected = _expected_arrays(folder)
    assert set(expected) <= set(arrays)
    for name, value in expected.items():
        assert arrays[name].dtype == value.dtype and np.array_equal(arrays[name], value), name
    assert arrays["global_step"].dtype == np.int64
    if folder == "google":  # two data shards, and the optimiser slots run_pretraining.py leaves
        assert len(list((TF_FIXTURE / folder).glob("bert_model.ckpt.data-*-of-00002"))) == 2
        assert int(arrays["global_step"]) == 1000
        assert np.all(arrays["bert/pooler/dense/kernel/adam_m"] == 0.5)


def _transformers_model_from_google_arrays(arrays: dict, model_class, config):
    """A transformers model given the Google arrays by a name map written here, apart from bertforge's."""
    state = {}
    for name, value in arrays.items():
        parts = name.split("/")
        if parts[0] == "cls" and parts[1] == "squad":
            key = "qa_outputs." + ("weight" if parts[2] == "output_weights" else "bias")
        elif parts[0] in ("output_weights", "output_bias"):
            key = "classifier." + ("weight" if parts[0] == "output_weights" else "bias")
        elif name == "cls/predictions/output_bias":
            key = "cls.predictions.bias"
        elif parts[:2] == ["cls", "seq_relationship"]:
            key = "cls.seq_relationship." + ("weight" if parts[2] == "output_weights" else "bias")
        else:
            leaf = {"kernel": "weight", "gamma": "weight", "beta": "bias", "bias": "bias"}.get(parts[-1])
            parts = [p.replace("layer_", "layer.") for p in parts[:-1]] + [leaf or f"{parts[-1]}.weight"]
            key = ".".join(parts)
            if parts[-1] == "weight" and name.endswith("/kernel"):
                value = value.T
        state[key] = torch.tensor(value)
    model = model_class(config).eval()
    if "cls.predictions.bias" in state:
        state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
        state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    # transformers' QA model has no pooler: that one array is left over
    assert not [u for u in unexpected if "pooler" not in u] and not missing, (missing, unexpected)
    return model


@pytest.mark.parametrize("folder", sorted(TF_FOLDERS))
def test_tf_checkpoint_forward_matches_transformers_on_the_same_arrays(folder):
    import transformers

    from bertforge import model as ours_models

    directory = TF_FIXTURE / folder
    config_data = json.loads((directory / "bert_config.json").read_text())
    kind = {"google": "BertForPreTraining", "squad": "BertForQuestionAnswering",
            "classifier": "BertForSequenceClassification"}[folder]
    reference_config = transformers.BertConfig(**config_data, num_labels=3 if folder == "classifier" else 2)
    reference = _transformers_model_from_google_arrays(_expected_arrays(folder), getattr(transformers, kind),
                                                       reference_config)
    ours = getattr(ours_models, kind).from_pretrained(directory)
    assert ours.missing_keys == []
    tokenizer = BertTokenizer.from_pretrained(directory)
    batch = tokenizer(_real_texts()[:8], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        got = ours(**batch)
        expected = reference(**batch)
    if folder == "google":
        pairs = [(got.prediction_logits, expected.prediction_logits),
                 (got.seq_relationship_logits, expected.seq_relationship_logits)]
    else:
        pairs = [(got.logits, expected.logits if folder == "classifier"
                  else torch.stack([expected.start_logits, expected.end_logits], -1))]
    for value, reference_value in pairs:
        torch.testing.assert_close(value, reference_value, atol=1e-5, rtol=1e-5)


def test_convert_writes_a_folder_transformers_loads(tmp_path):
    import transformers

    from bertforge.model import BertForPreTraining

    result = CliRunner().invoke(cli, ["convert", str(TF_FIXTURE / "google"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    reference, info = transformers.BertForPreTraining.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info.values()), info
    ours = BertForPreTraining.from_pretrained(TF_FIXTURE / "google")
    batch = BertTokenizer.from_pretrained(tmp_path / "out")(_real_texts()[:4], padding=True, return_tensors="pt")
    reference_tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert reference_tokenizer(_real_texts()[:4], padding=True)["input_ids"] == batch["input_ids"].tolist()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).prediction_logits, reference.eval()(**batch).prediction_logits,
                                   atol=1e-5, rtol=1e-5)


def test_convert_stores_float16_weights_transformers_reads_as_the_same_model(tmp_path):
    import transformers
    from safetensors.torch import load_file

    source = TF_FIXTURE / "squad" / "model.ckpt-88"
    result = CliRunner().invoke(cli, ["convert", str(source), str(tmp_path / "half"), "--dtype", "float16"])
    assert result.exit_code == 0, result.output
    assert {t.dtype for t in load_file(tmp_path / "half" / "model.safetensors").values()} == {torch.float16}
    reference = transformers.BertForQuestionAnswering.from_pretrained(tmp_path / "half", dtype=torch.float32).eval()
    ours_half = BertForQuestionAnswering.from_pretrained(tmp_path / "half")
    ours = BertForQuestionAnswering.from_pretrained(source)
    batch = BertTokenizer.from_pretrained(tmp_path / "half")(_real_texts()[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        half = reference(**batch).start_logits
        # the same float16 file read by both libraries: the same model
        torch.testing.assert_close(ours_half(**batch).logits[..., 0], half, atol=1e-5, rtol=0)
        # float16 storage rounds each weight by at most 2^-11 of itself: logits of about 3 moved by 1.9e-3 when
        # measured; rounding through bfloat16 (2^-8) would move them about 8 times as far
        torch.testing.assert_close(half, ours(**batch).logits[..., 0], atol=5e-3, rtol=0)


def _one_line_error(args: list[str], *fragments: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)


@pytest.fixture
def google_copy(tmp_path) -> Path:
    directory = tmp_path / "uncased_L-2_H-32_A-2"
    shutil.copytree(TF_FIXTURE / "google", directory)
    return directory


def _variable_offset(directory: Path, name: str) -> tuple[Path, int]:
    from bertforge.model.tf_checkpoint import read_index

    entry = read_index(directory / "bert_model.ckpt.index")[name]
    return directory / f"bert_model.ckpt.data-{entry['shard_id']:05d}-of-00002", entry["offset"]


def test_truncated_data_shard_is_one_line_naming_the_file(google_copy, tmp_path):
    shard, _ = _variable_offset(google_copy, "bert/encoder/layer_1/output/dense/kernel")
    shard.write_bytes(shard.read_bytes()[:-1000])
    _one_line_error(["convert", str(google_copy), str(tmp_path / "out")], str(shard), "truncated")
    assert not (tmp_path / "out").exists()


def test_wrong_crc_is_one_line_naming_the_file(google_copy, tmp_path):
    shard, offset = _variable_offset(google_copy, "bert/embeddings/word_embeddings")
    data = bytearray(shard.read_bytes())
    data[offset + 17] ^= 0x01
    shard.write_bytes(bytes(data))
    _one_line_error(["convert", str(google_copy), str(tmp_path / "out")], str(shard), "CRC mismatch",
                    "bert/embeddings/word_embeddings")


def test_corrupt_or_foreign_index_is_one_line_naming_the_file(google_copy, tmp_path):
    index = google_copy / "bert_model.ckpt.index"
    data = bytearray(index.read_bytes())
    data[40] ^= 0x01
    index.write_bytes(bytes(data))
    _one_line_error(["convert", str(google_copy), str(tmp_path / "out")], str(index), "CRC mismatch")
    index.write_bytes(b"PK\x03\x04 a zip file, say" * 10)
    _one_line_error(["convert", str(google_copy), str(tmp_path / "out")], str(index),
                    "not a TensorFlow checkpoint index")


def test_config_sizes_that_disagree_with_the_arrays_are_one_line_naming_the_file(google_copy, tmp_path):
    config_file = google_copy / "bert_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "intermediate_size": 128}))
    _one_line_error(["convert", str(google_copy), str(tmp_path / "out")], str(config_file),
                    f"intermediate_size is 128, but the weights beside it hold {config['intermediate_size']}")


def test_cased_google_folder_name_keeps_case(tmp_path):
    cased = tmp_path / "cased_L-2_H-32_A-2"
    shutil.copytree(TF_FIXTURE / "google", cased)
    result = CliRunner().invoke(cli, ["convert", str(cased), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert BertTokenizer.from_pretrained(tmp_path / "out").do_lower_case is False
