"""Knowledge distillation on the training engine: task distillation from a fine-tuned teacher
(`task`), optionally on perturbed copies of the training texts too (`augment`), DistilBERT's general
distillation on pre-training shards (`general`), the student network (`student`), the teacher's
cached outputs (`teacher`) and the losses (`losses`)."""

from bertforge.distillation.augment import augment
from bertforge.distillation.general import GeneralDistillConfig, distil_general
from bertforge.distillation.student import (LAYOUTS, TeacherMatch, copy_teacher_weights, student_config,
                                            teacher_layer_indices)
from bertforge.distillation.task import DistillArgs, DistillationObjective, distil
from bertforge.distillation.teacher import add_teacher_logits, output_kind, unlabelled

__all__ = ["LAYOUTS", "DistillArgs", "DistillationObjective", "GeneralDistillConfig", "TeacherMatch",
           "add_teacher_logits", "augment", "copy_teacher_weights", "distil", "distil_general", "output_kind",
           "student_config", "teacher_layer_indices", "unlabelled"]
