"""Every Unicode code point through bertforge's tokenizer and the reference (`tokenizers`, via
transformers' `BertTokenizerFast`): how many disagree, and in which Unicode categories.

Each code point c is tokenized inside a word, as "a" + c + "b", so cleaning, punctuation, CJK and
accent handling all show. Surrogates (U+D800-U+DFFF) are skipped: they cannot be encoded.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/unicode_parity.py
"""

from __future__ import annotations

import unicodedata
from collections import Counter

from transformers import AutoTokenizer

from bertforge.model import default_model_path
from bertforge.tokenization import BertTokenizer


def main() -> None:
    directory = default_model_path()
    reference = AutoTokenizer.from_pretrained(str(directory))
    ours = BertTokenizer.from_pretrained(directory)
    assert reference("I love Paris")["input_ids"] == [101, 1045, 2293, 3000, 102]  # not the [UNK] trap
    differing = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        text = "a" + chr(cp) + "b"
        if reference(text)["input_ids"] != ours(text)["input_ids"]:
            differing.append(cp)
    print(f"Unicode {unicodedata.unidata_version} (Python's tables): {len(differing)} code points tokenized differently")
    print("by category:", dict(Counter(unicodedata.category(chr(cp)) for cp in differing).most_common()))
    print("first:", " ".join(f"U+{cp:04X}" for cp in differing[:20]))


if __name__ == "__main__":
    main()
