"""The BERT model: parity with transformers on the real MiniLM checkpoint (within the bounds of
tolerances.py), checkpoint round trips in both directions, configuration and loading errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bertforge import BertTokenizer
from bertforge.errors import CheckpointError, ConfigError, InputError
from bertforge.model import (
    IGNORE_INDEX,
    BertConfig,
    BertModel,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from bertforge.paths import PRETRAINED_DIR
from conftest import sst2_sentences
from tolerances import ATTENTION, F32_EPS, HIDDEN_STATES, UNIT, rounding_bound


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def reference_encoder(default_model_dir):
    from transformers import BertModel as ReferenceBertModel

    # eager attention: the implementation that returns attention weights
    return ReferenceBertModel.from_pretrained(str(default_model_dir), attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def encoder(default_model_dir):
    return BertModel.from_pretrained(default_model_dir)


@pytest.mark.slow
@pytest.mark.parametrize("full", [False, True], ids=["fixture", "full"])
def test_parity_on_sst2(encoder, reference_encoder, full):
    """1,000 real sentences in padded batches (the fixture's, and the last 1,000 of the full
    train set where present): every output within float32 rounding of transformers."""
    tokenizer = BertTokenizer.from_pretrained()
    sentences = sst2_sentences(full=True)[-1000:] if full else sst2_sentences(1000)
    worst = {"last": 0.0, "pooler": 0.0, "hidden": 0.0, "attention": 0.0}
    with torch.inference_mode():
        for start in range(0, len(sentences), 50):
            batch = tokenizer(sentences[start:start + 50], padding=True, truncation=True, return_tensors="pt")
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
            ours = encoder(**inputs, output_hidden_states=True, output_attentions=True)
            theirs = reference_encoder(**inputs, output_hidden_states=True, output_attentions=True)
            real = batch["attention_mask"].bool()
            worst["last"] = max(worst["last"], max_diff(ours.last_hidden_state[real], theirs.last_hidden_state[real]))
            worst["pooler"] = max(worst["pooler"], max_diff(ours.pooler_output, theirs.pooler_output))
            assert len(ours.hidden_states) == len(theirs.hidden_states) == 7
            for a, b in zip(ours.hidden_states, theirs.hidden_states, strict=True):
                worst["hidden"] = max(worst["hidden"], max_diff(a[real], b[real]))
            assert len(ours.attentions) == len(theirs.attentions) == 6
            for a, b in zip(ours.attentions, theirs.attentions, strict=True):
                worst["attention"] = max(worst["attention"], max_diff(a, b))
    bounds = {"last": HIDDEN_STATES, "pooler": UNIT, "hidden": HIDDEN_STATES, "attention": ATTENTION}
    assert all(worst[name] < bounds[name] for name in worst), (worst, bounds)


def test_fused_attention_equals_explicit_softmax(encoder):
    """The SDPA path (used unless weights are asked for) and the explicit path agree, padding included."""
    tokenizer = BertTokenizer.from_pretrained()
    batch = tokenizer(["a short one", "a somewhat longer sentence with more words in it"], padding=True,
                      return_tensors="pt")
    with torch.inference_mode():
        fused = encoder(batch["input_ids"], batch["attention_mask"])
        explicit = encoder(batch["input_ids"], batch["attention_mask"], output_attentions=True)
    real = batch["attention_mask"].bool()
    assert max_diff(fused.last_hidden_state[real], explicit.last_hidden_state[real]) < HIDDEN_STATES


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "relu"])
def test_layer_without_gradients_equals_the_layer_with_them(hidden_act):
    """Without gradients the activation overwrites the intermediate product in place: same values,
    bit for bit, and the layer's input untouched."""
    from bertforge.model.bert import BertLayer

    torch.manual_seed(0)
    layer = BertLayer(BertConfig.from_size("mini", hidden_act=hidden_act)).eval()
    x = torch.randn(3, 7, 256)
    before = x.clone()
    with_gradients = layer(x)[0]
    with torch.inference_mode():
        without = layer(x)[0]
    assert torch.equal(with_gradients, without)
    assert torch.equal(x, before)


@pytest.fixture
def onednn_linear_on(monkeypatch):
    """The oneDNN route of `bertforge.model.linear` taken whatever the CPU (on Intel CPUs and CPUs
    without AVX-512 the model takes MKL's), so that these tests check it on every x86 machine."""
    import platform

    from bertforge.model import linear

    assert linear.ONEDNN_AVAILABLE == (platform.machine().lower() in ("x86_64", "amd64")), "x86 wheels have oneDNN"
    monkeypatch.setattr(linear, "ONEDNN_LINEAR", linear.ONEDNN_AVAILABLE)
    return linear.ONEDNN_AVAILABLE


