"""Sentence embeddings: bertforge vs sentence-transformers `encode` and onnxruntime, same model, same run.

Embeds Gutenberg text with the bundled all-MiniLM-L6-v2 (mean pooling + L2 norm) through
sentence-transformers (float32), through onnxruntime (the same model exported to ONNX, float32, the
Rust tokenizer, length-sorted batches) and through bertforge in each requested dtype, each run in a
fresh subprocess (so peak memory is its own), alternating which engine goes first from round to round.
Same max length, batch size and intra-op thread count for all. Reports sentences/s, the ratios to
sentence-transformers and onnxruntime, peak RSS, and the worst per-sentence cosine to
sentence-transformers' vectors. `--texts short` embeds corpus lines, `--texts paragraphs` the books'
paragraphs (cut at --max-length tokens). `--parallel-batches 1,2` also runs bertforge and onnxruntime
with two batches at once, each on half the threads (ratios stay against the one-batch-at-a-time
peers). `--profile` prints where bertforge's float32 time goes.
Then times the fill-mask pipeline against transformers' `pipeline("fill-mask")` on one checkpoint.

    .venv/bin/python bench/embed.py --sentences 10000 --max-length 256 --batch-size 32 --threads 2
    .venv/bin/python bench/embed.py --texts paragraphs --sentences 2000 --fill-mask-texts 0
    .venv/bin/python bench/embed.py --sentences 1000 --dtypes float32 --parallel-batches 1,2 --fill-mask-texts 0
    .venv/bin/python bench/embed.py --profile --sentences 2000 --skip-embeddings --fill-mask-texts 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from locations import corpus_books
from processes import own_peak_memory_mib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def corpus_lines(count: int) -> list[str]:
    lines = []
    for book in corpus_books():
        lines += [line.strip() for line in book.splitlines() if line.strip()]
        if len(lines) >= count:
            return lines[:count]
    return lines


def corpus_paragraphs(count: int) -> list[str]:
    """The books' paragraphs (blocks between blank lines), their hard line breaks joined."""
    paragraphs = []
    for book in corpus_books():
        for block in book.split("\n\n"):
            text = " ".join(block.split())
            if text:
                paragraphs.append(text)
        if len(paragraphs) >= count:
            return paragraphs[:count]
    return paragraphs


def bench_texts(args) -> list[str]:
    return corpus_lines(args.sentences) if args.texts == "short" else corpus_paragraphs(args.sentences)


def export_onnx(directory: Path) -> Path:
    """transformers' BertModel of the default model as ONNX (float32), batch and length dynamic."""
    import torch
    from transformers import BertModel

    from bertforge.model import default_model_path

    model = BertModel.from_pretrained(str(default_model_path()), dtype=torch.float32,
                                      attn_implementation="eager").eval()
    path = directory / "model.onnx"
    # A padded example: traced with an all-ones mask, the exported graph drops the mask altogether.
    ids, mask = torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    example = (ids, mask, torch.zeros_like(ids))
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=512)
    shapes = {name: {0: batch, 1: length} for name in ("input_ids", "attention_mask", "token_type_ids")}
    torch.onnx.export(model, example, str(path), input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["last_hidden_state"], dynamic_shapes=shapes, dynamo=True, external_data=False)
    return path


def onnxruntime_embedder(args, parallel_batches: int = 1):
    """Rust tokenizer → padded length-sorted batches → onnxruntime → mean pooling + L2 norm. With
    `parallel_batches` > 1, that many threads share one session (its `run` is thread-safe), each
    batch on its share of the intra-op threads, as bertforge's `parallel_batches` does."""
    from concurrent.futures import ThreadPoolExecutor

    import onnxruntime
    from tokenizers import Tokenizer

    from bertforge.model import default_model_path

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = max(1, args.threads // parallel_batches), 1
    session = onnxruntime.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))
    tokenizer.enable_truncation(args.max_length)
    tokenizer.no_padding()

    def embed(texts):
        encodings = tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        vectors = np.zeros((len(texts), 384), dtype=np.float32)

        def run(start):
            chunk = order[start:start + args.batch_size]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, i in enumerate(chunk):
                ids[row, :len(encodings[i].ids)] = encodings[i].ids
                mask[row, :len(encodings[i].ids)] = 1
            hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            vectors[chunk] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

        with ThreadPoolExecutor(parallel_batches) as pool:
            list(pool.map(run, range(0, len(order), args.batch_size)))
        return vectors
    return embed


def embed_worker(engine: str, dtype: str, parallel_batches: int, args) -> None:
    """Runs in a subprocess: warm up, embed every line once, save the vectors, print the timing."""
    import torch

    torch.set_num_threads(args.threads)
    lines = bench_texts(args)
    if engine == "onnxruntime":
        embed = onnxruntime_embedder(args, parallel_batches)
    elif engine == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        from bertforge.model import default_model_path

        model = SentenceTransformer(str(default_model_path()), device="cpu")
        model.max_seq_length = args.max_length

        def embed(texts):
            return model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
    else:
        from bertforge.pipelines import pipeline

        pipe = pipeline("sentence-embedding", dtype=dtype, batch_size=args.batch_size, max_length=args.max_length,
                        parallel_batches=parallel_batches)

        def embed(texts):
            return pipe(texts)
    embed(lines[:2 * args.batch_size])  # warm-up: first calls allocate and pick kernels
    start, cpu_start = time.perf_counter(), time.process_time()
    vectors = embed(lines)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    np.save(args.save, np.asarray(vectors, dtype=np.float32))
    peak_mib = own_peak_memory_mib()
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": peak_mib}))


