"""The calls users port from transformers' PreTrainedModel and PretrainedConfig, compared with transformers: resizing
and tying embeddings, parameter counts, from_pretrained's keywords and configs, saving, load_state_dict, the
attributes tools read. The forward calls are in tests/test_model_api_forward.py."""

from __future__ import annotations

import pytest
import torch
import transformers
from model_api_helpers import SMALL, saved_reference

from bertforge.errors import ConfigError
from bertforge.model import BertConfig, BertForMaskedLM, BertForPreTraining, BertForSequenceClassification, BertModel


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("new_size", [75, 50])
def test_resize_token_embeddings_gives_transformers_logits_and_saves_for_it(tmp_path, tied, new_size):
    reference, folder = saved_reference(tmp_path, "BertForMaskedLM", tie_word_embeddings=tied)
    ours = BertForMaskedLM.from_pretrained(folder)
    torch.manual_seed(1)
    reference.resize_token_embeddings(new_size)
    returned = ours.resize_token_embeddings(new_size)
    assert returned is ours.get_input_embeddings() and returned.weight.shape == (new_size, 32)
    assert ours.config.vocab_size == new_size
    ids = torch.randint(0, min(new_size, 60), (2, 9), generator=torch.Generator().manual_seed(2))
    expected = reference(input_ids=ids).logits  # (2, 9, new_size)
    # transformers draws the new rows around the old rows' mean with a spread of 1e-9 of their covariance
    torch.testing.assert_close(ours(ids).logits, expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(ours(ids).logits[..., :min(new_size, 60)], expected[..., :min(new_size, 60)],
                               rtol=0, atol=1e-5)
    ours.save_pretrained(tmp_path / "ours")
    again = transformers.BertForMaskedLM.from_pretrained(tmp_path / "ours").eval()
    torch.testing.assert_close(again(input_ids=ids).logits, ours(ids).logits, rtol=0, atol=1e-5)
    assert torch.equal(BertForMaskedLM.from_pretrained(tmp_path / "ours")(ids).logits, ours(ids).logits)


def test_resize_keeps_the_tie_and_pads_to_a_multiple(tmp_path):
    model = BertForPreTraining(BertConfig(**SMALL))
    model.resize_token_embeddings(61, pad_to_multiple_of=16)
    assert model.config.vocab_size == 64 and model.mlm.bias.shape == (64,)
    assert model.mlm.word_embeddings is model.get_input_embeddings()
    old = model.get_input_embeddings().weight[:60].clone()
    model.resize_token_embeddings(70, mean_resizing=False)
    assert torch.equal(model.get_input_embeddings().weight[:60], old)
    assert torch.equal(model.mlm.bias[64:], torch.zeros(6))  # transformers' zero bias without mean resizing
    loss = model(torch.tensor([[2, 69, 3]]), labels=torch.tensor([[-100, 69, -100]])).loss
    loss.backward()  # the new rows are parameters that train
    assert model.get_input_embeddings().weight.grad[69].abs().sum() > 0


@pytest.mark.parametrize("value", [0, -3, 2.5, "64", True])
def test_resize_refuses_a_size_that_is_not_a_positive_whole_number(value):
    with pytest.raises(ConfigError, match=r"resize_token_embeddings\(new_num_tokens=.*positive whole number"):
        BertModel(BertConfig(**SMALL)).resize_token_embeddings(value)


def test_resize_takes_numpy_and_tensor_sizes_and_keeps_the_padding_token():
    import numpy as np

    model = BertModel(BertConfig(**SMALL, pad_token_id=50))
    assert model.resize_token_embeddings(np.int64(64)).num_embeddings == 64
    assert model.resize_token_embeddings(torch.tensor(70)).num_embeddings == 70
    with pytest.raises(ConfigError, match=r"resize_token_embeddings\(40\): the vocabulary would lose its padding "
                                          r"token \(pad_token_id 50\)"):
        model.resize_token_embeddings(40)
    assert model.config.vocab_size == 70


def test_num_parameters_counts_as_transformers_counts(tmp_path):
    for name, ours_class in (("BertForMaskedLM", BertForMaskedLM), ("BertForSequenceClassification",
                                                                   BertForSequenceClassification)):
        reference, folder = saved_reference(tmp_path, name)
        ours = ours_class.from_pretrained(folder)
        for model in (reference, ours):
            model.get_input_embeddings().weight.requires_grad_(False)
        for options in ({}, {"exclude_embeddings": True}, {"only_trainable": True}):
            assert ours.num_parameters(**options) == reference.num_parameters(**options), (name, options)


def test_config_from_pretrained_applies_keywords_as_the_model_does(tmp_path):
    _, folder = saved_reference(tmp_path, "BertForSequenceClassification")
    config = BertConfig.from_pretrained(folder, num_labels=3, hidden_dropout_prob=0.2)
    reference = transformers.BertConfig.from_pretrained(folder, num_labels=3, hidden_dropout_prob=0.2)
    assert (config.num_labels, config.id2label, config.hidden_dropout_prob, config.hidden_size) == \
           (reference.num_labels, reference.id2label, reference.hidden_dropout_prob, reference.hidden_size)
    assert BertConfig.from_pretrained(folder / "config.json").to_dict() == BertConfig.from_pretrained(folder).to_dict()
    assert BertConfig.from_pretrained().hidden_size == 384  # the bundled default model
    with pytest.raises(ConfigError, match=r"from_pretrained\(hidden_dropout=...\): not a config key.*"
                                          r"'hidden_dropout_prob'"):
        BertConfig.from_pretrained(folder, hidden_dropout=0.2)


def test_from_pretrained_takes_a_config_and_names_forward_keywords(tmp_path):
    _, folder = saved_reference(tmp_path, "BertModel")  # an encoder, given a head of three labels
    config = BertConfig.from_pretrained(folder, num_labels=3)
    model = BertForSequenceClassification.from_pretrained(folder, config=config, attn_implementation="eager")
    assert model.config is config and model.classifier.weight.shape == (3, 32)
    with pytest.raises(ConfigError, match=r"from_pretrained\(config=...\) takes a bertforge BertConfig, got dict"):
        BertModel.from_pretrained(folder, config={"hidden_size": 32})
    with pytest.raises(ConfigError, match=r"BertConfig.from_pretrained\(dtype=...\): the weights' type is the "
                                          r"model's to load"):
        BertConfig.from_pretrained(folder, dtype=torch.bfloat16)


def test_calls_of_ported_training_scripts(tmp_path):
    """What transformers' Trainer, Accelerate's loop and the course call on a model and its config."""
    reference, folder = saved_reference(tmp_path, "BertForSequenceClassification")
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=3, ignore_mismatched_sizes=True)
    assert model.classifier.weight.shape == (3, 32) and "classifier.weight" in model.missing_keys
    torch.testing.assert_close(model.bert.embeddings.word.weight, reference.bert.embeddings.word_embeddings.weight)
    assert model.config.get_text_config() is model.config
    model.save_pretrained(tmp_path / "not-main", is_main_process=False)
    assert not (tmp_path / "not-main").exists()
    model.save_pretrained(tmp_path / "main", save_function=torch.save, max_shard_size="5GB")
    assert BertForSequenceClassification.from_pretrained(tmp_path / "main").config.num_labels == 3
    with pytest.raises(ConfigError, match=r"save_pretrained\(safe_serialization=False\): bertforge writes "
                                          r"model.safetensors only"):
        model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    with pytest.raises(ConfigError, match=r"save_pretrained\(push_to_hub\): bertforge writes model.safetensors only"):
        model.save_pretrained(tmp_path / "hub", push_to_hub=True)