@pytest.mark.parametrize("cpu_name, avx512, onednn", [
    ("Intel Xeon", True, False), ("Intel Core i7-1360P", False, False), ("AMD EPYC 9R45", True, True),
    ("AMD EPYC", False, False), ("", True, True), ("", False, False)])
def test_linear_takes_mkl_on_intel_cpus_and_cpus_without_avx512_and_onednn_on_the_others(
        monkeypatch, cpu_name, avx512, onednn):
    from bertforge.model import linear

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"cpu_name": cpu_name, "avx512_f": avx512})
    assert linear.mkl_is_fast() is not onednn


@pytest.mark.parametrize("rows", [(0,), (1,), (700,), (4, 9)], ids=["empty", "one row", "tokens", "padded batch"])
def test_linear_without_gradients_equals_f_linear(onednn_linear_on, rows):
    """On non-Intel CPUs with AVX-512 the model's products run on oneDNN (`bertforge.model.linear`), not on
    MKL through `F.linear`; both give the same values within float32 rounding, on the shapes the model passes
    and on a strided view (the pooler reads position 0 of each sequence)."""
    from bertforge.model.linear import Linear

    torch.manual_seed(0)
    layer = Linear(384, 1536)
    x = torch.randn(*rows, 384)
    strided = torch.randn(*rows, 3, 384)[..., 0, :]
    with torch.inference_mode():
        for inputs in (x, strided):
            ours = layer(inputs)
            assert ours.shape == (*rows, 1536)
            if ours.numel():
                theirs = torch.nn.functional.linear(inputs, layer.weight, layer.bias)
                assert max_diff(ours, theirs) < rounding_bound(theirs.abs().max().item(), 384)


def test_linear_under_torch_compile_takes_f_linear(onednn_linear_on, monkeypatch):
    """Inductor lowers oneDNN's product only for frozen weights: on CPUs that take oneDNN, a compiled model
    crashed on its first call (by hand on a Zen 4: `torch.compile(model)(ids)` now equals eager within 1e-6)."""
    from bertforge.model import linear

    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(linear, "onednn_linear", lambda *args: pytest.fail("oneDNN's product inside torch.compile"))
    layer = linear.Linear(8, 4)
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))


def test_an_int8_model_is_not_saved_as_if_it_were_float(tmp_path, default_model_dir):
    import bertforge

    with pytest.raises(CheckpointError, match=r"an int8 model is not saved .*save the float32 model it was made from"):
        bertforge.pipeline("sentence-embedding", dtype="int8").model.save_pretrained(tmp_path / "int8")
    assert not (tmp_path / "int8").exists()
    assert bertforge.pipeline("sentence-embedding", dtype="auto").dtype in ("bfloat16", "float32")  # what runs


