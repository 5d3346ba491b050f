"""The model's configuration, loading and saving: BertConfig's keys and sizes, from_pretrained's keywords and
errors, save_pretrained's targets (as transformers takes them, each mistake named in one line)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from bertforge import BertTokenizer
from bertforge.errors import CheckpointError, ConfigError, InputError
from bertforge.model import BertConfig, BertModel, BertForSequenceClassification
from bertforge.paths import PRETRAINED_DIR


def test_named_sizes():
    tiny = BertConfig.from_size("tiny")
    assert (tiny.num_hidden_layers, tiny.hidden_size, tiny.num_attention_heads, tiny.intermediate_size) == (2, 128, 2, 512)
    base = BertConfig.from_size("base")
    model = BertModel(base)
    assert 109_000_000 < sum(p.numel() for p in model.parameters()) < 110_000_000  # "110M parameters"
    grid = BertConfig.from_size("L6-H512")
    assert (grid.num_hidden_layers, grid.hidden_size, grid.num_attention_heads) == (6, 512, 8)
    with pytest.raises(ConfigError, match="grid"):
        BertConfig.from_size("L7-H300")


def test_config_round_trip_keeps_unknown_keys(default_model_dir, tmp_path):
    config = BertConfig.from_json_file(default_model_dir / "config.json")
    config.save(tmp_path, architecture="BertModel")
    saved = json.loads((tmp_path / "config.json").read_text())
    original = json.loads((default_model_dir / "config.json").read_text())
    assert saved["transformers_version"] == original["transformers_version"]
    assert BertConfig.from_json_file(tmp_path / "config.json") == config


def test_classifier_pooling_is_written_only_where_it_is_not_berts_and_checked(tmp_path):
    config = BertConfig.from_size("tiny")
    assert "classifier_pooling" not in config.to_dict()  # transformers' BERT configs have no such key
    mean = BertConfig.from_size("tiny", classifier_pooling="mean")
    mean.save(tmp_path)
    assert BertConfig.from_json_file(tmp_path / "config.json").classifier_pooling == "mean"
    (tmp_path / "config.json").write_text(json.dumps({**config.to_dict(), "classifier_pooling": "max"}))
    with pytest.raises(ConfigError, match=r"config.json: config key 'classifier_pooling' must be one of .*'max'"):
        BertConfig.from_json_file(tmp_path / "config.json")


def test_loading_errors(tmp_path, default_model_dir):
    with pytest.raises(CheckpointError, match="not found"):
        BertModel.from_pretrained(tmp_path / "missing")
    (tmp_path / "config.json").write_text('{"hidden_size": "large"}')
    with pytest.raises(ConfigError, match="hidden_size"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text((default_model_dir / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        BertModel.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"^from_pretrained\(hidden_size=768\): the weights of .* hold 384$"):
        BertModel.from_pretrained(default_model_dir, hidden_size=768)
    with pytest.raises(ConfigError, match=r"^from_pretrained\(hidden_dropout=...\): not a config key of this model; "
                                          r"did you mean 'hidden_dropout_prob'\?$"):
        BertModel.from_pretrained(default_model_dir, hidden_dropout=0.2)
    with pytest.raises(ConfigError, match=r"^from_pretrained\(dim=...\): not a config key of this model"):
        BertModel.from_pretrained(default_model_dir, dim=128)  # DistilBERT's spelling, which a BERT config ignores
    assert BertModel.from_pretrained(default_model_dir, hidden_dropout_prob=0.2).config.hidden_dropout_prob == 0.2
    three = BertForSequenceClassification.from_pretrained(default_model_dir, num_labels=3)  # transformers' keyword
    assert three.classifier.weight.shape[0] == 3 and three.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    with pytest.raises(ConfigError, match=r"num_labels=0\): give a positive whole number"):
        BertForSequenceClassification.from_pretrained(default_model_dir, num_labels=0)


def test_a_head_with_other_labels_is_refused_unless_a_fresh_head_is_asked_for(tmp_path):
    torch.manual_seed(0)
    three_way = BertForSequenceClassification(BertConfig.from_size("tiny", id2label={0: "a", 1: "b", 2: "c"}))
    three_way.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="classifier.*--new-head"):
        BertForSequenceClassification.from_pretrained(tmp_path, id2label={0: "no", 1: "yes"})
    two_way = BertForSequenceClassification.from_pretrained(tmp_path, fresh_head=True, id2label={0: "no", 1: "yes"})
    assert two_way.classifier.weight.shape == (2, three_way.config.hidden_size)
    assert sorted(two_way.missing_keys) == ["classifier.bias", "classifier.weight"]
    for name, tensor in three_way.bert.state_dict().items():
        assert torch.equal(two_way.bert.state_dict()[name], tensor), name


def test_sequence_longer_than_positions_is_a_clear_error():
    model = BertModel(BertConfig.from_size("tiny", max_position_embeddings=16))
    with pytest.raises(InputError, match="max_position_embeddings"):
        model(torch.ones(1, 17, dtype=torch.long))


def test_the_current_folder_loads_as_transformers_loads_it(monkeypatch):
    monkeypatch.chdir(PRETRAINED_DIR / "sst2-distilled")
    for path in (".", "./", Path(".")):
        assert BertForSequenceClassification.from_pretrained(path).config.num_labels == 2
    with pytest.raises(CheckpointError, match=r"^model path '' is empty: give a model folder"):
        BertForSequenceClassification.from_pretrained("")
    with pytest.raises(ConfigError, match=r"^/config.json: no such file$"):
        BertForSequenceClassification.from_pretrained("/")


def test_the_config_takes_num_labels_and_keeps_unknown_keys_as_transformers_does():
    import transformers

    ours, theirs = BertConfig(num_labels=3, foo=1), transformers.BertConfig(num_labels=3, foo=1)
    assert ours.id2label == theirs.id2label and ours.label2id == theirs.label2id and ours.foo == theirs.foo == 1
    ours.foo = 2
    assert ours.to_dict()["foo"] == 2 and "num_labels" not in ours.to_dict()
    assert BertForSequenceClassification(BertConfig.from_size("tiny", num_labels=5)).classifier.out_features == 5
    with pytest.raises(ConfigError, match=r"^BertConfig\(num_labels=0\): give a positive whole number$"):
        BertConfig(num_labels=0)


def test_id2label_and_label2id_are_taken_as_transformers_takes_them_and_a_pair_that_disagree_is_refused(tmp_path, caplog):
    """label2id was dropped without a word: beside an id2label it disagreed with, or alone (no labels at all)."""
    import transformers

    names = {0: "neg", 1: "neutral", 2: "pos"}
    for keys in ({"id2label": names}, {"id2label": names, "label2id": {v: k for k, v in names.items()}},
                 {"id2label": {str(k): v for k, v in names.items()}, "label2id": {v: str(k) for k, v in names.items()}}):
        ours, theirs = BertConfig(**keys), transformers.BertConfig(**keys)
        assert ours.num_labels == theirs.num_labels == 3 and ours.id2label == theirs.id2label == names, keys
        if theirs.label2id is not None:  # transformers 5 keeps none for id2label alone; ours is its inverse
            assert ours.label2id == {name: int(i) for name, i in theirs.label2id.items()}
        ours.save_pretrained(tmp_path)  # config.json holds both, and reads back in either library
        saved = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
        assert saved["id2label"] == {"0": "neg", "1": "neutral", "2": "pos"} and saved["label2id"] == ours.label2id
        theirs = transformers.BertConfig.from_pretrained(tmp_path)
        assert theirs.id2label == names and theirs.label2id == ours.label2id and theirs.num_labels == 3
        assert BertConfig.from_pretrained(tmp_path).label2id == ours.label2id
    disagree = "config keys 'id2label' and 'label2id' disagree: "
    with pytest.raises(ConfigError, match=rf"^{disagree}id2label names 0 'neg', label2id gives it 2; label2id must "
                                          r"be id2label's inverse \(or leave it out\)$"):
        BertConfig(id2label=names, label2id={"pos": 0, "neutral": 1, "neg": 2})
    with pytest.raises(ConfigError, match=rf"^{disagree}label2id has 'other', which id2label does not name"):
        BertConfig(id2label=names, label2id={**{v: k for k, v in names.items()}, "other": 3})
    with pytest.raises(ConfigError, match=r"^config key 'label2id' without 'id2label': give the labels as "
                                          r"id2label=\{0: 'neg', 1: 'pos'\}, of which label2id is the inverse "):
        BertConfig(label2id={"pos": 1, "neg": 0})
    with pytest.raises(ConfigError, match=r"^config key 'label2id' must map label names to numbers, got \['neg'\]"):
        BertConfig(id2label=names, label2id=["neg"])
    # a saved model whose label2id went stale still loads, as in transformers, with id2label's labels and a warning
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "neg", "1": "pos"}, "label2id": {"neg": 1}}))
    with caplog.at_level("WARNING", logger="bertforge.model.config"):
        assert BertConfig.from_pretrained(tmp_path).label2id == {"neg": 0, "pos": 1}
    assert re.match(rf"{re.escape(str(tmp_path / 'config.json'))}: {disagree}id2label names 0 'neg', label2id gives "
                    r"it 1; .* the labels are read from id2label", caplog.messages[-1])


@pytest.mark.parametrize("keywords,message", [
    ({"hidden_size": "x"}, r"hidden_size='x'\): must be int, got 'x'"),
    ({"hidden_dropout_prob": 1.5}, r"hidden_dropout_prob=1.5\): must be in \[0, 1\), got 1.5"),
    ({"hidden_act": "swish"}, r"hidden_act='swish'\): must be one of \(.*\), got 'swish'"),
    ({"problem_type": "bogus"}, r"problem_type='bogus'\): must be one of \(.*\) or None, got 'bogus'"),
    ({"id2label": ["a", "b"]}, r"id2label=\['a', 'b'\]\): must map label numbers to names"),
    ({"hidden_size": 40, "num_attention_heads": 5, "vocab_size": 0}, r"vocab_size=0\): must be positive, got 0"),
    ({"pad_token_id": 5, "vocab_size": 3}, r"pad_token_id=5, vocab_size=3\): config key 'pad_token_id' must be a "),
])
def test_a_bad_from_pretrained_keyword_is_named_as_the_callers_not_the_files(default_model_dir, keywords, message):
    with pytest.raises(ConfigError, match=rf"^from_pretrained\({message}"):
        BertForSequenceClassification.from_pretrained(default_model_dir, **keywords)
    with pytest.raises(ConfigError, match=rf"^from_pretrained\({message}"):
        BertConfig.from_pretrained(default_model_dir, **keywords)


def test_hub_keywords_change_nothing_for_models_and_tokenizers_alike_and_other_keywords_are_named(default_model_dir):
    hub = dict(cache_dir="/nowhere", revision="main", local_files_only=True, trust_remote_code=False, use_fast=True)
    assert BertModel.from_pretrained(default_model_dir, **hub).config == BertConfig.from_pretrained(default_model_dir)
    assert BertTokenizer.from_pretrained(default_model_dir, **hub).tokenize("Hello") == ["hello"]
    with pytest.raises(ConfigError, match=r"^from_pretrained\(lowercase=...\): not a setting of BertTokenizer; "
                                          r"did you mean 'do_lower_case'\?$"):
        BertTokenizer.from_pretrained(default_model_dir, lowercase=True)


def test_save_pretrained_refuses_a_place_it_cannot_write_naming_it_before_writing_anything(tmp_path):
    model, file = BertModel(BertConfig.from_size("tiny")), tmp_path / "file"
    file.write_text("kept")
    for target, message in ((file, f"save_pretrained {file}: exists and is not a directory"),
                            (file / "sub", f"save_pretrained {file}/sub: {file} is not a directory"),
                            (5, r"save_pretrained\(5\): give a folder path \(str or pathlib.Path\)"),
                            ("", r"save_pretrained\(''\): an empty path")):
        for save in (model.save_pretrained, model.config.save_pretrained):
            with pytest.raises(InputError, match=f"^{message}"):
                save(target)
    assert file.read_text() == "kept"
    with pytest.raises(InputError, match=r"^save_pretrained\(tokenizer='x'\): give the model's tokenizer"):
        model.save_pretrained(tmp_path / "out", tokenizer="x")
    assert not (tmp_path / "out").exists()


def test_an_int8_model_is_not_saved_as_if_it_were_float(tmp_path, default_model_dir):
    import bertforge

    with pytest.raises(CheckpointError, match=r"an int8 model is not saved .*save the float32 model it was made from"):
        bertforge.pipeline("sentence-embedding", dtype="int8").model.save_pretrained(tmp_path / "int8")
    assert not (tmp_path / "int8").exists()
    assert bertforge.pipeline("sentence-embedding", dtype="auto").dtype in ("bfloat16", "float32")  # what runs


@pytest.mark.parametrize("key, value, held", [("num_hidden_layers", 4, 2), ("hidden_size", 64, 32),
                                              ("intermediate_size", 128, 64), ("vocab_size", 70, 60),
                                              ("max_position_embeddings", 128, 512)])
def test_config_sizes_that_disagree_with_the_weights_name_the_key_and_both_values(tmp_path, key, value, held):
    """It said "the checkpoint lacks 16 encoder weights, e.g. [...]; is it a BERT checkpoint?" (more layers) or
    named a weight's shape (the other sizes), never the key to correct."""
    sizes = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    BertModel(BertConfig(**sizes)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(CheckpointError) as caught:
        BertModel.from_pretrained(tmp_path)
    assert str(caught.value) == f"{tmp_path / 'config.json'}: {key} is {value}, but the weights beside it hold " \
                                f"{held}; the config must describe these weights"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"^from_pretrained\({key}={value}\): the weights of {tmp_path} hold "
                                              rf"{held}$"):
        BertModel.from_pretrained(tmp_path, **{key: value})
