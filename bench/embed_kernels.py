"""Would other CPU kernels make the sentence-embedding pipeline faster? (issue 16) The pipeline as it
ships (its Linear layers on MKL on Intel CPUs and on CPUs without AVX-512, on oneDNN on the other x86
CPUs, `bertforge.model.linear`) against copies of it whose encoder layers run on other kernels PyTorch has:

- `mkl`: every Linear on `F.linear`, i.e. MKL's sgemm;
- `onednn`: every Linear on oneDNN (`bertforge.model.linear.onednn_linear`);
- `mkl-packed`: every Linear on MKL's pre-packed weights (`torch.ops.mkl._mkl_linear`, what Inductor
  emits for float32 Linear layers on CPU);
- `compiled`: every encoder layer through `torch.compile` (dynamic shapes, weights frozen), which fuses
  the element-wise work (bias, GELU, residuals, LayerNorm) around the matrix products;
- `fused-attention`: every length group through the fused attention kernel
  (`F.scaled_dot_product_attention`), also the ones shorter than
  `bertforge.model.bert.EXPLICIT_ATTENTION_BELOW` tokens, which the pipeline writes out as products and a softmax.

Same texts (corpus lines, as `bench/embed.py --texts short`), same threads, best of `--repeats` per
round, rounds alternating; the largest difference to the pipeline's vectors is printed too.

`--products` prints instead the GFLOP/s of the model's matrix products alone (MiniLM's shapes, 800
rows: a batch of 32 corpus lines; forward and both backward products) on `F.linear`/`torch.matmul`
(MKL) and on oneDNN, one thread: what decides between the two libraries on a given CPU. `--attention`
prints the milliseconds of one length group's attention (MiniLM's 12 heads of 32, some 640 tokens a group)
through the fused kernel and written out, by length, on `--threads`: what sets `EXPLICIT_ATTENTION_BELOW`.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/embed_kernels.py --sentences 1000 --threads 2
    HF_HUB_OFFLINE=1 .venv/bin/python bench/embed_kernels.py --variants mkl onednn --sentences 4000 --rounds 3
    HF_HUB_OFFLINE=1 .venv/bin/python bench/embed_kernels.py --variants fused-attention --sentences 4000 --rounds 3
    .venv/bin/python bench/embed_kernels.py --products
    .venv/bin/python bench/embed_kernels.py --attention
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from embed import corpus_lines

from bertforge.model import bert
from bertforge.model.linear import ONEDNN_LINEAR, onednn_linear
from bertforge.pipelines import pipeline


class FixedProductLinear(torch.nn.Module):
    """A Linear's weights with the product of our choosing: `F.linear` (MKL) or `onednn_linear`."""

    def __init__(self, linear: torch.nn.Linear, product):
        super().__init__()
        self.weight, self.bias, self.product = linear.weight.detach(), linear.bias.detach(), product

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.product(x, self.weight, self.bias)


