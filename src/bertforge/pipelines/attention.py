"""Attention maps: every layer and head for a sentence or a pair, as a PNG grid (matplotlib) and a
self-contained HTML page (no network) where one picks a layer and head and hovers over a token
to see what it attends to."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertforge.errors import InputError
from bertforge.io.atomic import atomic_path, write_text
from bertforge.pipelines.base import Pipeline
from bertforge.tokenization.basic import has_text


@dataclass
class AttentionMaps:
    tokens: list[str]
    segment_ids: list[int]
    weights: np.ndarray  # (layers, heads, seq, seq): row i = how token i spreads its attention

    def save_png(self, path: str | Path, dpi: int = 100) -> Path:
        """A layers × heads grid of heatmaps; token labels on the first column and bottom row. The suffix
        of `path` chooses the format (PNG when there is none)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        layers, heads, seq, _ = self.weights.shape
        cell = max(1.6, 0.12 * seq)
        fig, axes = plt.subplots(layers, heads, figsize=(cell * heads, cell * layers), squeeze=False)
        for layer in range(layers):
            for head in range(heads):
                ax = axes[layer][head]
                ax.imshow(self.weights[layer, head], cmap="viridis", vmin=0.0, vmax=1.0)
                ax.set_xticks([])
                ax.set_yticks([])
                if layer == 0:
                    ax.set_title(f"head {head + 1}", fontsize=8)
                if head == 0:
                    ax.set_ylabel(f"layer {layer + 1}", fontsize=8)
        fig.suptitle(" ".join(self.tokens)[:200], fontsize=10)
        # Fixed margins: tight_layout measures every one of the layers × heads axes, slowly.
        fig.subplots_adjust(left=0.03, right=0.99, bottom=0.01, top=1 - 0.9 / (cell * layers), wspace=0.1, hspace=0.25)
        path = Path(path)
        with atomic_path(path) as temporary:
            # The format is the target's suffix (PNG without one), never the temporary file's.
            fig.savefig(temporary, dpi=dpi, format=path.suffix[1:].lower() or "png")
        plt.close(fig)
        return path

    def to_html(self) -> str:
        data = {"tokens": self.tokens, "segments": self.segment_ids,
                "weights": np.round(self.weights, 4).tolist()}
        # "</" inside a <script> would end it early.
        payload = json.dumps(data).replace("</", "<\\/")
        title = html.escape(" ".join(self.tokens)[:120])
        return HTML_TEMPLATE.replace("__TITLE__", title).replace("__DATA__", payload)

    def save_html(self, path: str | Path) -> Path:
        path = Path(path)
        write_text(path, self.to_html())
        return path


class AttentionPipeline(Pipeline):
    """`pipe(text, text_pair=None)` → AttentionMaps for every layer and head."""

    task = "attention"

    def __call__(self, text: str, text_pair: str | None = None) -> AttentionMaps:
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        if not has_text(text):
            raise InputError("attention needs a non-empty sentence")
        if text_pair is not None:
            if not isinstance(text_pair, str):
                raise InputError(f"text_pair must be a string, got {type(text_pair).__name__}")
            if not has_text(text_pair):
                raise InputError("the second sentence of the pair is empty")
        encoded = self.encode([text], [text_pair] if text_pair is not None else None)[0]

        def run(batch):
            out = self.bert(**self.padded(batch), output_attentions=True)
            return [np.stack([w[0].float().cpu().numpy() for w in out.attentions])]

        weights = self.in_length_order([encoded], run)[0]
        return AttentionMaps(self.tokenizer.convert_ids_to_tokens(encoded.ids), list(encoded.type_ids), weights)


HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Attention: __TITLE__</title>
<style>
body { font-family: sans-serif; margin: 1.5em; }
.tokens { display: flex; flex-wrap: wrap; gap: 4px; margin: 0.5em 0 1.5em; }
.token { padding: 3px 6px; border: 1px solid #ccc; border-radius: 3px; cursor: default; }
.token.seg1 { border-color: #e0a040; }
.token.active { outline: 2px solid #c00; }
table.matrix { border-collapse: collapse; font-size: 11px; }
table.matrix td { width: 14px; height: 14px; padding: 0; }
table.matrix th { font-weight: normal; padding: 0 4px; white-space: nowrap; }
table.matrix thead th { writing-mode: vertical-rl; }
</style></head>
<body>
<h1>Attention</h1>
<label>Layer <select id="layer"></select></label>
<label>Head <select id="head"></select></label>
<p>Hover over a token in the first row: the second row shows how much attention it pays to each token.</p>
<div class="tokens" id="from"></div>
<div class="tokens" id="to"></div>
<table class="matrix" id="matrix"></table>
<script>
const DATA = __DATA__;
const layerSelect = document.getElementById("layer");
const headSelect = document.getElementById("head");
function option(select, value, text) {
  const o = document.createElement("option"); o.value = value; o.textContent = text; select.appendChild(o);
}
DATA.weights.forEach((_, i) => option(layerSelect, i, String(i + 1)));
DATA.weights[0].forEach((_, i) => option(headSelect, i, String(i + 1)));
option(headSelect, "mean", "mean of heads");

function currentMatrix() {
  const layer = DATA.weights[Number(layerSelect.value)];
  if (headSelect.value !== "mean") return layer[Number(headSelect.value)];
  return layer[0].map((row, i) => row.map((_, j) => layer.reduce((s, h) => s + h[i][j], 0) / layer.length));
}
function tokenRow(id) {
  const row = document.getElementById(id); row.innerHTML = "";
  return DATA.tokens.map((t, i) => {
    const span = document.createElement("span");
    span.className = "token seg" + DATA.segments[i]; span.textContent = t; row.appendChild(span); return span;
  });
}
function render() {
  const m = currentMatrix();
  const from = tokenRow("from"), to = tokenRow("to");
  from.forEach((span, i) => {
    span.addEventListener("mouseenter", () => {
      from.forEach(s => s.classList.remove("active")); span.classList.add("active");
      to.forEach((s, j) => { s.style.background = "rgba(30, 90, 200, " + m[i][j] + ")"; s.title = m[i][j].toFixed(3); });
    });
  });
  const table = document.getElementById("matrix"); table.innerHTML = "";
  const head = table.createTHead().insertRow(); head.appendChild(document.createElement("th"));
  DATA.tokens.forEach(t => { const th = document.createElement("th"); th.textContent = t; head.appendChild(th); });
  const body = table.createTBody();
  m.forEach((row, i) => {
    const tr = body.insertRow(); const th = document.createElement("th"); th.textContent = DATA.tokens[i]; tr.appendChild(th);
    row.forEach(w => { const td = tr.insertCell(); td.style.background = "rgba(30, 90, 200, " + w + ")"; td.title = w.toFixed(3); });
  });
}
layerSelect.addEventListener("change", render);
headSelect.addEventListener("change", render);
render();
</script>
</body></html>
"""