def run_worker(engine: str, dtype: str, parallel_batches: int, args, save: Path) -> dict:
    command = [sys.executable, __file__, "--worker", engine, "--dtype", dtype, "--save", str(save),
               "--worker-parallel-batches", str(parallel_batches),
               "--texts", args.texts, "--onnx", str(args.onnx), "--sentences", str(args.sentences), "--max-length", str(args.max_length),
               "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{engine} {dtype} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_embeddings(args) -> None:
    engines = [("sentence-transformers", "float32", 1), ("onnxruntime", "float32", 1)]
    parallel = [int(p) for p in args.parallel_batches.split(",")]
    engines += [("onnxruntime", "float32", p) for p in parallel if p > 1]
    engines += [("bertforge", d, p) for d in args.dtypes.split(",") for p in parallel]
    results: dict[tuple[str, str, int], list[dict]] = {e: [] for e in engines}
    with tempfile.TemporaryDirectory() as tmp:
        args.onnx = export_onnx(Path(tmp))
        saved = {}
        for round_ in range(args.rounds):
            order = engines if round_ % 2 == 0 else engines[::-1]
            for engine in order:
                saved[engine] = Path(tmp) / f"{engine[0]}-{engine[1]}-{engine[2]}.npy"
                result = run_worker(*engine, args, saved[engine])
                results[engine].append(result)
                print(f"round {round_ + 1}: {engine[0]:22} {label(engine):22} {args.sentences / result['seconds']:8.1f} "
                      f"sentences/s, {args.sentences / result['cpu_seconds']:8.1f} per CPU-second", flush=True)
        reference = np.load(saved[engines[0]])
        count = len(reference)
        rate = {e: count / min(r["seconds"] for r in results[e]) for e in engines}
        cpu_rate = {e: count / min(r["cpu_seconds"] for r in results[e]) for e in engines}
        st, ort = engines[0], engines[1]
        print(f"\n{count} Gutenberg {'lines' if args.texts == 'short' else 'paragraphs'}, max length "
              f"{args.max_length}, batch {args.batch_size}, {args.threads} threads, best of {args.rounds} round(s)")
        # On a shared machine the wall clock counts other jobs' time; CPU time counts only this one's.
        print("| engine | dtype | sentences/s | vs sentence-transformers | vs onnxruntime | sentences per CPU-s "
              "| vs s-t | vs ort | peak RSS MiB | worst cosine vs sentence-transformers |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for engine in engines:
            vectors = np.load(saved[engine])
            cosines = (vectors * reference).sum(1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))
            peak = max(r["peak_mib"] for r in results[engine])
            print(f"| {engine[0]} | {label(engine)} | {rate[engine]:.1f} | {rate[engine] / rate[st]:.2f}x | "
                  f"{rate[engine] / rate[ort]:.2f}x | {cpu_rate[engine]:.1f} | {cpu_rate[engine] / cpu_rate[st]:.2f}x | "
                  f"{cpu_rate[engine] / cpu_rate[ort]:.2f}x | {peak:.0f} | {cosines.min():.6f} |")


def label(engine: tuple[str, str, int]) -> str:
    return engine[1] if engine[2] == 1 else f"{engine[1]}, {engine[2]} batches at once"


def profile_embeddings(args) -> None:
    """Where bertforge's float32 time goes: tokenizing, the model's parts (timed by forward hooks),
    and the rest of the forward pass (packing the batch, the norms, GELU, residuals, pooling)."""
    import torch

    from bertforge.pipelines import pipeline

    torch.set_num_threads(args.threads)
    texts = bench_texts(args)
    pipe = pipeline("sentence-embedding", batch_size=args.batch_size, max_length=args.max_length)
    pipe(texts[:2 * args.batch_size])
    projections, attention = "attention projections (qkv, out)", "attention (one call per length group)"
    spent = {"embeddings": 0.0, projections: 0.0, attention: 0.0, "feed-forward Linears": 0.0}
    parts = [(pipe.bert.embeddings, "embeddings")]
    for layer in pipe.bert.encoder.layers:
        parts += [(layer.attention, attention), (layer.attention.qkv, projections), (layer.attention.out, projections),
                  (layer.intermediate, "feed-forward Linears"), (layer.output, "feed-forward Linears")]
    started, flops = {}, 0

    def finished(module, inputs, output, name):
        nonlocal flops
        spent[name] += time.perf_counter() - started[id(module)]
        if isinstance(module, torch.nn.Linear):
            flops += 2 * inputs[0].numel() * module.out_features

    for module, name in parts:
        module.register_forward_pre_hook(lambda m, a: started.__setitem__(id(m), time.perf_counter()))
        module.register_forward_hook(lambda m, a, o, name=name: finished(m, a, o, name))
    start = time.perf_counter()
    pipe.encode(texts)
    tokenizing = time.perf_counter() - start
    for key in spent:
        spent[key] = 0.0
    flops = 0
    start = time.perf_counter()
    pipe(texts)
    total = time.perf_counter() - start  # includes tokenizing once more
    spent[attention] -= spent[projections]  # the attention module's hook timed its projections too
    shares = {"tokenizer": tokenizing, **spent}
    shares["packing, norms, GELU, residuals, pooling"] = total - sum(shares.values())
    print(f"\nbertforge float32, {len(texts)} {args.texts} texts, {args.threads} threads: {total:.2f} s")
    print("| part | seconds | share |\n| --- | ---: | ---: |")
    for name, seconds in shares.items():
        print(f"| {name} | {seconds:.2f} | {seconds / total:.0%} |")
    products = spent[projections] + spent["feed-forward Linears"]
    print(f"the Linears' products: {flops / 1e9:.1f} GFLOP in {products:.2f} s, {flops / products / 1e9:.0f} "
          f"GFLOP/s on {args.threads} threads (one thread's rate on these shapes: bench/embed_kernels.py --products)")


def masked_texts(count: int) -> list[str]:
    rng = random.Random(0)
    texts = []
    for line in corpus_lines(3 * count):
        words = line.split()
        if 4 <= len(words) <= 40:
            words[rng.randrange(len(words))] = "[MASK]"
            texts.append(" ".join(words))
        if len(texts) == count:
            break
    return texts


def tiny_checkpoint(directory: Path) -> Path:
    """A random transformers BertForPreTraining (tiny) with the MiniLM vocabulary: the same
    checkpoint the tests use, for when no pre-trained bertforge model is installed."""
    import torch
    from transformers import BertConfig, BertForPreTraining

    from bertforge.model import default_model_path

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512)
    BertForPreTraining(config).eval().save_pretrained(directory)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(default_model_path() / name, directory / name)
    return directory


