"""Reduced precision for inference (`bertforge.pipelines.loading.apply_dtype`): int8 on supported ops,
close to float32 on real text, with no torch.ao and no deprecation warning; `auto` picks bfloat16
exactly where the CPU has native BF16."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from bertforge.cli.main import cli
from bertforge.errors import InputError
from bertforge.model import BertConfig, BertModel
from bertforge.model.quantize import (EXACT_FLOAT32_TERMS, Int8Linear, exact_integer_product, onednn_available,
                                      onednn_int8_exact, quantize_encoder)
from bertforge.pipelines import pipeline
from bertforge.pipelines import loading
from conftest import gutenberg_lines

CPU = torch.device("cpu")


@pytest.fixture
def outlier_linear():
    """A Linear and inputs shaped like BERT's: one hidden channel ten times the others, and
    GELU outputs (barely negative), where symmetric per-tensor int8 loses most."""
    torch.manual_seed(0)
    linear = nn.Linear(384, 256)
    x = torch.randn(3, 40, 384)
    x[..., 7] *= 10
    return linear, x


@pytest.mark.slow
def test_int8_sentence_vectors_stay_within_0_99_of_float32():
    lines = gutenberg_lines(1000)  # the same lines bench/embed.py measures (the fixture is a prefix)
    exact = pipeline("sentence-embedding")(lines)
    int8 = pipeline("sentence-embedding", dtype="int8")
    reduced = int8(lines)
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1.0, atol=1e-5)  # normalised as float32 ones are
    cosines = (reduced * exact).sum(axis=1) / np.linalg.norm(reduced, axis=1) / np.linalg.norm(exact, axis=1)
    assert cosines.min() >= 0.99, (cosines.min(), lines[int(cosines.argmin())])
    assert all(isinstance(m, Int8Linear) for m in int8.bert.encoder.modules() if isinstance(m, (nn.Linear, Int8Linear)))


@pytest.mark.parametrize("use_onednn", [True, False] if onednn_int8_exact() else [False])
def test_int8_linear_is_close_to_the_float_product(outlier_linear, use_onednn):
    linear, x = outlier_linear
    for inputs in (x, torch.nn.functional.gelu(x)):
        expected = linear(inputs)
        got = Int8Linear(linear, use_onednn)(inputs)
        assert got.shape == expected.shape
        assert ((got - expected).norm() / expected.norm()).item() < 0.02


@pytest.mark.skipif(not onednn_available(), reason="PyTorch built without oneDNN: only the exact float32 kernel exists")
def test_both_int8_kernels_compute_the_same_integer_product(outlier_linear):
    """On inputs no x86 kernel can overflow, on every CPU: per token one large channel and small non-negative
    others, so that any two neighbouring products sum below 32,767 even where oneDNN adds them in int16 (no
    VNNI). The outlier inputs of the test above check the oneDNN kernel where the model takes it."""
    linear, x = outlier_linear
    torch.manual_seed(1)
    sparse = torch.rand_like(x) * 0.005
    sparse.scatter_(-1, torch.randint(0, x.shape[-1], (*x.shape[:-1], 1)), 1.0)  # levels 255 there, 0-1 elsewhere
    torch.testing.assert_close(Int8Linear(linear, True)(sparse), Int8Linear(linear, False)(sparse), rtol=1e-5,
                               atol=1e-4)


@pytest.mark.parametrize("width", [384, 1536, 2 * EXACT_FLOAT32_TERMS + 5])  # one slice, two, three
def test_the_float32_kernel_gives_the_exact_integer_sums(width):
    """Full-range levels, the largest products there are, against PyTorch's int8 × int8 → int32 product."""
    torch.manual_seed(width)
    levels = torch.randint(-128, 128, (64, width), dtype=torch.int8)
    weight = torch.randint(-127, 128, (96, width), dtype=torch.int8)
    levels[0], weight[0] = -128, -127  # the largest sum: 128·127 per term, all of one sign
    # Running sums past 2^24 (where float32 keeps only even integers) that fall back below it: one float32
    # product over all 1,536 terms rounds on the way up, and the error stays in the result.
    levels[1] = torch.randint(120, 128, (width,), dtype=torch.int8)
    levels[1, width * 5 // 6:] *= -1
    weight[1] = 127
    exact = torch._int_mm(levels, weight.t().contiguous()).float()
    assert torch.equal(exact_integer_product(levels.float(), weight), exact)
    assert exact[0, 0] == 128 * 127 * width


@pytest.mark.parametrize("flags, onednn", [({"avx512_vnni": True}, True), ({"avx_vnni": True}, True),
                                           ({"amx_int8": True}, True), ({"avx2": True}, False), ({}, False)])
def test_int8_takes_onednn_only_on_cpus_with_vnni_or_amx(monkeypatch, flags, onednn):
    """Without VNNI oneDNN's u8·s8 kernel saturates its int16 pair sums; exact float32 products run there instead."""
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    expected = onednn and onednn_available()
    assert onednn_int8_exact() is expected
    torch.manual_seed(0)
    assert Int8Linear(nn.Linear(8, 4)).use_onednn is expected


@pytest.mark.parametrize("flags, slow", [({"avx2": True}, True), ({"avx512_vnni": True}, False)])
def test_int8_on_a_cpu_without_vnni_says_float32_is_faster(monkeypatch, caplog, flags, slow):
    """There int8 is slower than float32 (exact float32 products plus the quantisation): the user is told."""
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    with caplog.at_level("WARNING", logger="bertforge.pipelines.loading"):
        loading.apply_dtype(BertModel(BertConfig.from_size("tiny")).eval(), "int8", CPU)
    said = [r.getMessage() for r in caplog.records if r.name == "bertforge.pipelines.loading"]
    if slow or not onednn_available():
        assert said == ["--dtype int8: this CPU has none of avx512_vnni, avx_vnni, amx_int8, so the int8 products "
                        "are computed exactly in float32, with the quantisation's cost on top (docs/benchmarks.md); "
                        "--dtype float32 is faster here"]
    else:
        assert said == []


def test_int8_needs_no_torch_ao_and_warns_nothing(monkeypatch):
    import torch.ao.quantization as ao

    def refuse(*args, **kwargs):
        raise AssertionError("torch.ao quantisation was called")

    monkeypatch.setattr(ao, "quantize_dynamic", refuse)
    monkeypatch.setattr(ao, "quantize", refuse)
    model = BertModel(BertConfig.from_size("tiny")).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning, deprecation or other, fails the test
        quantized = loading.apply_dtype(model, "int8", CPU)
        with torch.inference_mode():
            out = quantized.forward_unpadded([[101, 2023, 102]], [[0, 0, 0]])
    assert out.hidden_states[0].shape == (3, 128)


def test_int8_pipeline_imports_no_torch_ao_quantisation_module():
    """Checked in a fresh process: importing and running the int8 path loads none of torch.ao's
    quantisation modules beyond what `import torch` itself loads."""
    code = """if True:
        import sys, torch
        before = {m for m in sys.modules if m.startswith("torch.ao.quantization")}
        from bertforge.model import BertConfig, BertModel
        from bertforge.pipelines.loading import apply_dtype
        model = apply_dtype(BertModel(BertConfig.from_size("tiny")).eval(), "int8", torch.device("cpu"))
        with torch.inference_mode():
            model.forward_unpadded([[101, 102]], [[0, 0]])
        print(sorted({m for m in sys.modules if m.startswith("torch.ao.quantization")} - before))
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_int8_is_refused_off_the_cpu_with_the_device_named():
    model = BertModel(BertConfig.from_size("tiny"))
    with pytest.raises(InputError, match="--dtype int8 runs on the CPU only, got --device meta"):
        loading.apply_dtype(model, "int8", torch.device("meta"))


def test_int8_leaves_the_heads_float32():
    from bertforge.model import BertForSequenceClassification

    model = quantize_encoder(BertForSequenceClassification(BertConfig.from_size("tiny")).eval())
    assert isinstance(model.classifier, nn.Linear) and isinstance(model.bert.pooler.dense, nn.Linear)
    assert isinstance(model.bert.encoder.layers[0].attention.qkv, Int8Linear)


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bfloat16_exactly_where_the_cpu_has_native_bf16(monkeypatch, native):
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native)
    model = loading.apply_dtype(BertModel(BertConfig.from_size("tiny")).eval(), "auto", CPU)
    assert model.dtype == (torch.bfloat16 if native else torch.float32)
    assert loading.resolve_dtype("auto", torch.device("cuda")) == "float32"  # CPU capabilities say nothing of a GPU
    assert loading.resolve_dtype("float32", CPU) == "float32" and loading.resolve_dtype("int8", CPU) == "int8"


@pytest.mark.parametrize("capabilities, native", [
    ({"amx_bf16": True, "avx512_bf16": False}, True),
    ({"amx_bf16": False, "avx512_bf16": True}, True),
    ({"amx_bf16": False, "avx512_bf16": False, "avx512_f": True}, False),  # AVX-512 alone only emulates BF16
    ({}, False),  # a CPU PyTorch reports nothing for (ARM, say)
])
def test_native_bf16_means_amx_or_avx512_bf16(monkeypatch, capabilities, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert loading.cpu_has_native_bf16() is native


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="the kernel's CPU flags are read from Linux's /proc")
def test_native_bf16_agrees_with_the_kernels_cpu_flags():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert loading.cpu_has_native_bf16() == bool({"amx_bf16", "avx512_bf16"} & flags)


def test_auto_is_accepted_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)  # float32: the vectors are then exact
    source = tmp_path / "sentences.txt"
    source.write_text("A cat sat on the mat.\nThe dog slept.\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["embed", "--input", str(source), "--output", str(tmp_path / "v.npy"),
                                      "--dtype", "auto"])
    assert result.exit_code == 0, result.output
    expected = pipeline("sentence-embedding")(["A cat sat on the mat.", "The dog slept."])
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), expected, atol=1e-5)