def test_output_embeddings_and_retying_as_transformers(tmp_path):
    reference, folder = saved_reference(tmp_path, "BertForMaskedLM")
    ours = BertForMaskedLM.from_pretrained(folder).eval()
    assert ours.get_output_embeddings().weight is ours.get_input_embeddings().weight
    assert BertForSequenceClassification(BertConfig(**SMALL)).get_output_embeddings() is None
    untied = BertForMaskedLM.from_pretrained(saved_reference(tmp_path, "BertForMaskedLM",
                                                             tie_word_embeddings=False)[1])
    assert untied.get_output_embeddings().weight is not untied.get_input_embeddings().weight
    torch.manual_seed(3)
    table = torch.nn.Embedding(60, 32, padding_idx=0)
    ids = torch.randint(5, 60, (2, 6), generator=torch.Generator().manual_seed(2))
    for model in (ours, reference):
        model.set_input_embeddings(table)
    # until tie_weights() the head still projects with the old table, in transformers too
    assert ours.get_output_embeddings().weight is not table.weight
    for model in (ours, reference):
        model.tie_weights()
    assert ours.get_output_embeddings().weight is table.weight
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, reference(input_ids=ids).logits, rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match=r"^set_input_embeddings: give an nn.Embedding of width 32 \(hidden_size\), "
                                          r"got Embedding\(60, 16\)$"):
        ours.set_input_embeddings(torch.nn.Embedding(60, 16))


