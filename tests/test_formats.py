"""Checkpoint formats users bring: transformers 5 folders (tokenizer.json, no vocab.txt), Google's
TensorFlow originals (read without TensorFlow) and DistilBERT, each against the reference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bertforge import BertTokenizer
from bertforge.cli.main import cli
from bertforge.errors import CheckpointError
from bertforge.model import BertForQuestionAnswering
from conftest import REPO, gutenberg_lines, sst2_sentences

TF_FIXTURE = REPO / "tests" / "fixtures" / "tf_checkpoint"


def _real_texts() -> list[str]:
    return gutenberg_lines(40) + sst2_sentences(40, split="validation")


# --- transformers 5 folders --------------------------------------------------------------------


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


# --- Google's TensorFlow checkpoints -------------------------------------------------------------

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


def test_convert_a_transformers5_folder_and_a_training_prefix(transformers5_folder, tmp_path):
    runner = CliRunner()
    for source, name in ((transformers5_folder, "t5"), (TF_FIXTURE / "squad" / "model.ckpt-88", "squad")):
        result = runner.invoke(cli, ["convert", str(source), str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    converted = BertTokenizer.from_pretrained(tmp_path / "t5")
    assert converted.vocab == BertTokenizer.from_pretrained(transformers5_folder).vocab
    result = runner.invoke(cli, ["fill-mask", "--model", str(TF_FIXTURE / "google"), "paris is the [MASK] of france"])
    assert result.exit_code == 0, result.output


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


# --- DistilBERT ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def distilbert_folder(tmp_path_factory, default_model_dir) -> Path:
    """A random-weight DistilBertForMaskedLM (bert-base-uncased vocabulary) and its tokenizer, as
    transformers 5 saves them (tokenizer.json, no vocab.txt)."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(4)
    model = DistilBertForMaskedLM(DistilBertConfig(vocab_size=30522, dim=64, n_layers=2, n_heads=4,
                                                   hidden_dim=128, max_position_embeddings=128)).eval()
    directory = tmp_path_factory.mktemp("distilbert")
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(str(default_model_dir)).save_pretrained(str(directory))
    return directory


