"""Text → token ids: BERT's WordPiece tokenizer (and, in `trainers`, vocabulary training)."""

from bertforge.tokenization.basic import BasicTokenizer
from bertforge.tokenization.bert_tokenizer import BatchEncoding, BertTokenizer
from bertforge.tokenization.wordpiece import WordPiece, load_vocab

__all__ = ["BasicTokenizer", "BatchEncoding", "BertTokenizer", "WordPiece", "load_vocab"]