def bench_fill_mask(args) -> None:
    import torch
    from transformers import pipeline as hf_pipeline

    from bertforge.errors import CheckpointError
    from bertforge.pipelines import pipeline
    from bertforge.paths import default_pretraining_model_path

    torch.set_num_threads(args.threads)
    texts = masked_texts(args.fill_mask_texts)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            checkpoint = Path(args.fill_mask_model) if args.fill_mask_model else default_pretraining_model_path()
        except CheckpointError:
            checkpoint = tiny_checkpoint(Path(tmp))
        ours = pipeline("fill-mask", model=checkpoint, batch_size=args.batch_size)
        # float32 on both sides: transformers 5 would otherwise keep a float16 checkpoint in float16.
        theirs = hf_pipeline("fill-mask", model=str(checkpoint), device="cpu", dtype=torch.float32)
        runs = {"bertforge": lambda: ours(texts, top_k=5),
                "transformers": lambda: theirs(texts, top_k=5, batch_size=args.batch_size)}
        timings = {name: [] for name in runs}
        for name in runs:
            runs[name]()  # warm-up
        for round_ in range(args.rounds):
            for name in (list(runs) if round_ % 2 == 0 else list(runs)[::-1]):
                start = time.perf_counter()
                runs[name]()
                timings[name].append(time.perf_counter() - start)
        best = {name: len(texts) / min(t) for name, t in timings.items()}
        print(f"\nfill-mask, {len(texts)} Gutenberg lines with one [MASK], top_k 5, batch {args.batch_size}, "
              f"checkpoint {checkpoint.name} ({ours.config.num_hidden_layers} layers, hidden {ours.config.hidden_size})")
        print("| engine | texts/s | ratio |\n| --- | ---: | ---: |")
        for name, rate in best.items():
            print(f"| {name} | {rate:.1f} | {rate / best['transformers']:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=10_000)
    parser.add_argument("--max-length", type=int, default=256, help="sentence-transformers' setting for MiniLM")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--texts", choices=["short", "paragraphs"], default="short",
                        help="corpus lines, or paragraphs (up to --max-length tokens)")
    parser.add_argument("--dtypes", default="float32,int8,auto")
    parser.add_argument("--parallel-batches", default="1", help="bertforge's parallel_batches settings to run, e.g. 1,2")
    parser.add_argument("--profile", action="store_true", help="print where bertforge's float32 time goes")
    parser.add_argument("--fill-mask-texts", type=int, default=500)
    parser.add_argument("--fill-mask-model", default=None, help="default: bertforge's pre-trained model, else a tiny random one")
    parser.add_argument("--skip-embeddings", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--worker-parallel-batches", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        embed_worker(args.worker, args.dtype, args.worker_parallel_batches, args)
        return
    if args.profile:
        profile_embeddings(args)
    if not args.skip_embeddings:
        bench_embeddings(args)
    if args.fill_mask_texts:
        bench_fill_mask(args)


if __name__ == "__main__":
    main()
