"""Texts shared by the vocabulary-training tests: SPEC §1's worked example corpus and strings that are hard to
tokenize (emoji, CJK, combining marks, control characters, odd spaces)."""

from __future__ import annotations

SPEC_CORPUS = {"cost": 2, "best": 2, "menu": 1, "men": 1, "camel": 1}
SPEC_TEXT = [" ".join(word for word, n in SPEC_CORPUS.items() for _ in range(n))]

HARD_STRINGS = [
    "I 🥰 emoji 😀✨ and ❤️ hearts, 👩‍👩‍👧 family, 🇫🇷 flag",
    "北京欢迎你 and 東京タワー, 한국어 텍스트",
    "e\u0301 combining acute, a\u0308\u0304 stacked marks, नमस्ते दुनिया",
    "tab\there\nnewline\rcarriage\x0bvtab\x0cform feed\x00nul\x1c\x1d\x1e\x1fseparators\x85nel\x7fdel",
    "zero\u200bwidth\u200djoiner\ufeffbom and\u00a0nbsp\u2028line\u2029para\u3000ideographic space",
    "  leading, trailing and   runs of spaces   \n\n\n  ",
    "can't won't it's they're we've I'm you'll he'd 'quoted' ''",
    "ΣΑΣ İstanbul ǅemal ﬁne ½ ² ① Ⅻ ٣ ๓ 1,234.5e-6",
    "\ue000 private use, \U0001d400 math bold A, \U00020000 CJK extension B",
    "",
]