def test_distilbert_hidden_states_match_transformers(distilbert_folder):
    import bertforge
    from transformers import DistilBertModel

    from bertforge.model import BertModel

    texts = sst2_sentences(16, split="validation")
    reference = DistilBertModel.from_pretrained(distilbert_folder).eval()
    ours = BertModel.from_pretrained(distilbert_folder)
    assert ours.config.is_distilbert and ours.pooler is None and ours.embeddings.token_type is None
    batch = BertTokenizer.from_pretrained(distilbert_folder)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        got = ours(**batch, output_hidden_states=True)
        expected = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             output_hidden_states=True)
    mask = batch["attention_mask"].bool()
    assert len(got.hidden_states) == len(expected.hidden_states) == 3
    for value, reference_value in zip(got.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(value[mask], reference_value[mask], atol=1e-5, rtol=1e-5)
    # the unpadded inference path of the pipelines, word by word
    vectors = bertforge.pipeline("feature-extraction", model=distilbert_folder)(texts[:4])
    for i, vector in enumerate(vectors):
        n = int(mask[i].sum())
        torch.testing.assert_close(torch.as_tensor(vector.vectors), expected.last_hidden_state[i, :n], atol=1e-5,
                                   rtol=1e-5)


def test_distilbert_fill_mask_matches_transformers(distilbert_folder):
    import bertforge
    from transformers import pipeline

    texts = [f"{text.split(' ', 1)[0]} [MASK] {text.split(' ', 1)[1]}" for text in
             sst2_sentences(30, split="validation") if " " in text.strip()][:8]
    got = bertforge.pipeline("fill-mask", model=distilbert_folder)(texts, top_k=5)
    expected = pipeline("fill-mask", model=str(distilbert_folder))(texts, top_k=5)
    for row, reference_row in zip(got, expected, strict=True):
        assert [g["token"] for g in row] == [e["token"] for e in reference_row]
        assert [g["score"] for g in row] == pytest.approx([e["score"] for e in reference_row], abs=1e-5)


@pytest.mark.parametrize("head", ["DistilBertForSequenceClassification", "DistilBertForQuestionAnswering",
                                  "DistilBertForTokenClassification"])
def test_distilbert_task_heads_load_and_save_in_transformers_layout(head, tmp_path):
    import transformers

    from bertforge import model as ours_models

    torch.manual_seed(1)
    config = transformers.DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                           max_position_embeddings=40, sinusoidal_pos_embds=True,
                                           num_labels=2 if head.endswith("QuestionAnswering") else 3)
    reference = getattr(transformers, head)(config).eval()
    reference.save_pretrained(tmp_path / "reference")
    ours = getattr(ours_models, head.replace("DistilBert", "Bert")).from_pretrained(tmp_path / "reference")
    assert ours.missing_keys == []
    ids = torch.randint(0, 120, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask)
        got = ours(input_ids=ids, attention_mask=mask).logits
    if head.endswith("QuestionAnswering"):
        expected_logits = torch.stack([expected.start_logits, expected.end_logits], -1)
    else:
        expected_logits = expected.logits
    torch.testing.assert_close(got, expected_logits, atol=1e-5, rtol=1e-5)
    ours.save_pretrained(tmp_path / "ours")
    again, info = getattr(transformers, head).from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not any(info.values()), info
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["architectures"] == [head]
    for name, tensor in reference.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_distilbert_sinusoidal_positions_match_transformers():
    import transformers

    from bertforge.model import BertConfig, BertModel

    config = transformers.DistilBertConfig(vocab_size=50, dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                                           max_position_embeddings=40, sinusoidal_pos_embds=True)
    reference = transformers.DistilBertModel(config).embeddings.position_embeddings.weight
    ours = BertModel(BertConfig.from_dict(config.to_dict())).embeddings.position
    torch.testing.assert_close(ours.weight, reference, atol=1e-6, rtol=0)
    assert not ours.weight.requires_grad


def test_cli_convert_and_fill_mask_on_a_distilbert_folder(distilbert_folder, tmp_path):
    from transformers import DistilBertForMaskedLM

    runner = CliRunner()
    result = runner.invoke(cli, ["convert", str(distilbert_folder), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    _, info = DistilBertForMaskedLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info.values()), info
    result = runner.invoke(cli, ["fill-mask", "--model", str(tmp_path / "out"), "Paris is the [MASK] of France."])
    assert result.exit_code == 0, result.output


def test_serve_loads_google_and_distilbert_folders_with_their_heads(distilbert_folder):
    from bertforge.pipelines import pipeline
    from bertforge.pipelines.loading import load_checkpoint
    from bertforge.server.models import load_served_model

    google = load_checkpoint(TF_FIXTURE / "google")
    assert {"fill-mask", "next-sentence"} <= set(google.tasks) and type(google.model).__name__ == "BertForPreTraining"
    distilbert = load_checkpoint(distilbert_folder)
    assert "fill-mask" in distilbert.tasks and type(distilbert.model).__name__ == "BertForMaskedLM"
    # a training run's prefix and a file of the folder, as the pipelines take them
    squad = load_checkpoint(TF_FIXTURE / "squad" / "model.ckpt-88")
    assert "question-answering" in squad.tasks and squad.path == TF_FIXTURE / "squad"
    answer = pipeline("question-answering", model=TF_FIXTURE / "squad" / "model.ckpt-88")(
        "Where is Paris?", "Paris lies on the Seine in northern France.")
    served = load_served_model("squad", TF_FIXTURE / "squad" / "bert_config.json")
    assert served.run_qa([("Where is Paris?", "Paris lies on the Seine in northern France.")])[0]["answer"] == \
        answer["answer"]
