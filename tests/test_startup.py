"""Loading a tokenizer stays light: no torch, and the word pattern built without a scan of all of
Unicode (issue 19)."""

from __future__ import annotations

import subprocess
import sys
import unicodedata

from bertforge.tokenization.basic import is_punctuation, punctuation_chars

LOAD_TOKENIZER = """
import sys
from bertforge import BertTokenizer
from bertforge.paths import default_model_path
tokenizer = BertTokenizer.from_pretrained()
assert tokenizer("I love Paris")["input_ids"] == [101, 1045, 2293, 3000, 102]
print(default_model_path())
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "safetensors", "transformers")))
"""


def test_loading_a_tokenizer_imports_no_torch():
    # A fresh interpreter: this one has long since imported torch for other tests.
    out = subprocess.run([sys.executable, "-c", LOAD_TOKENIZER], capture_output=True, text=True, check=True).stdout
    path, modules = out.splitlines()
    assert modules == "[]"
    assert path.endswith("model")


def test_default_paths_are_where_they_were():
    from bertforge.model import default_model_path
    from bertforge.paths import bundled_model_path, default_pretraining_model_path

    assert (default_model_path() / "config.json").is_file()
    assert default_pretraining_model_path() == bundled_model_path(
        "bertforge-minilm-gutenberg", "unused")


def test_punctuation_outside_planes_0_and_1_does_not_exist():
    """The fast scan stops at U+20000: the whole range must give the same characters."""
    everything = "".join(chr(cp) for cp in range(sys.maxunicode + 1) if is_punctuation(chr(cp)))
    assert punctuation_chars() == everything
    assert all(unicodedata.category(c).startswith("P") or c.isascii() for c in everything)
    assert {"!", "¿", "—", "、", "𝪋"} <= set(everything)  # 𝪋 U+1DA8B, plane 1
