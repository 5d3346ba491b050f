"""Pre-training BERT from scratch: corpus → instances → masked shards → MLM + NSP training."""

from bertforge.pretraining.corpus import read_documents
from bertforge.pretraining.instances import IS_NEXT, NOT_NEXT, create_instances, truncate_seq_pair
from bertforge.pretraining.masking import MaskingConfig, mask_batch, mask_sequence
from bertforge.pretraining.shards import PrepareOptions, PretrainingData, prepare

__all__ = ["IS_NEXT", "NOT_NEXT", "MaskingConfig", "PrepareOptions", "PretrainingData", "create_instances",
           "mask_batch", "mask_sequence", "prepare", "read_documents", "truncate_seq_pair"]
