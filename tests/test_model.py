"""The BERT model: parity with transformers on the real MiniLM checkpoint (within the bounds of
tolerances.py), its kernels (fused attention, the Linear's oneDNN route), checkpoint round trips in both directions."""

from __future__ import annotations

import pytest
import torch

from bertforge import BertTokenizer
from bertforge.model import (
    IGNORE_INDEX,
    BertConfig,
    BertModel,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
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


@pytest.mark.parametrize("inputs, outputs, spacing", [(384, 1536, 1), (1536, 384, 1), (384, 384, 3)],
                         ids=["widening", "narrowing", "spaced rows"])
def test_linear_gradients_equal_f_linears(onednn_linear_on, inputs, outputs, spacing):
    """Training takes oneDNN too (`OneDNNLinear`: a backward made of the same op). Its gradients equal
    `F.linear`'s within float32 rounding, with no autograd warning, whichever side of the weight's gradient
    is the wider (the backward arranges that product by it) and on rows spaced apart in memory (the pooler's
    [CLS] rows); under autocast the product is bfloat16 as usual."""
    import warnings

    from bertforge.model.linear import Linear

    torch.manual_seed(0)
    layer = Linear(inputs, outputs)
    rows = torch.randn(4, 9, spacing, inputs, requires_grad=True)
    x = rows[..., 0, :]  # (4, 9, inputs), rows `spacing` apart
    upstream = torch.randn(4, 9, outputs)
    gradients = []
    for product in (layer, lambda inputs: torch.nn.functional.linear(inputs, layer.weight, layer.bias)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            output = product(x)
            output.backward(upstream)
        gradients.append([output.detach(), rows.grad, layer.weight.grad, layer.bias.grad])
        rows.grad = layer.weight.grad = layer.bias.grad = None
    assert (type(layer(x).grad_fn).__name__ == "OneDNNLinearBackward") == onednn_linear_on
    # each result is a sum over the inputs (output), the outputs (input gradient) or 36 rows (weight, bias)
    for a, b, length in zip(*gradients, (inputs, outputs, 36, 36)):
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
