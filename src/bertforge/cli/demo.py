"""`bertforge demo`: the story of the lecture notes, told by the real system, step by step."""

from __future__ import annotations

import time

import click
import torch

from bertforge.model import BertEncoder, default_model_path
from bertforge.tokenization import BertTokenizer


def heading(title: str) -> None:
    click.secho(f"\n== {title} ==", bold=True)


def word_vector(model, tokenizer, sentence: str, word: str, layer: int) -> torch.Tensor:
    """Mean of the piece vectors of the first occurrence of `word`, from hidden state `layer`
    (0 = the context-free input embedding)."""
    batch = tokenizer(sentence, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(batch["input_ids"], token_type_ids=batch["token_type_ids"],
                       output_hidden_states=True).hidden_states[layer][0]
    word_index = next(i for i, w in enumerate(tokenizer.basic.tokenize(sentence)) if w == word)
    pieces = [i for i, w in enumerate(batch.word_ids()) if w == word_index]
    return hidden[pieces].mean(dim=0)


def show_tokenization(tokenizer: BertTokenizer) -> None:
    heading("1. WordPiece tokenization (bert-base-uncased vocabulary)")
    for text in ("Let us start pretraining the model.", "I love Paris"):
        click.echo(f"{text!r:45} -> {' '.join(tokenizer.tokenize(text))}")
    enc = tokenizer("I love Paris", padding="max_length", max_length=7)
    click.echo(f"padded to 7: ids {enc['input_ids']}  attention_mask {enc['attention_mask']}")
    pair = tokenizer("Paris is a beautiful city", "I love Paris")
    click.echo(f"pair segment ids: {pair['token_type_ids']}")


def show_contextual_embeddings(model, tokenizer: BertTokenizer) -> None:
    heading("2. Contextual embeddings (all-MiniLM-L6-v2, a 6-layer BERT)")
    sentences = {
        "python (snake)": ("He got bit by Python", "python"),
        "python (language)": ("Python is my favorite programming language", "python"),
        "bank (river)": ("We sat on the bank of the river", "bank"),
        "bank (money)": ("She opened an account at the bank", "bank"),
    }
    layer = model.config.num_hidden_layers
    vectors = {name: (word_vector(model, tokenizer, s, w, 0), word_vector(model, tokenizer, s, w, layer))
               for name, (s, w) in sentences.items()}
    cosine = torch.nn.functional.cosine_similarity
    for a, b in (("python (snake)", "python (language)"), ("bank (river)", "bank (money)")):
        context_free = cosine(vectors[a][0], vectors[b][0], dim=0).item()
        contextual = cosine(vectors[a][1], vectors[b][1], dim=0).item()
        click.echo(f"{a} vs {b}: cosine {context_free:.3f} in the input embedding, "
                   f"{contextual:.3f} after {layer} layers")


@click.command()
def demo():
    """Run the BERT story end to end on the bundled default model (no network)."""
    start = time.perf_counter()
    tokenizer = BertTokenizer.from_pretrained()
    show_tokenization(tokenizer)
    encoder = BertEncoder.from_pretrained(default_model_path()).bert
    show_contextual_embeddings(encoder, tokenizer)
    click.echo(f"\ndemo finished in {time.perf_counter() - start:.1f} s")
