"""Heads on top of the encoder: pre-training (MLM + NSP) and the fine-tuning tasks.

Each class names the Hugging Face architecture it matches (`architecture`), so saved
checkpoints load in transformers' class of the same name and the other way round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bertforge.errors import InputError
from bertforge.model.bert import ACTIVATION_FUNCTIONS, BertModel, shape_of
from bertforge.model.config import BertConfig
from bertforge.model.dropout import Dropout
from bertforge.model.linear import Linear, capturing_graph, linear
from bertforge.model.outputs import ModelOutput
from bertforge.model.pretrained import BertPreTrainedModel, resized_rows

IGNORE_INDEX = -100  # label value for positions that carry no loss (as in PyTorch and transformers)


def check_labels(name: str, labels, shape: tuple[int, ...], classes: int | None = None, *, flat: bool = False,
                 ids: bool = True) -> None:
    """Labels given to a head's forward, named before torch's loss fails on them deep inside.

    `shape`: what the loss reads; `flat`: the loss reads them flattened (transformers' view(-1)), so any layout of
    as many entries will do. `ids`: integers as torch's cross-entropy takes them (int64 or uint8), each below
    `classes` where given or IGNORE_INDEX (no loss); else any numbers (regression, multi-label). Values are read on
    the CPU only: on a GPU reading them would wait for the device at every step (torch's device assert stops a bad
    one there), and not while a graph is captured, whose inputs are examples."""
    if capturing_graph():
        return
    if not isinstance(labels, torch.Tensor) or (labels.numel() != math.prod(shape) if flat else labels.shape != shape):
        raise InputError(f"{name} must be a tensor shaped {tuple(shape)}, got {shape_of(labels)}")
    if not ids:
        return
    if labels.dtype not in (torch.long, torch.uint8):
        raise InputError(f"{name} must hold integer ids (torch.long), got {labels.dtype}")
    if classes is not None and labels.device.type == "cpu":
        outside = labels[(labels >= classes) | (labels < 0) & (labels != IGNORE_INDEX)]
        if outside.numel():
            raise InputError(f"{name} holds {int(outside[0])}, outside 0..{classes - 1} "
                             f"(or {IGNORE_INDEX} for no loss)")


class BertHeadModel(BertPreTrainedModel):
    """A task head on `self.bert`, the shared encoder."""

    add_pooling_layer = True

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=self.add_pooling_layer)


class MaskedLMHead(nn.Module):
    """dense → activation → LayerNorm → a vocabulary projection tied to the token embeddings, or with
    `tie_word_embeddings: false` in the config a matrix of its own (`decoder`)."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.activation = ACTIVATION_FUNCTIONS[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if config.tie_word_embeddings:
            self.word_embeddings = word_embeddings  # shared, not a copy: the paper ties them
        else:
            self.decoder = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def resize_vocabulary(self, rows: int, mean_resizing: bool, std: float) -> None:
        """Follow `resize_token_embeddings`: the bias, and an untied decoder, to `rows` rows. As in transformers,
        a tied head's new bias entries are zeros (its tying pads them) and an untied head's follow `mean_resizing`."""
        self.bias = resized_rows(self.bias, rows, mean_resizing and hasattr(self, "decoder"), std)
        if hasattr(self, "decoder"):
            self.decoder.weight = resized_rows(self.decoder.weight, rows, mean_resizing, std)
            self.decoder.out_features = rows

    @property
    def projection(self) -> nn.Module:
        """The module whose `weight` (vocab_size, hidden) projects onto the vocabulary: the token embeddings or
        the decoder (transformers' `get_output_embeddings`)."""
        return self.word_embeddings if hasattr(self, "word_embeddings") else self.decoder

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(self.activation(self.dense(hidden)))
        return linear(hidden, self.projection.weight, self.bias)


@dataclass
class PreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None
    mlm_loss: torch.Tensor | None
    nsp_loss: torch.Tensor | None
    # (batch, seq, vocab); with labels and labelled_logits_only, the labelled positions' alone: (n, vocab)
    prediction_logits: torch.Tensor | None
    mlm_labels: torch.Tensor | None  # with labelled_logits_only: the labels of prediction_logits' rows
    seq_relationship_logits: torch.Tensor | None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    tuple_fields = ("loss", "prediction_logits", "seq_relationship_logits", "hidden_states", "attentions")

    @property
    def logits(self) -> torch.Tensor | None:
        """transformers' name in BertForMaskedLM's and BertForNextSentencePrediction's outputs."""
        return self.prediction_logits if self.prediction_logits is not None else self.seq_relationship_logits


def _masked_lm(head: MaskedLMHead, hidden: torch.Tensor, labels: torch.Tensor | None, labelled_only: bool):
    """Vocabulary logits (batch, seq, vocab) and, with labels, the loss over the labelled positions, as in
    transformers. `labelled_only` (pre-training's and distillation's choice): the logits of the labelled positions
    alone, (n, vocab), with their labels: the projection to 30k words is the most expensive matrix in a small BERT,
    and ~85% of its rows would be wasted."""
    if labels is None:
        return head(hidden), None, None
    check_labels("labels", labels, hidden.shape[:2], head.bias.shape[0])
    selected = labels != IGNORE_INDEX
    logits = head(hidden[selected] if labelled_only else hidden)
    targets = labels[selected]
    scored = logits if labelled_only else logits[selected]
    loss = F.cross_entropy(scored.float(), targets) if targets.numel() else logits.sum() * 0.0  # no label: not NaN
    return logits, targets if labelled_only else None, loss


def _next_sentence_loss(logits: torch.Tensor, label: torch.Tensor | None, name: str = "next_sentence_label"):
    """NSP's loss, None without a label: 0 (B follows A) or 1 (B is random) per pair."""
    if label is None:
        return None
    check_labels(name, label, logits.shape[:1], 2)
    return F.cross_entropy(logits.float(), label)


class BertForPreTraining(BertHeadModel):
    architecture = "BertForPreTraining"

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word)
        self.nsp = Linear(config.hidden_size, 2)
        self.init_head_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                next_sentence_label=None, output_hidden_states=None, output_attentions=None,
                position_ids=None, inputs_embeds=None, labelled_logits_only=False) -> PreTrainingOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                        position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True)
        logits, targets, mlm_loss = _masked_lm(self.mlm, out.last_hidden_state, labels, labelled_logits_only)
        nsp_logits = self.nsp(out.pooler_output)
        nsp_loss = _next_sentence_loss(nsp_logits, next_sentence_label)
        losses = [x for x in (mlm_loss, nsp_loss) if x is not None]
        return PreTrainingOutput(sum(losses) if losses else None, mlm_loss, nsp_loss, logits, targets,
                                 nsp_logits, out.hidden_states, out.attentions)


