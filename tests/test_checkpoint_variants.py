"""Checkpoints that are legal in transformers but unusual: each loads to the same outputs as
transformers gives, or is refused in one line naming the key; never run as something else. And the
forward pass names the argument at fault when given something it cannot use."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import transformers

import bertforge
from bertforge import BertTokenizer
from bertforge.errors import CheckpointError, ConfigError, InputError
from bertforge.model import BertConfig, BertForMaskedLM, BertForPreTraining, BertModel, BertForSequenceClassification
from bertforge.model.heads import mean_pool

SMALL = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
DISTIL_SMALL = dict(vocab_size=60, dim=32, n_layers=2, n_heads=4, hidden_dim=64)


def saved_reference(tmp_path, name: str, config, **kwargs):
    """A transformers model with random weights and random biases (zeros would hide a bias read from
    the wrong place), saved to tmp_path/name."""
    torch.manual_seed(0)
    model = getattr(transformers, name)(config).eval()
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("bias"):
                parameter.normal_()
    model.save_pretrained(tmp_path / name, **kwargs)
    return model, tmp_path / name


def logits_of(output) -> torch.Tensor:
    return output.logits if getattr(output, "logits", None) is not None else output.prediction_logits


@pytest.mark.parametrize("name", ["BertForPreTraining", "BertForMaskedLM", "DistilBertForMaskedLM"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_masked_lm_decoder_tied_or_not_equals_transformers_both_ways(tmp_path, name, tied):
    config = (transformers.DistilBertConfig(**DISTIL_SMALL, tie_word_embeddings=tied) if name.startswith("Distil")
              else transformers.BertConfig(**SMALL, tie_word_embeddings=tied))
    reference, folder = saved_reference(tmp_path, name, config)
    ours = {"BertForPreTraining": BertForPreTraining}.get(name, BertForMaskedLM).from_pretrained(folder)
    ids = torch.randint(5, 60, (2, 9), generator=torch.Generator().manual_seed(1))
    expected = logits_of(reference(input_ids=ids))
    torch.testing.assert_close(logits_of(ours(ids)), expected, rtol=0, atol=1e-5)
    ours.save_pretrained(tmp_path / "ours")
    again = getattr(transformers, name).from_pretrained(tmp_path / "ours").eval()
    torch.testing.assert_close(logits_of(again(input_ids=ids)), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("key,value", [("is_decoder", True), ("add_cross_attention", True),
                                       ("position_embedding_type", "relative_key")])
def test_variants_the_encoder_does_not_compute_are_refused_naming_the_key(tmp_path, key, value):
    _, folder = saved_reference(tmp_path, "BertModel", transformers.BertConfig(**SMALL))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(ConfigError, match=rf"^{folder}/config.json: config key '{key}' is {json.dumps(value)}: this "
                                          rf"variant is not supported"):
        BertModel.from_pretrained(folder)


def test_saved_config_names_the_dtype_of_the_saved_weights(tmp_path):
    _, folder = saved_reference(tmp_path, "BertModel", transformers.BertConfig(**SMALL))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16", "torch_dtype": "bfloat16"}))
    model = BertModel.from_pretrained(folder)  # float32, as every load gives
    model.save_pretrained(tmp_path / "float32")
    saved = json.loads((tmp_path / "float32" / "config.json").read_text())
    assert saved["dtype"] == "float32" and "torch_dtype" not in saved
    assert transformers.BertModel.from_pretrained(tmp_path / "float32").dtype == torch.float32
    model.half().save_pretrained(tmp_path / "float16")
    assert json.loads((tmp_path / "float16" / "config.json").read_text())["dtype"] == "float16"


def test_num_labels_without_id2label_gives_that_many_labels_as_in_transformers(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**SMALL, "model_type": "bert", "num_labels": 3}))
    config = BertConfig.from_json_file(tmp_path / "config.json")
    assert config.num_labels == transformers.BertConfig.from_pretrained(tmp_path).num_labels == 3
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"} and "num_labels" not in config.to_dict()


@pytest.mark.parametrize("data,words", [
    ({"id2label": {"a": "x"}}, "config key 'id2label' must map label numbers to names"),
    ({"model_type": "gpt2", "pad_token_id": None}, "config key 'model_type' must be one of"),
    ({"tie_word_embeddings": "no"}, "config key 'tie_word_embeddings' must be true or false"),
    ({"hidden_dropout_prob": 1.5}, r"config key 'hidden_dropout_prob' must be in \[0, 1\), got 1.5$"),
    ({"attention_probs_dropout_prob": -0.1},
     r"config key 'attention_probs_dropout_prob' must be in \[0, 1\), got -0.1$"),
    ({"classifier_dropout": 1}, r"config key 'classifier_dropout' must be in \[0, 1\), got 1$"),
    ({"layer_norm_eps": -1}, "config key 'layer_norm_eps' must be positive, got -1.0$"),
    ({"num_attention_heads": 0}, "config key 'num_attention_heads' must be positive, got 0$"),  # not a modulo by 0
    ({"initializer_range": -0.02}, "config key 'initializer_range' must not be negative, got -0.02$"),
    ({"pad_token_id": 99999}, "config key 'pad_token_id' must be a token id below vocab_size 60, got 99999$"),
])
def test_config_mistakes_are_one_line_naming_the_key(tmp_path, data, words):
    (tmp_path / "config.json").write_text(json.dumps({**SMALL, **data}))
    with pytest.raises(ConfigError, match=f"^{tmp_path}/config.json: {words}"):
        BertConfig.from_json_file(tmp_path / "config.json")


def test_a_config_without_a_padding_token_builds_no_padding_row_as_in_transformers(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**SMALL, "model_type": "bert", "pad_token_id": None}))
    ours = BertModel(BertConfig.from_json_file(tmp_path / "config.json"))
    theirs = transformers.BertModel(transformers.BertConfig.from_pretrained(tmp_path))
    assert ours.embeddings.word.padding_idx is theirs.embeddings.word_embeddings.padding_idx is None


def test_checkpoint_whose_attention_parts_disagree_in_shape_is_one_line(tmp_path):
    from safetensors.torch import load_file, save_file

    _, folder = saved_reference(tmp_path, "BertModel", transformers.BertConfig(**SMALL))
    weights = load_file(folder / "model.safetensors")
    weights["encoder.layer.0.attention.self.query.weight"] = torch.zeros(32, 16)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"^layer 0: attention weight shapes disagree: query \(32, 16\), "
                                              r"key \(32, 32\), value \(32, 32\)$"):
        BertModel.from_pretrained(folder)


def test_unreadable_safetensors_is_one_line_when_judging_the_checkpoints_tasks(tmp_path):
    """What predict, finetune, evaluate, distill and serve ask of a folder before loading it, said as embed says it."""
    from bertforge.model.capabilities import checkpoint_tasks

    _, folder = saved_reference(tmp_path, "BertForSequenceClassification", transformers.BertConfig(**SMALL))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    message = rf"^{weights}: cannot read safetensors weights \(.*\)$"
    for judge in (checkpoint_tasks, BertModel.from_pretrained):
        with pytest.raises(CheckpointError, match=message):
            judge(folder)
    weights.unlink()
    weights.mkdir()
    for judge in (checkpoint_tasks, BertModel.from_pretrained):
        with pytest.raises(CheckpointError, match=rf"^{weights}: is a directory, not a file$"):
            judge(folder)


@pytest.mark.parametrize("content,message", [
    ([1, 2, 3], r"not a state dict of tensors \(it holds an object of type list\); save model.state_dict\(\)$"),
    ({"embeddings.word_embeddings.weight": 3}, r"not a state dict of tensors \('embeddings.word_embeddings.weight' "
                                                r"holds an object of type int\); save model.state_dict\(\)$"),
    (torch.nn.Linear(2, 2), r"not a state dict of tensors \(it holds a pickled torch.nn.modules.linear.Linear, not "
                            r"unpickled as that could run code\); save model.state_dict\(\)$"),
    (b"not a pickle", r"not a PyTorch weights file \(not a pickle of tensors\)$"),
], ids=["list", "not a tensor", "module", "garbage"])
def test_a_pytorch_model_bin_that_is_no_state_dict_is_one_line_naming_it(tmp_path, content, message):
    reference, folder = saved_reference(tmp_path, "BertModel", transformers.BertConfig(**SMALL))
    (folder / "model.safetensors").unlink()
    weights = folder / "pytorch_model.bin"
    torch.save(reference.state_dict(), weights)  # transformers' older layout still loads
    assert BertModel.from_pretrained(folder).missing_keys == []
    if isinstance(content, bytes):
        weights.write_bytes(content)
    else:
        torch.save(content, weights)
    with pytest.raises(CheckpointError, match=rf"^{weights}: {message}"):
        BertModel.from_pretrained(folder)


def test_a_config_json_that_is_a_directory_is_one_line_naming_it(tmp_path):
    from bertforge.model.checkpoint import model_folder

    _, folder = saved_reference(tmp_path, "BertModel", transformers.BertConfig(**SMALL))
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()
    with pytest.raises(ConfigError, match=rf"^{folder / 'config.json'}: is a directory, not a file$"):
        BertModel.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=rf"^{folder / 'config.json'}: is a directory, not a file$"):
        model_folder(folder)  # how predict, finetune and the pipelines find a model's folder


def test_encoder_weights_the_config_does_not_use_are_a_warning(tmp_path, caplog):
    _, folder = saved_reference(tmp_path, "BertModel", transformers.BertConfig(**SMALL))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
    with caplog.at_level(logging.WARNING, logger="bertforge.model.checkpoint"):
        BertModel.from_pretrained(folder)
    assert "encoder weights of the checkpoint are not used, e.g. bert.encoder.layers.1." in caplog.text
    assert "num_hidden_layers" in caplog.text


@pytest.fixture(scope="module")
def small_with_vocab(tmp_path_factory):
    """Small random models on the bert-base-uncased vocabulary, for the pipelines."""
    return tmp_path_factory.mktemp("small"), BertTokenizer.from_pretrained()


@pytest.mark.parametrize("problem_type,labels", [("regression", 1), ("multi_label_classification", 4),
                                                 ("single_label_classification", 3)])
def test_text_classification_scores_as_transformers_pipeline_does(small_with_vocab, problem_type, labels):
    root, tokenizer = small_with_vocab
    config = transformers.BertConfig(**{**SMALL, "vocab_size": 30522}, num_labels=labels, problem_type=problem_type)
    _, folder = saved_reference(root, "BertForSequenceClassification", config)
    tokenizer.save_pretrained(folder)
    reference = transformers.pipeline("text-classification", model=str(folder))
    text = "A gripping, funny film."
    ours = bertforge.pipeline("text-classification", model=folder)(text, top_k=None)
    expected = reference(text, top_k=None)
    assert [r["label"] for r in ours] == [r["label"] for r in expected]
    assert [r["score"] for r in ours] == pytest.approx([r["score"] for r in expected], abs=1e-5)


def test_pipelines_refuse_the_other_kind_of_classifier(small_with_vocab):
    root, tokenizer = small_with_vocab
    for name in ("BertForSequenceClassification", "BertForTokenClassification"):
        transformers_model = getattr(transformers, name)(transformers.BertConfig(**{**SMALL, "vocab_size": 30522}))
        transformers_model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    with pytest.raises(CheckpointError, match="token-classification needs a token-classification head.*it can do: "
                                              ".*text-classification$"):
        bertforge.pipeline("token-classification", model=root / "BertForSequenceClassification")
    with pytest.raises(CheckpointError, match="text-classification needs a sequence-classification head.*it can do: "
                                              ".*token-classification$"):
        bertforge.pipeline("text-classification", model=root / "BertForTokenClassification")


def test_question_answering_defaults_fit_a_model_with_a_short_window(small_with_vocab):
    root, tokenizer = small_with_vocab
    config = transformers.BertConfig(**{**SMALL, "vocab_size": 30522}, max_position_embeddings=64)
    _, folder = saved_reference(root, "BertForQuestionAnswering", config)
    tokenizer.save_pretrained(folder)
    qa = bertforge.pipeline("question-answering", model=folder)
    context = "the cat sat on the mat " * 30  # several windows of 64
    answer = qa(question="where is the cat", context=context)
    assert context[answer["start"]:answer["end"]] == answer["answer"]
    with pytest.raises(InputError, match="the context is empty"):
        qa(question="where is the cat", context="\u200b\x00 ")  # nothing BERT keeps


def test_fill_mask_ranks_only_tokens_the_vocabulary_spells(small_with_vocab):
    root, tokenizer = small_with_vocab
    config = transformers.BertConfig(**{**SMALL, "vocab_size": 30528})  # rounded up past vocab.txt's 30,522
    model, folder = saved_reference(root, "BertForMaskedLM", config)
    with torch.no_grad():
        model.cls.predictions.bias[30522:] = 100.0  # the padding rows would win every mask
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    candidates = bertforge.pipeline("fill-mask", model=folder)("the [MASK] sat.", top_k=3)
    assert len(candidates) == 3 and all(c["token"] < 30522 for c in candidates)


@pytest.mark.parametrize("call,words", [
    (lambda m: m(torch.tensor([[1, 60, 2]])), r"^input_ids holds 60, outside the model's 0..59$"),
    (lambda m: m(torch.tensor([[1, -1, 2]])), r"^input_ids holds -1, outside the model's 0..59$"),
    (lambda m: m(torch.tensor([[1, 2]]), token_type_ids=torch.tensor([[0, 2]])),
     r"^token_type_ids holds 2, outside the model's 0..1$"),
    (lambda m: m(torch.zeros(0, 5, dtype=torch.long)), r"^input_ids is empty: shape \(0, 5\)$"),
    (lambda m: m(torch.ones(1, 3)), r"^input_ids must hold integer token ids, got torch.float32$"),
    (lambda m: m([[1, 2, 3]]), r"^input_ids must be a \(batch, sequence\) tensor \(return_tensors='pt'\), got list$"),
    (lambda m: m(torch.ones(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 3)),
     r"^attention_mask must have input_ids' shape \(2, 4\), got \(2, 3\)$"),
    (lambda m: m(torch.ones(2, 4, dtype=torch.long), inputs_embeds=torch.zeros(2, 4, 32)),
     r"^give input_ids or inputs_embeds \(the token vectors\), not both$"),
    (lambda m: m(), r"^give input_ids, or inputs_embeds \(the token vectors\)$"),
    (lambda m: m(inputs_embeds=torch.zeros(2, 4, 5)),
     r"^inputs_embeds must be a floating \(batch, sequence, 32\) tensor, got \(2, 4, 5\) torch.float32$"),
    (lambda m: m(inputs_embeds=torch.zeros(2, 4, 32), token_type_ids=torch.zeros(2, 3, dtype=torch.long)),
     r"^token_type_ids must have inputs_embeds' shape \(2, 4\), got \(2, 3\)$"),
    (lambda m: m(torch.ones(2, 4, dtype=torch.long), position_ids=torch.arange(3)),
     r"^position_ids must be integers shaped \(sequence,\), \(1, sequence\) or \(2, 4\), got \(3,\) "
     r"torch.int64$"),
    (lambda m: m(torch.ones(1, 3, dtype=torch.long), position_ids=torch.tensor([0, 1, 512])),
     r"^position_ids holds 512, outside the model's 0..511$"),
])
def test_forward_names_the_argument_at_fault(call, words):
    model = BertModel(BertConfig(**SMALL)).eval()
    with pytest.raises(InputError, match=words):
        call(model)


def test_mean_of_a_row_with_no_real_token_is_zeros_not_nan():
    hidden = torch.randn(2, 3, 4)
    pooled = mean_pool(hidden, torch.tensor([[1, 1, 0], [0, 0, 0]]))
    torch.testing.assert_close(pooled[0], hidden[0, :2].mean(0))
    assert torch.equal(pooled[1], torch.zeros(4))
    classifier = BertForSequenceClassification(BertConfig(**SMALL, classifier_pooling="mean")).eval()
    assert not classifier(torch.ones(1, 3, dtype=torch.long), attention_mask=torch.zeros(1, 3)).logits.isnan().any()


def test_from_pretrained_takes_transformers_dtype_keyword(tmp_path):
    """Code ported from transformers passes dtype= (or torch_dtype=): it was refused as an unknown config key."""
    model = BertModel(BertConfig(**SMALL))
    model.half().save_pretrained(tmp_path / "half")
    assert BertModel.from_pretrained(tmp_path / "half").dtype == torch.float32  # bertforge's own default
    assert BertModel.from_pretrained(tmp_path / "half", dtype=torch.bfloat16).dtype == torch.bfloat16
    assert BertModel.from_pretrained(tmp_path / "half", torch_dtype="float32").dtype == torch.float32
    assert BertModel.from_pretrained(tmp_path / "half", dtype="auto").dtype == torch.float16  # as saved
    assert transformers.BertModel.from_pretrained(tmp_path / "half", dtype="auto").dtype == torch.float16
    with pytest.raises(ConfigError, match=r"^from_pretrained\(dtype=...\): give torch.float32, torch.bfloat16"):
        BertModel.from_pretrained(tmp_path / "half", dtype=torch.int8)


def test_pipelines_and_convert_take_a_checkpoint_as_from_pretrained_does(default_model_dir, tmp_path):
    """A file of the checkpoint names its folder, as in from_pretrained; a training run's folder names its model."""
    from click.testing import CliRunner

    from bertforge.cli.main import cli

    texts = ["A man is playing a guitar."]
    by_file = bertforge.pipeline("sentence-embedding", model=default_model_dir / "config.json")
    assert by_file.model_path == default_model_dir
    assert (by_file(texts) == bertforge.pipeline("sentence-embedding", model=default_model_dir)(texts)).all()
    run = tmp_path / "run"
    BertModel(BertConfig(**SMALL)).save_pretrained(run / "final")
    (run / "train_log.csv").write_text("step,loss\n")
    result = CliRunner().invoke(cli, ["convert", str(run), str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.strip() == \
        f"error: {run}: a training run's folder, with no model of its own; its final model is {run / 'final'}: use that"


def test_a_model_that_is_not_a_path_is_refused_naming_what_it_got():
    """Before, from_pretrained(123) and pipeline(model=123) ended in pathlib's TypeError."""
    for load in (BertModel.from_pretrained, BertTokenizer.from_pretrained,
                 lambda model: bertforge.pipeline("feature-extraction", model=model)):
        with pytest.raises(CheckpointError, match=r"a model is given as a folder path .*got int 123"):
            load(123)


@pytest.mark.parametrize("num_labels, problem_type, labels", [
    (1, None, torch.tensor([0.5, -1.0, 2.0])),                          # regression: mean squared error
    (3, None, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),  # multi-hot: binary CE
    (3, None, torch.tensor([2, 0, 1])),                                  # class ids: cross-entropy
    (3, "regression", torch.tensor([[0.1, 0.2, 0.3]] * 3)),
], ids=["regression", "multi-label", "single-label", "regression-set"])
def test_sequence_classification_loss_follows_transformers_problem_type_rule(tmp_path, num_labels, problem_type,
                                                                             labels):
    """Before, every label was read by cross-entropy: a multi-hot label gave a soft-target loss (1.38 where
    transformers gives 0.70) and a regression model raised."""
    config = transformers.BertConfig(**SMALL, num_labels=num_labels, problem_type=problem_type)
    reference, folder = saved_reference(tmp_path, "BertForSequenceClassification", config)
    ids = torch.randint(5, 60, (3, 7), generator=torch.Generator().manual_seed(1))
    ours = BertForSequenceClassification.from_pretrained(folder).eval()
    torch.testing.assert_close(ours(ids, labels=labels).loss, reference(input_ids=ids, labels=labels).loss,
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["BertForSequenceClassification", "BertForTokenClassification"])
def test_classifier_dropout_is_read_as_transformers_reads_it(tmp_path, name):
    """Before, transformers' classifier_dropout key was ignored: the head took hidden_dropout_prob."""
    _, folder = saved_reference(tmp_path, name, transformers.BertConfig(**SMALL, classifier_dropout=0.7))
    ours = getattr(bertforge.model, name).from_pretrained(folder)
    assert ours.dropout.p == getattr(transformers, name).from_pretrained(folder).dropout.p == 0.7
    _, plain = saved_reference(tmp_path / "plain", name, transformers.BertConfig(**SMALL))
    assert getattr(bertforge.model, name).from_pretrained(plain).dropout.p == 0.1


def test_outputs_index_as_transformers_tuples_do(tmp_path):
    """A ported script's out[0], out["logits"], loss, logits = out[:2] and to_tuple(), in transformers' field order;
    QA's start_logits / end_logits; and QA positions outside the sequence clamped and ignored as transformers does."""
    ids = torch.randint(5, 60, (2, 7), generator=torch.Generator().manual_seed(1))
    for name, labels in (("BertForSequenceClassification", {"labels": torch.tensor([0, 2])}),
                         ("BertForQuestionAnswering", {"start_positions": torch.tensor([1, 20]),
                                                       "end_positions": torch.tensor([[3], [-1]])}),
                         ("BertForPreTraining", {"labels": ids, "next_sentence_label": torch.tensor([0, 1])}),
                         ("BertModel", {})):
        config = transformers.BertConfig(**SMALL, num_labels=3 if name == "BertForSequenceClassification" else 2)
        reference, folder = saved_reference(tmp_path, name, config)
        ours = getattr(bertforge.model, name).from_pretrained(folder).eval()
        output, theirs = ours(ids, **labels), reference(input_ids=ids, **labels, return_dict=False)
        mine = output.to_tuple()
        assert len(output) == len(mine) == len(theirs) and list(output) == output.keys(), name
        if name == "BertForPreTraining":  # with labels ours keeps only the labelled rows' predictions
            mine, theirs = (output[0], output[2]), (theirs[0], theirs[2])
        for a, b in zip(mine, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)
        if labels:
            loss, _ = ours(ids, **labels)[:2]
            torch.testing.assert_close(loss, theirs[0], rtol=0, atol=1e-5)
    with pytest.raises(KeyError, match="loss"):
        ours(ids)["loss"]
    for name, labels in (("BertForMaskedLM", {}), ("BertForNextSentencePrediction", {"labels": torch.tensor([0, 1])})):
        reference, folder = saved_reference(tmp_path, name, transformers.BertConfig(**SMALL))
        mine, theirs = getattr(bertforge.model, name).from_pretrained(folder)(ids, **labels), \
            reference(input_ids=ids, **labels)
        torch.testing.assert_close(mine.logits, theirs.logits, rtol=0, atol=1e-5)
        if labels:
            torch.testing.assert_close(mine.loss, theirs.loss, rtol=0, atol=1e-5)


def test_problem_type_and_label2id_as_transformers_code_sets_them(tmp_path):
    """Before, config.problem_type set after loading was ignored (and from_pretrained refused it and label2id)."""
    reference, folder = saved_reference(tmp_path, "BertForSequenceClassification",
                                        transformers.BertConfig(**SMALL, num_labels=3))
    ids, targets = torch.randint(5, 60, (2, 7), generator=torch.Generator().manual_seed(1)), torch.rand(2, 3)
    ours = BertForSequenceClassification.from_pretrained(folder).eval()
    ours.config.problem_type = reference.config.problem_type = "regression"
    torch.testing.assert_close(ours(ids, labels=targets).loss, reference(input_ids=ids, labels=targets).loss,
                               rtol=0, atol=1e-5)
    labels = {0: "neg", 1: "neu", 2: "pos"}
    loaded = BertForSequenceClassification.from_pretrained(folder, id2label=labels, problem_type="regression",
                                                           label2id={v: k for k, v in labels.items()})
    assert loaded.config.problem_type == "regression" and loaded.config.id2label == labels
    with pytest.raises(ConfigError, match=r"label2id=...\) must be the inverse of id2label"):
        BertForSequenceClassification.from_pretrained(folder, id2label=labels, label2id={"neg": 1})
    with pytest.raises(ConfigError, match="config key 'problem_type' must be one of"):
        ours.config.problem_type = "ranking"
