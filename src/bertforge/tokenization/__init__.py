"""Text → token ids: BERT's WordPiece tokenizer, and training new vocabularies (WordPiece,
BPE, byte-level BPE) with their encoders."""

from bertforge.tokenization.basic import BasicTokenizer
from bertforge.tokenization.bert_tokenizer import BatchEncoding, BertTokenizer
from bertforge.tokenization.bpe import BPE, ByteLevelBPE
from bertforge.tokenization.corpus import read_corpus
from bertforge.tokenization.trainers import train_bpe, train_byte_level_bpe, train_vocab, train_wordpiece
from bertforge.tokenization.wordpiece import WordPiece, load_vocab

__all__ = [
    "BPE", "BasicTokenizer", "BatchEncoding", "BertTokenizer", "ByteLevelBPE", "WordPiece", "load_vocab",
    "read_corpus", "train_bpe", "train_byte_level_bpe", "train_vocab", "train_wordpiece",
]
