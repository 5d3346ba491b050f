"""Fine-tuning pads its batches with the tokenizer's [PAD], as transformers' collator does: question answering's
softmax runs over padded positions too, so a vocabulary whose [PAD] is not id 0 trains on its own pad id."""

from __future__ import annotations

from bertforge import BertTokenizer
from bertforge.model import BertConfig, BertForQuestionAnswering
from bertforge.tasks import FinetuneArgs, finetune
from bertforge.tasks.squad import QuestionAnsweringTask
from bertforge.tasks.trainer import TaskObjective

VOCAB = ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "[PAD]", "who", "wrote", "it", "she", "did"]  # [PAD] is id 4


class PaddingSeen(TaskObjective):
    """The head's loss, recording the ids the model was given at padded positions."""

    def __init__(self):
        super().__init__()
        self.padding = set()

    def loss(self, model, batch, totals):
        self.padding.update(batch["input_ids"][batch["attention_mask"] == 0].tolist())
        return super().loss(model, batch, totals)


def test_question_answering_batches_are_padded_with_the_tokenizers_pad_id(tmp_path):
    tokenizer = BertTokenizer({token: i for i, token in enumerate(VOCAB)})
    assert tokenizer.pad_token_id == 4
    features = [dict(input_ids=[1, 5, 6, 7, 2, 8, 9, 2][:length], token_type_ids=[0] * length,
                     start_positions=min(5, length - 2), end_positions=min(5, length - 2)) for length in (8, 6, 5, 8)]

    def model():
        return BertForQuestionAnswering(BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32,
                                                   max_position_embeddings=16, pad_token_id=4))

    objective = PaddingSeen()
    finetune(model, QuestionAnsweringTask(), features, None, FinetuneArgs(
        output_dir=str(tmp_path), max_steps=2, batch_size=4, learning_rate=1e-3, progress=False), tokenizer,
        objective=objective)
    assert objective.padding == {4}  # it was {0}


def test_distillation_batches_are_padded_with_the_tokenizers_pad_id():
    """Task distillation runs on fine-tuning's loop with its own batches (the teacher's outputs beside the inputs):
    they pad with the same id."""
    import numpy as np

    from bertforge.distillation.teacher import DistillationBatches

    features = [dict(input_ids=[1, 5, 6, 7, 2, 8, 9, 2][:length], token_type_ids=[0] * length,
                     start_positions=1, end_positions=1, teacher_logits=np.zeros((length, 2), dtype=np.float32))
                for length in (8, 5)]
    batch = DistillationBatches(features, 2, seed=0, smallest=1, kind="span", pad_token_id=4).micro_batches(0, 0, 1, 1)[0]
    assert set(batch["input_ids"][batch["attention_mask"] == 0].tolist()) == {4}
