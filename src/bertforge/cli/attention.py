"""`bertforge attention`: every layer's and head's attention for a sentence or pair, as PNG and HTML."""

from __future__ import annotations

from pathlib import Path

import click

from bertforge.cli.io import check_output, check_texts, model_options, pipeline_from_options
from bertforge.errors import InputError
from bertforge.io.atomic import check_output_file


@click.command()
@click.argument("text")
@click.argument("text_pair", required=False)
@click.option("--png", type=click.Path(path_type=Path), default=None, help="Write a layers x heads grid of heatmaps.")
@click.option("--html", type=click.Path(path_type=Path), default=None,
              help="Write a self-contained page: pick a layer and head, hover a token to see what it attends to.")
@model_options
def attention(text, text_pair, png, html, **options):
    """Attention maps of TEXT (and TEXT_PAIR) for every layer and head.

    \b
    Examples:
      bertforge attention "The animal didn't cross the street because it was too tired" --html attention.html
      bertforge attention "Paris is a beautiful city" "I love Paris" --png attention.png --html attention.html
    """
    if png is None and html is None:
        raise InputError("choose an output: --png FILE and/or --html FILE")
    check_texts([text, text_pair])
    check_output_file(png, "--png")  # any format matplotlib writes: _check_png_format
    _check_png_format(png)
    check_output(html, (".html", ".htm"), option="--html")
    maps = pipeline_from_options("attention", options, progress=False)(text, text_pair)
    layers, heads, seq, _ = maps.weights.shape
    if png is not None:
        maps.save_png(png)
    if html is not None:
        maps.save_html(html)
    for path in (png, html):
        if path is not None:
            click.echo(f"wrote {path} ({layers} layers x {heads} heads, {seq} tokens)")


def _check_png_format(png: Path | None) -> None:
    """Refuse a --png suffix matplotlib cannot write before the model runs, not after the HTML is written."""
    if png is None or not png.suffix:
        return
    from matplotlib.backend_bases import FigureCanvasBase

    supported = FigureCanvasBase.get_supported_filetypes()
    if png.suffix[1:].lower() not in supported:
        raise InputError(f"--png {png}: matplotlib cannot write {png.suffix} files; use one of: "
                         f"{', '.join('.' + s for s in sorted(supported))} (or no suffix, for PNG)")
