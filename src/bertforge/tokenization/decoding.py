"""ids → text: `decode`, `batch_decode` and `convert_tokens_to_string` of a WordPiece tokenizer, joined as
transformers' WordPiece decoder joins them."""

from __future__ import annotations

from bertforge.tokenization.encoding import as_int_list, is_one_id

# What tokenizers' WordPiece decoder joins after the punctuation, in every decode; transformers'
# clean_up_tokenization (`clean_up_tokenization_spaces`) joins " ' " as well.
DECODER_CLEANUP = ((" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
CONTRACTIONS = ((" ' ", "'"), *DECODER_CLEANUP)


class Decoding:
    """The decoding half of `BertTokenizer`: it reads `convert_ids_to_tokens`, `wordpiece.prefix`,
    `clean_up_tokenization_spaces` and the ids `decode(skip_special_tokens=True)` leaves out from it."""

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        """Join the ids' pieces (`convert_tokens_to_string`). With `clean_up_tokenization_spaces` (default: the
        tokenizer's setting, from its tokenizer_config.json) " ' " is joined too ("it ' s" → "it's")."""
        ids = [int(ids)] if is_one_id(ids) else as_int_list(ids)
        if skip_special_tokens:  # every special added token, listed in all_special_tokens or not (transformers')
            ids = [i for i in ids if i not in self._decode_skips]
        text = self.convert_tokens_to_string(self.convert_ids_to_tokens(ids))
        if self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces:
            for spaced, joined in CONTRACTIONS:
                text = text.replace(spaced, joined)
        return text

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Pieces back into text: `##` pieces glue to the previous one (a leading `##` piece is kept as it is,
        like the reference decoder); no space is left before `.`, `,`, `?`, `!` and the pieces of DECODER_CLEANUP."""
        text = ""
        for i, token in enumerate(tokens):
            if i > 0 and token.startswith(self.wordpiece.prefix):
                text += token[len(self.wordpiece.prefix):]
                continue
            token = token if i == 0 else " " + token
            text += token.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",")
        for spaced, joined in DECODER_CLEANUP:
            text = text.replace(spaced, joined)
        return text

    def batch_decode(self, batch, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in batch]