class PackedLinear(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear, batch_rows: int = 512):
        super().__init__()
        self.weight, self.bias, self.batch_rows = linear.weight.detach(), linear.bias.detach(), batch_rows
        self.packed = torch.ops.mkl._mkl_reorder_linear_weight(self.weight, batch_rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkl._mkl_linear(rows, self.packed, self.weight, self.bias, self.batch_rows)
        return out.reshape(*x.shape[:-1], -1)


def variant(name: str, batch_size: int):
    pipe = pipeline("sentence-embedding", batch_size=batch_size, max_length=256)
    layers = pipe.bert.encoder.layers
    if name in ("mkl", "onednn", "mkl-packed"):
        wrap = {"mkl": lambda linear: FixedProductLinear(linear, torch.nn.functional.linear),
                "onednn": lambda linear: FixedProductLinear(linear, onednn_linear), "mkl-packed": PackedLinear}[name]
        for layer in layers:
            layer.attention.qkv, layer.attention.out = wrap(layer.attention.qkv), wrap(layer.attention.out)
            layer.intermediate, layer.output = wrap(layer.intermediate), wrap(layer.output)
    elif name == "compiled":
        import torch._inductor.config as inductor

        inductor.freezing = True
        for i, layer in enumerate(layers):
            layers[i] = torch.compile(layer, dynamic=True)
    elif name == "fused-attention":
        return partial(with_fused_attention, pipe)
    return pipe


def with_fused_attention(pipe, texts):
    """The pipeline's own code with no group written out: the threshold at 0 for this call only, as the
    other variants share the module."""
    threshold, bert.EXPLICIT_ATTENTION_BELOW = bert.EXPLICIT_ATTENTION_BELOW, 0
    try:
        return pipe(texts)
    finally:
        bert.EXPLICIT_ATTENTION_BELOW = threshold


def print_attention(threads: int, blocks: int = 7, repeats: int = 20, heads: int = 12, head_dim: int = 32) -> None:
    """Milliseconds of one group's attention, fused kernel against `bert.explicit_attention`, by length."""
    torch.set_num_threads(threads)
    print(f"{threads} thread(s), {heads} heads of {head_dim}, float32: ms per group, best of {blocks} blocks of {repeats} "
          f"(the pipeline writes out groups under {bert.EXPLICIT_ATTENTION_BELOW} tokens)")
    print("| length | sequences | fused | written out | fused ÷ written out |\n| ---: | ---: | ---: | ---: | ---: |")
    for length in (8, 16, 24, 32, 48, 64, 96, 128, 256):
        count = max(1, 640 // length)
        # views of one (tokens, 3·hidden) projection, as the pipeline's groups are
        qkv = torch.randn(count * length, 3 * heads * head_dim)
        q, k, v = qkv.view(count, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        runs = (lambda: F.scaled_dot_product_attention(q, k, v), lambda: bert.explicit_attention(q, k, v))
        times = [float("inf")] * 2
        for _ in range(blocks):  # the two ways take turns; each keeps its best block
            for i, run in enumerate(runs):
                run()
                started = time.perf_counter()
                for _ in range(repeats):
                    run()
                times[i] = min(times[i], (time.perf_counter() - started) / repeats * 1e3)
        print(f"| {length} | {count} | {times[0]:.3f} | {times[1]:.3f} | {times[0] / times[1]:.2f}× |")


def print_products(rows: int = 800, repeats: int = 20) -> None:
    """GFLOP/s of y = x·Wᵀ (forward), dy·W (the input's gradient) and dyᵀ·x (the weight's) on both libraries."""
    torch.set_num_threads(1)
    print(f"one thread, {rows} rows: GFLOP/s")
    print("| product | (in, out) | MKL | oneDNN | oneDNN ÷ MKL |\n| --- | --- | ---: | ---: | ---: |")
    for inputs, outputs in [(384, 1152), (384, 384), (384, 1536), (1536, 384)]:
        x, weight, grad = torch.randn(rows, inputs), torch.randn(outputs, inputs), torch.randn(rows, outputs)
        products = {
            "forward": (lambda: x @ weight.t(), lambda: onednn_linear(x, weight, None)),
            "input gradient": (lambda: grad @ weight, lambda: onednn_linear(grad, weight.t(), None)),
            "weight gradient": (lambda: grad.t() @ x, lambda: onednn_linear(grad.t(), x.t(), None)),
        }
        for name, (mkl, onednn) in products.items():
            rates = []
            for run in (mkl, onednn):
                run()
                started = time.perf_counter()
                for _ in range(repeats):
                    run()
                rates.append(2 * rows * inputs * outputs * repeats / (time.perf_counter() - started) / 1e9)
            print(f"| {name} | ({inputs}, {outputs}) | {rates[0]:.0f} | {rates[1]:.0f} | {rates[1] / rates[0]:.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--variants", nargs="+", default=["mkl-packed", "compiled"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--products", action="store_true", help="time the matrix products alone")
    parser.add_argument("--attention", action="store_true", help="time one length group's attention, both ways")
    args = parser.parse_args()
    if args.products:
        print_products()
        return
    if args.attention:
        print_attention(args.threads)
        return
    torch.set_num_threads(args.threads)
    texts = corpus_lines(args.sentences)
    pipes, warm_up = {}, {}
    for name in ["eager", *args.variants]:
        started = time.perf_counter()
        pipes[name] = variant(name, args.batch_size)
        pipes[name](texts[:200])  # compiles, or picks kernels
        warm_up[name] = time.perf_counter() - started
    best, vectors = {name: float("inf") for name in pipes}, {}
    for round_ in range(args.rounds):
        for name in (list(pipes) if round_ % 2 == 0 else list(pipes)[::-1]):
            for _ in range(args.repeats):
                started = time.perf_counter()
                vectors[name] = pipes[name](texts)
                best[name] = min(best[name], time.perf_counter() - started)
    print(f"{len(texts)} corpus lines, batch {args.batch_size}, {args.threads} threads, best of "
          f"{args.rounds * args.repeats}; the pipeline's Linears on {'oneDNN' if ONEDNN_LINEAR else 'MKL'} "
          f"({torch.cpu.get_capabilities().get('cpu_name')})")
    print("| kernels | sentences/s | × the pipeline | set-up and warm-up s | largest difference |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in pipes:
        difference = np.abs(vectors[name] - vectors["eager"]).max()
        print(f"| {name} | {len(texts) / best[name]:.1f} | {best['eager'] / best[name]:.2f}× | {warm_up[name]:.1f} | "
              f"{difference:.1e} |")


if __name__ == "__main__":
    main()
