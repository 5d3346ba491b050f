"""The student network: the teacher's embeddings, head and a subset of its layers (DistilBERT's
initialisation), or a fresh smaller network from the size grid; in BERT's or DistilBERT's layout."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from bertforge.errors import ConfigError
from bertforge.model import BertConfig

LAYOUTS = ("bert", "distilbert")


@dataclass
class TeacherMatch:
    """Where the student's parts sit in the teacher, for the losses that compare them; None where they do not
    match one for one (a narrower fresh or pre-trained student)."""

    hidden_channels: torch.Tensor | None = None  # the teacher's index of each student hidden channel
    attention_map: list[tuple[int, torch.Tensor]] | None = None  # per student layer: its teacher layer and heads


def teacher_layer_indices(teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher layers (0-based) a student of `student_layers` starts from: evenly spaced from the
    first, so half the layers gives every other one as DistilBERT did (12 → 0, 2, 4, 6, 8, 10;
    6 → 0, 2, 4)."""
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(f"--student-layers {student_layers}: the teacher has {teacher_layers} layers; "
                          f"give 1 to {teacher_layers}")
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def _layout_changes(teacher: BertConfig, layout: str) -> dict:
    """Config changes for a student saved in `layout`. A DistilBERT student has no token types (as
    DistilBERT dropped them) and trains that way, so saving it needs no approximation."""
    if layout not in LAYOUTS:
        raise ConfigError(f"--save-as {layout!r}: use one of {', '.join(LAYOUTS)}")
    if layout == "bert" and teacher.is_distilbert:
        raise ConfigError("--save-as bert: the teacher is a DistilBERT without token types; use --save-as distilbert")
    if layout == "bert" or teacher.is_distilbert:
        return {}
    # transformers' DistilBERT defaults differ from BERT's here; name them so the saved config
    # describes the dropout the student was trained with (BERT's QA head has none).
    extra = {**teacher.extra, "seq_classif_dropout": teacher.hidden_dropout_prob, "qa_dropout": 0.0}
    return {"model_type": "distilbert", "type_vocab_size": 0, "extra": extra}


def check_not_larger(student: BertConfig, teacher: BertConfig, option: str) -> None:
    """A student is no deeper and no wider than its teacher (`option` names the argument that chose it)."""
    if student.hidden_size > teacher.hidden_size or student.num_hidden_layers > teacher.num_hidden_layers:
        raise ConfigError(f"{option}: the student (L{student.num_hidden_layers}-H{student.hidden_size}) "
                          f"is larger than its teacher (L{teacher.num_hidden_layers}-H{teacher.hidden_size})")


def student_config(teacher: BertConfig, layers: int | None = None, size: str | None = None,
                   layout: str = "bert", classifier_pooling: str | None = None) -> BertConfig:
    """The student's config: the teacher's with fewer layers (`layers`), or a grid size (`size`,
    e.g. L4-H256) no larger than the teacher; vocabulary, positions and labels are the teacher's, and so is the
    classifier's pooling unless `classifier_pooling` names another."""
    if (layers is None) == (size is None):
        raise ConfigError("give one of --student-layers (a subset of the teacher's layers) and --student-size "
                          "(a fresh smaller network)")
    shared = {"vocab_size": teacher.vocab_size, "max_position_embeddings": teacher.max_position_embeddings,
              "type_vocab_size": teacher.type_vocab_size, "layer_norm_eps": teacher.layer_norm_eps,
              "hidden_act": teacher.hidden_act, "pad_token_id": teacher.pad_token_id, "id2label": teacher.id2label,
              "classifier_pooling": classifier_pooling or teacher.classifier_pooling,
              "extra": dict(teacher.extra), "model_type": teacher.model_type}
    if layers is not None:
        teacher_layer_indices(teacher.num_hidden_layers, layers)
        base = {k: getattr(teacher, k) for k in ("hidden_size", "num_attention_heads", "intermediate_size",
                                                 "hidden_dropout_prob", "attention_probs_dropout_prob",
                                                 "initializer_range")}
        config = BertConfig(**base, **shared, num_hidden_layers=layers)
    else:
        config = BertConfig.from_size(size, **shared)
        check_not_larger(config, teacher, f"--student-size {size}")
    changes = _layout_changes(teacher, layout)
    return BertConfig(**{**{k: getattr(config, k) for k in config.__dataclass_fields__}, **changes})


def copy_teacher_weights(teacher: torch.nn.Module, student: torch.nn.Module, indices: list[int]) -> None:
    """Load into `student` the teacher's embeddings, pooler, head and layers `indices` (student
    layer j ← teacher layer indices[j]). Into a DistilBERT student (no token types) the embedding of
    token type 0 is folded into the position table, so segment-A inputs embed exactly as before."""
    state = teacher.state_dict()
    layer = re.compile(r"^(bert\.encoder\.layers\.|encoder\.layers\.)(\d+)\.(.*)$")
    position = {str(t): s for s, t in enumerate(indices)}
    copied = {}
    for name, tensor in state.items():
        match = layer.match(name)
        if match is None:
            copied[name] = tensor
        elif match[2] in position:
            copied[f"{match[1]}{position[match[2]]}.{match[3]}"] = tensor
    prefix = "bert." if student.base_model is not student else ""
    token_types = f"{prefix}embeddings.token_type.weight"
    if token_types in copied and student.base_model.embeddings.token_type is None:
        positions = f"{prefix}embeddings.position.weight"
        copied[positions] = copied[positions] + copied.pop(token_types)[0]
    missing, unexpected = student.load_state_dict(copied, strict=False)
    # The tied MLM decoder is the word embedding under a second name; nothing else may be left out.
    missing = [name for name in missing if name != "mlm.word_embeddings.weight"]
    if missing or unexpected:
        raise ConfigError(f"the teacher's weights do not fit the student: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}")