class BertForMaskedLM(BertHeadModel):
    architecture = "BertForMaskedLM"
    add_pooling_layer = False

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word)
        self.init_head_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                output_hidden_states=None, output_attentions=None,
                position_ids=None, inputs_embeds=None, labelled_logits_only=False) -> PreTrainingOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                        position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True)
        logits, targets, loss = _masked_lm(self.mlm, out.last_hidden_state, labels, labelled_logits_only)
        return PreTrainingOutput(loss, loss, None, logits, targets, None, out.hidden_states, out.attentions)


class BertForNextSentencePrediction(BertHeadModel):
    architecture = "BertForNextSentencePrediction"

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.nsp = Linear(config.hidden_size, 2)
        self.init_head_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, next_sentence_label=None,
                labels=None, position_ids=None, inputs_embeds=None) -> PreTrainingOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids=position_ids,
                        inputs_embeds=inputs_embeds, return_dict=True)
        logits = self.nsp(out.pooler_output)
        if next_sentence_label is None:  # transformers 5's name
            loss = _next_sentence_loss(logits, labels, "labels")
        else:
            loss = _next_sentence_loss(logits, next_sentence_label)
        return PreTrainingOutput(loss, None, loss, None, None, logits)


@dataclass
class TaskOutput(ModelOutput):
    loss: torch.Tensor | None
    logits: torch.Tensor  # classification: (batch, labels); tokens: (batch, seq, labels); QA: (batch, seq, 2)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # with output_hidden_states: embeddings + one per layer
    attentions: tuple[torch.Tensor, ...] | None = None  # with output_attentions: (batch, heads, seq, seq) per layer


@dataclass
class QuestionAnsweringOutput(TaskOutput):
    """`logits` (batch, seq, 2), and its two columns as transformers names them."""

    tuple_fields = ("loss", "start_logits", "end_logits", "hidden_states", "attentions")

    @property
    def start_logits(self) -> torch.Tensor:
        return self.logits[..., 0]

    @property
    def end_logits(self) -> torch.Tensor:
        return self.logits[..., 1]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(batch, seq, hidden) → (batch, hidden): the mean over each sequence's real tokens."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask[..., None].to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)  # a row with no real token: zeros