def test_linear_gradients_equal_f_linears(onednn_linear_on):
    """Training takes oneDNN too (`OneDNNLinear`: a backward made of the same op). Its gradients equal
    `F.linear`'s within float32 rounding, with no autograd warning; under autocast the product is
    bfloat16 as usual."""
    import warnings

    from bertforge.model.linear import Linear

    torch.manual_seed(0)
    layer = Linear(384, 1536)
    x = torch.randn(4, 9, 384, requires_grad=True)
    upstream = torch.randn(4, 9, 1536)
    gradients = []
    for product in (layer, lambda inputs: torch.nn.functional.linear(inputs, layer.weight, layer.bias)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            output = product(x)
            output.backward(upstream)
        gradients.append([output.detach(), x.grad, layer.weight.grad, layer.bias.grad])
        x.grad = layer.weight.grad = layer.bias.grad = None
    assert (type(layer(x).grad_fn).__name__ == "OneDNNLinearBackward") == onednn_linear_on
    # each result is a sum over 384 inputs (output), 1,536 outputs (input gradient) or 36 rows (weight, bias)
    for a, b, length in zip(*gradients, (384, 1536, 36, 36)):
        assert max_diff(a, b) < rounding_bound(b.abs().max().item(), length)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16


def test_save_then_transformers_loads_it(encoder, tmp_path):
    from transformers import BertModel as ReferenceBertModel

    encoder.save_pretrained(tmp_path, tokenizer=BertTokenizer.from_pretrained())
    assert {"config.json", "model.safetensors", "vocab.txt"} <= {p.name for p in tmp_path.iterdir()}
    reference = ReferenceBertModel.from_pretrained(str(tmp_path)).eval()
    ids = torch.tensor([[101, 1045, 2293, 3000, 102]])
    with torch.inference_mode():
        assert max_diff(encoder(ids).last_hidden_state, reference(ids).last_hidden_state) < HIDDEN_STATES
        assert max_diff(encoder(ids).pooler_output, reference(ids).pooler_output) < UNIT
    again = BertModel.from_pretrained(tmp_path)
    with torch.inference_mode():
        assert torch.equal(again(ids).last_hidden_state, encoder(ids).last_hidden_state)


def test_transformers_pretraining_checkpoint_loads(tiny_pretraining_checkpoint):
    """A random transformers BertForPreTraining, saved by transformers: same MLM and NSP logits."""
    from transformers import BertForPreTraining as Reference

    reference = Reference.from_pretrained(str(tiny_pretraining_checkpoint)).eval()
    ours = BertForPreTraining.from_pretrained(tiny_pretraining_checkpoint)
    assert ours.missing_keys == []
    tokenizer = BertTokenizer.from_pretrained(tiny_pretraining_checkpoint)
    batch = tokenizer(["She cooked pasta", "Turn the radio on"], ["It was delicious", "She bought a new hat"],
                      padding=True, return_tensors="pt")
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.inference_mode():
        mine, theirs = ours(**inputs), reference(**inputs)
    assert max_diff(mine.prediction_logits, theirs.prediction_logits) < UNIT
    assert max_diff(mine.seq_relationship_logits, theirs.seq_relationship_logits) < UNIT
    # The MLM head tied to the embeddings, as in the paper.
    assert ours.mlm.word_embeddings.weight.data_ptr() == ours.bert.embeddings.word.weight.data_ptr()


def test_masked_positions_only(tiny_pretraining_checkpoint):
    """With labels and labelled_logits_only (the trainers' call), logits are computed only where a label is set,
    and equal the full logits there; without it, the full logits and the same loss, as in transformers."""
    model = BertForPreTraining.from_pretrained(tiny_pretraining_checkpoint)
    ids = torch.tensor([[101, 1045, 103, 3000, 102], [101, 103, 2293, 103, 102]])
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 2], labels[1, 1], labels[1, 3] = 2293, 1045, 3000
    with torch.inference_mode():
        full = model(ids).prediction_logits
        out = model(ids, labels=labels, next_sentence_label=torch.tensor([0, 1]), labelled_logits_only=True)
        whole = model(ids, labels=labels, next_sentence_label=torch.tensor([0, 1]))
    assert whole.prediction_logits.shape == (2, 5, 30522) and whole.mlm_labels is None
    assert max_diff(whole.prediction_logits, full) < UNIT and abs(whole.loss.item() - out.loss.item()) < UNIT
    assert out.prediction_logits.shape == (3, 30522)
    assert max_diff(out.prediction_logits, full[labels != IGNORE_INDEX]) < UNIT
    expected_mlm = torch.nn.functional.cross_entropy(full[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX])
    assert abs(out.mlm_loss.item() - expected_mlm.item()) < UNIT
    # The total is one float32 addition: within one rounding of the exact sum.
    assert abs(out.loss.item() - out.mlm_loss.item() - out.nsp_loss.item()) <= F32_EPS * abs(out.loss.item())


@pytest.mark.parametrize("cls", [BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering])
def test_task_heads_round_trip_to_transformers(cls, default_model_dir, tmp_path):
    import transformers

    labels = None if cls is BertForQuestionAnswering else {0: "neg", 1: "pos", 2: "neutral"}
    model = cls.from_pretrained(default_model_dir, id2label=labels)
    assert model.missing_keys  # the head is new: initialised randomly and reported
    model.save_pretrained(tmp_path)
    reference = getattr(transformers, cls.architecture).from_pretrained(str(tmp_path)).eval()
    ids = torch.tensor([[101, 1045, 2293, 3000, 102]])
    with torch.inference_mode():
        ours = model(ids).logits
        theirs = reference(ids)
    if cls is BertForQuestionAnswering:
        theirs_logits = torch.stack([theirs.start_logits, theirs.end_logits], dim=-1)
    else:
        theirs_logits = theirs.logits
        assert reference.config.id2label == {0: "neg", 1: "pos", 2: "neutral"}
    assert max_diff(ours, theirs_logits) < UNIT


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
    with pytest.raises(CheckpointError, match="shape"):
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
