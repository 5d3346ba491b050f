"""Graph capture, as users ship a model: torch.compile(fullgraph=True), torch.export with dynamic batch and
sequence sizes, and ONNX (both of torch's exporters) run in onnxruntime. Each captured graph must serve padded
batches of other sizes than its example, with the outputs eager mode gives."""

from __future__ import annotations

import warnings

import onnxruntime
import pytest
import torch
import transformers

from bertforge.model import BertConfig, BertForSequenceClassification

SMALL = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def padded_batch(batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, length // 2:] = 0  # the first row padded: the mask must reach the graph
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(**SMALL)).eval()


class Logits(torch.nn.Module):
    """The logits alone, positional inputs: what the ONNX exporters' examples take."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids, attention_mask, token_type_ids).logits


def test_compiled_with_fullgraph_equals_eager(model):
    compiled = torch.compile(model, fullgraph=True)
    for batch in (padded_batch(2, 7, 1), padded_batch(3, 11, 2)):
        with torch.no_grad():
            torch.testing.assert_close(compiled(**batch).logits, model(**batch).logits, rtol=0, atol=1e-5)


def test_exported_with_dynamic_sizes_serves_other_padded_batches(model):
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=512)
    example = padded_batch(2, 7, 1)
    program = torch.export.export(model, (), example, dynamic_shapes={name: {0: batch, 1: seq} for name in INPUTS})
    for inputs in (example, padded_batch(5, 13, 3), padded_batch(1, 30, 4)):
        with torch.no_grad():
            torch.testing.assert_close(program.module()(**inputs).logits, model(**inputs).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
def test_onnx_export_runs_in_onnxruntime_with_the_attention_mask(model, tmp_path, dynamo):
    path = tmp_path / "model.onnx"
    example = padded_batch(1, 4, 5)
    example["attention_mask"][:] = 1  # an example without padding must still give a graph that masks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' notes on their own deprecations
        # eval(): the TorchScript exporter records the wrapper's mode, dropout included, for every module in it
        torch.onnx.export(Logits(model).eval(), tuple(example[name] for name in INPUTS), str(path), input_names=list(INPUTS),
                          output_names=["logits"], dynamic_axes={name: {0: "batch", 1: "seq"} for name in INPUTS},
                          dynamo=dynamo)
    session = onnxruntime.InferenceSession(str(path))
    assert [node.name for node in session.get_inputs()] == list(INPUTS)
    for inputs in (padded_batch(3, 9, 6), padded_batch(2, 20, 7)):
        (logits,) = session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(logits), model(**inputs).logits, rtol=0, atol=1e-5)


def test_embeddings_and_layers_called_alone_give_what_transformers_modules_give(model, tmp_path):
    """Attribution tools hook or call these modules: the embeddings from ids alone, a layer's output a tensor."""
    model.save_pretrained(tmp_path / "saved")
    reference = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    inputs = padded_batch(2, 6, 8)
    with torch.no_grad():
        embedded = model.bert.embeddings(inputs["input_ids"])
        torch.testing.assert_close(embedded, reference.bert.embeddings(inputs["input_ids"]), rtol=0, atol=1e-6)
        layer_output = model.bert.encoder.layers[0](embedded)
        assert isinstance(layer_output, torch.Tensor)
        torch.testing.assert_close(layer_output, reference.bert.encoder.layer[0](embedded), rtol=0, atol=1e-5)