def classifier_dropout(config: BertConfig, distilbert_key: str | None = None) -> float:
    """The classifier's dropout: transformers' `classifier_dropout` where set, DistilBERT's own key, else
    the hidden layers' rate."""
    extra = config.extra
    if extra.get("classifier_dropout") is not None:
        return extra["classifier_dropout"]
    return extra.get(distilbert_key, config.hidden_dropout_prob) if distilbert_key else config.hidden_dropout_prob


def sequence_classification_loss(config: BertConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """transformers' rule: the config's `problem_type`, else regression (mean squared error) for one
    output, single-label cross-entropy for integer labels, multi-label binary cross-entropy for float ones."""
    problem_type = config.problem_type
    floats = isinstance(labels, torch.Tensor) and labels.is_floating_point()
    if problem_type is None:
        problem_type = ("regression" if config.num_labels == 1 else "multi_label_classification" if floats
                        else "single_label_classification")
    if problem_type == "regression" and config.num_labels == 1:
        check_labels("labels", labels, logits.shape[:1], flat=True, ids=False)
        return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
    if problem_type != "single_label_classification":  # one value per label
        read_as = "" if config.problem_type else " (floats, so one 0/1 per label: multi-label)"
        check_labels("labels" + read_as, labels, logits.shape, ids=False)
        loss = F.mse_loss if problem_type == "regression" else F.binary_cross_entropy_with_logits
        return loss(logits, labels.to(logits.dtype))
    check_labels("labels", labels, logits.shape[:1], config.num_labels, flat=True)
    return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))


class BertForSequenceClassification(BertHeadModel):
    """The pooled output ([CLS] through the pooler, or with classifier_pooling "mean" the mean of the
    last layer's token vectors) → dropout → linear."""

    architecture = "BertForSequenceClassification"

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.dropout = Dropout(classifier_dropout(config, "seq_classif_dropout"))
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.init_head_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                output_hidden_states=None, output_attentions=None,
                position_ids=None, inputs_embeds=None) -> TaskOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                        position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True)
        if self.config.classifier_pooling == "mean":
            pooled = mean_pool(out.last_hidden_state, attention_mask)
        else:
            pooled = out.pooler_output
        logits = self.classifier(self.dropout(pooled))
        loss = None if labels is None else sequence_classification_loss(self.config, logits.float(), labels)
        return TaskOutput(loss, logits, out.hidden_states, out.attentions)


class BertForTokenClassification(BertHeadModel):
    """Every token's vector → dropout → linear; positions labelled -100 carry no loss."""

    architecture = "BertForTokenClassification"
    add_pooling_layer = False

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.dropout = Dropout(classifier_dropout(config))
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.init_head_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                output_hidden_states=None, output_attentions=None,
                position_ids=None, inputs_embeds=None) -> TaskOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                        position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True)
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            check_labels("labels", labels, logits.shape[:2], self.config.num_labels, flat=True)
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        return TaskOutput(loss, logits, out.hidden_states, out.attentions)


class BertForQuestionAnswering(BertHeadModel):
    """One linear layer gives each token a start score (S·R_i) and an end score (E·R_i)."""

    architecture = "BertForQuestionAnswering"
    add_pooling_layer = False

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.dropout = Dropout(config.extra.get("qa_dropout", 0.0))  # DistilBERT's; BERT's QA head has none
        self.qa_outputs = Linear(config.hidden_size, 2)
        self.init_head_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, start_positions=None,
                end_positions=None, output_hidden_states=None, output_attentions=None,
                position_ids=None, inputs_embeds=None) -> TaskOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                        position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True)
        logits = self.qa_outputs(self.dropout(out.last_hidden_state))
        loss = None
        if start_positions is not None and end_positions is not None:
            # transformers' rule: a position outside the sequence (an answer cut off) is clamped to its
            # length and ignored, a negative one to 0
            for name, positions in (("start_positions", start_positions), ("end_positions", end_positions)):
                check_labels(name, positions, logits.shape[:1], flat=True)
            outside = logits.size(1)
            start_logits, end_logits = logits.float().unbind(-1)
            loss = sum(F.cross_entropy(side, positions.reshape(-1).clamp(0, outside), ignore_index=outside)
                       for side, positions in ((start_logits, start_positions), (end_logits, end_positions))) / 2
        return QuestionAnsweringOutput(loss, logits, out.hidden_states, out.attentions)


ARCHITECTURES = {cls.architecture: cls for cls in (
    BertModel, BertForPreTraining, BertForMaskedLM, BertForNextSentencePrediction,
    BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering)}