@pytest.mark.parametrize("name", ["BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification",
                                  "BertForQuestionAnswering"])
def test_load_state_dict_takes_transformers_names(tmp_path, name):
    """`model.load_state_dict(torch.load("pytorch_model.bin"))` with transformers' weights, as a ported script
    loads them: the same outputs; our own names still load; a name neither knows is reported as torch reports it."""
    from bertforge.model import ARCHITECTURES

    reference, _ = saved_reference(tmp_path, name)
    ours = ARCHITECTURES[name](BertConfig(**SMALL)).eval()
    assert not ours.load_state_dict(reference.state_dict()).missing_keys
    ids = torch.randint(5, 60, (2, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for mine, theirs in zip(ours(ids, return_dict=False), reference(input_ids=ids, return_dict=False), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)
    copy = ARCHITECTURES[name](BertConfig(**SMALL))
    copy.load_state_dict(ours.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(copy.state_dict().values(), ours.state_dict().values()))
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "extra.weight"'):
        ours.load_state_dict({**reference.state_dict(), "extra.weight": torch.zeros(1)})


def test_config_and_model_attributes_that_tools_read_as_in_transformers(tmp_path):
    _, folder = saved_reference(tmp_path, "BertForSequenceClassification")
    ours = BertForSequenceClassification.from_pretrained(folder, device_map="cpu")
    theirs = transformers.BertForSequenceClassification.from_pretrained(folder, device_map="cpu")
    for name in ("is_decoder", "is_encoder_decoder", "add_cross_attention",
                 "output_attentions", "output_hidden_states", "use_return_dict", "classifier_dropout",
                 "architectures", "num_labels"):
        assert getattr(ours.config, name) == getattr(theirs.config, name), name
    for name in ("name_or_path", "main_input_name", "can_generate"):
        mine, expected = getattr(ours, name), getattr(theirs, name)
        assert (mine() if callable(mine) else mine) == (expected() if callable(expected) else expected), name
    # transformers counts two index buffers (position and token-type ids, 512 each) that bertforge does not hold
    assert ours.get_memory_footprint() == theirs.get_memory_footprint() - 2 * 512 * 8 == 4 * ours.num_parameters()
    ours.config.num_labels = theirs.config.num_labels = 4
    assert ours.config.id2label == theirs.config.id2label
    ours.config.update({"hidden_dropout_prob": 0.3})
    ours.config.save_pretrained(tmp_path / "config")
    loaded = transformers.BertConfig.from_pretrained(tmp_path / "config")
    assert loaded.hidden_dropout_prob == 0.3 and loaded.num_labels == 4
    assert BertConfig.from_json_file(tmp_path / "config" / "config.json").to_json_string() == \
        ours.config.to_json_string()
    with pytest.raises(ConfigError, match=r"^config: config key 'hidden_size' must be int, got 'x'$"):
        ours.config.update({"hidden_size": "x"})
    with pytest.raises(ConfigError, match=r"^config.is_decoder = True: this variant is not supported"):
        ours.config.is_decoder = True
    for count in (0, 2.5, True):
        with pytest.raises(ConfigError, match=rf"^config.num_labels = {count!r}: give a positive whole number$"):
            ours.config.num_labels = count
    with pytest.raises(ConfigError, match=r"^from_pretrained\(device_map=\{'bert': 0\}\): give one device "
                                          r'\("cpu", "cuda:0"\) or "auto"; bertforge does not split a model'):
        BertForSequenceClassification.from_pretrained(folder, device_map={"bert": 0})
    # the one device check of --device and pipeline(device=), named after the keyword given
    with pytest.raises(ConfigError, match=r"^from_pretrained\(device_map='gpu7'\): not a torch device \(use cpu, "
                                          r"cuda or cuda:N\)$"):
        BertForSequenceClassification.from_pretrained(folder, device_map="gpu7")
    with pytest.raises(ConfigError, match=r"^from_pretrained\(device_map='mps'\): bertforge runs on cpu, cuda or "
                                          r"cuda:N$"):
        BertForSequenceClassification.from_pretrained(folder, device_map="mps")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"^from_pretrained\(device_map=0\): CUDA is not available on this "
                                              r"machine$"):
            BertForSequenceClassification.from_pretrained(folder, device_map=0)
