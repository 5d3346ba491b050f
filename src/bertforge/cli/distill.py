"""`bertforge distill`: a smaller, faster student from a fine-tuned teacher (task distillation) or
from a pre-trained one on prepared shards (`--task mlm`, DistilBERT's general distillation). The
options it shares with `finetune` are finetune's own, so they cannot drift apart."""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path

import click

from bertforge.cli.finetune import (SENTENCE_CLASSIFIER_TASKS, TASKS, check_classifier_pooling, check_held_out,
                                   checkpoint_option, classifier_pooling_option, configure, device_for, load_task_model,
                                   max_length_for, read_data, read_splits, training_args)
from bertforge.cli.finetune import finetune as finetune_command
from bertforge.cli.io import typed
from bertforge.errors import CheckpointError, ConfigError, InputError
from bertforge.io.atomic import check_output_dir

# Minitron ranks channels on 1,024 samples; the first training rows (labelled ones come first) serve.
CALIBRATION_ROWS = 1024
# finetune's options that mean something else here: the model is --teacher, and the task list grows.
NOT_SHARED = {"task", "train_path", "validation_path", "model_dir", "output_dir", "new_head", "classifier_pooling"}


def _student(teacher, student_layers, student_size, save_as, student_dir=None, teacher_tokenizer=None, prune=None,
             calibration=(), classifier_pooling=None):
    """The student factory (called by the engine after seeding), its description, and where its hidden channels
    and attention heads sit in the teacher (`TeacherMatch`)."""
    from bertforge.distillation import TeacherMatch, copy_teacher_weights, student_config, teacher_layer_indices

    if student_dir is not None:  # not with prune: the command refuses the two together
        return _pretrained_student(teacher, teacher_tokenizer, Path(student_dir), student_layers, student_size,
                                   save_as, classifier_pooling)
    if prune:
        return _pruned_student(teacher, student_layers, student_size, save_as, prune, calibration, classifier_pooling)
    if student_layers is None and student_size is None:
        student_layers = max(1, teacher.config.num_hidden_layers // 2)  # DistilBERT's choice
    config = student_config(teacher.config, student_layers, student_size, save_as, classifier_pooling)
    indices = teacher_layer_indices(teacher.config.num_hidden_layers, student_layers) if student_layers else None

    def build():
        student = type(teacher)(config)
        if indices is not None:
            copy_teacher_weights(teacher, student, indices)
        return student

    description = {"layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
                   "from_teacher_layers": indices, "size": student_size, "layout": save_as}
    heads = _same_channels(config.num_attention_heads, teacher.config.num_attention_heads)
    attention_map = [(i, heads) for i in indices] if indices is not None else None  # each layer has all its heads
    return build, description, TeacherMatch(_same_channels(config.hidden_size, teacher.config.hidden_size),
                                            attention_map)


def _same_channels(student: int, teacher: int):
    """The teacher's index of each of the student's channels where the two are as wide: all of them, in order."""
    import torch

    return torch.arange(teacher) if student == teacher else None


def _pruned_student(teacher, student_layers, student_size, save_as, depth, calibration, classifier_pooling=None):
    """A --student-size network cut from the teacher: its evenly spaced layers (as --student-layers takes
    them, `depth` "spaced") or the ones that matter most on `calibration` ("importance"), narrowed to the
    size's width by keeping what matters most on `calibration` (Minitron)."""
    from bertforge.distillation import TeacherMatch, copy_teacher_weights, student_config, teacher_layer_indices
    from bertforge.distillation.prune import important_layers, pruned_config, prune_width

    if student_layers is not None:
        raise ConfigError(f"--student-layers {student_layers} with --prune: --prune cuts the teacher down to a "
                          "--student-size (e.g. L4-H256); give --student-size instead")
    if student_size is None:
        raise ConfigError("--prune needs --student-size, the size to cut the teacher down to (e.g. L4-H256)")
    target = student_config(teacher.config, None, student_size, save_as, classifier_pooling)
    indices = important_layers(teacher, target.num_hidden_layers, calibration) if depth == "importance" else \
        teacher_layer_indices(teacher.config.num_hidden_layers, target.num_hidden_layers)
    wide = type(teacher)(student_config(teacher.config, target.num_hidden_layers, None, save_as, classifier_pooling))
    copy_teacher_weights(teacher, wide, indices)
    config = pruned_config(wide.config, target.hidden_size, target.intermediate_size)
    state, hidden_channels, heads = prune_width(wide, config, calibration)

    def build():
        student = type(teacher)(config)
        student.load_state_dict(state)
        return student

    description = {"layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
                   "attention_heads": config.num_attention_heads, "from_teacher_layers": indices,
                   "layers_chosen_by": depth, "size": student_size, "layout": save_as, "pruned_on": len(calibration)}
    return build, description, TeacherMatch(hidden_channels, list(zip(indices, heads)))


def _pretrained_student(teacher, teacher_tokenizer, student_dir: Path, student_layers, student_size, save_as,
                        classifier_pooling=None):
    """A student that starts from a smaller pre-trained model (Turc et al. 2019, "Well-read students learn
    better") with a fresh task head: its encoder, the teacher's labels. It must read the teacher's word pieces."""
    from bertforge.distillation import TeacherMatch
    from bertforge.distillation.student import check_not_larger
    from bertforge.model import BertConfig
    from bertforge.tokenization.wordpiece import vocab_fingerprint
    from bertforge.tokenization import BertTokenizer

    if student_layers is not None or student_size is not None or save_as != "bert":
        raise ConfigError("--student starts from its own pre-trained weights, in its own layout: give it without "
                          "--student-layers, --student-size and --save-as")
    student_dir, folder = checkpoint_option(student_dir, "--student")
    config, ours = BertConfig.from_pretrained(student_dir), teacher.config
    check_not_larger(config, ours, f"--student {student_dir}")
    words = BertTokenizer.from_pretrained(folder)
    if vocab_fingerprint(words) != vocab_fingerprint(teacher_tokenizer):  # the rule prepared shards' ids follow
        raise ConfigError(f"--student {student_dir}: its vocabulary differs from the teacher's; a student must read "
                          f"the word pieces the teacher's outputs were computed on")
    if words.do_lower_case != teacher_tokenizer.do_lower_case:  # the same pieces, from text cased otherwise
        student_case, teacher_case = (str(t.do_lower_case).lower() for t in (words, teacher_tokenizer))
        raise ConfigError(f"--student {student_dir}: its tokenizer has do_lower_case {student_case}, the teacher's "
                          f"{teacher_case}; a student must have been pre-trained on text cased as the teacher's inputs are")

    def build():  # the task's settings are the teacher's, as student_config gives the other students
        return type(teacher).from_pretrained(student_dir, fresh_head=True, id2label=ours.id2label,
                                             classifier_pooling=classifier_pooling or teacher.config.classifier_pooling)

    description = {"layers": config.num_hidden_layers, "hidden_size": config.hidden_size, "from_teacher_layers": None,
                   "size": None, "layout": "bert", "pretrained": str(student_dir)}
    return build, description, TeacherMatch(_same_channels(config.hidden_size, ours.hidden_size))


def _unknown_labels(task_object, data) -> bool:
    """Whether labelled `data` holds a label (NER: a tag) outside the teacher's id2label."""
    known = set(task_object.labels or ())
    if not known:  # QA has no label set
        return False
    return any(label not in known for example in data
               for label in (getattr(example, "tags", None) or [getattr(example, "label", None)]))


def _distil_task(task, teacher, train_path, validation_path, hold_out, train_limit, unlabelled_path, augment_copies,
                 options, args, max_length, student_options, resume):
    from bertforge.distillation import add_teacher_logits, augment, distil, output_kind, unlabelled

    directory, task_object, tokenizer, teacher_model = load_task_model(task, teacher, option="--teacher")
    kind = output_kind(task_object)
    train_data, validation_data = read_splits(task, train_path, validation_path, hold_out, train_limit, options)
    try:
        features = task_object.train_features(train_data, tokenizer, max_length)
        eval_set = task_object.eval_set(validation_data, tokenizer, max_length) if validation_data else None
    except InputError as e:
        if not _unknown_labels(task_object, train_data + (validation_data or [])):
            raise
        raise InputError(f"{e}; the teacher {directory} was fine-tuned on these only") from None
    labelled = len(features)
    extra = []  # inputs the teacher alone labels: --unlabelled's, then --augment's
    if unlabelled_path:
        # --tag-column is --train's (and --validation's): no tags are read here
        extra = read_data(task, unlabelled_path, {**options, "tag_column": None}, labelled=False, tokenizer=tokenizer)
        if not extra:
            raise InputError(f"--unlabelled {unlabelled_path}: no examples")
    if augment_copies:
        extra += augment(train_data, augment_copies, args.seed, tokenizer.mask_token)
    if extra:
        extra_features = task_object.windows(extra, tokenizer, max_length) if kind == "span" else \
            task_object.encode(extra, tokenizer, max_length, with_labels=False)
        features += unlabelled(extra_features, kind)
    # a student it cannot make fails before the pass
    build, description, match = _student(teacher_model, **student_options, teacher_tokenizer=tokenizer,
                                         calibration=features[:CALIBRATION_ROWS])
    if args.hidden_weight and match.hidden_channels is None:
        raise ConfigError(f"--hidden-weight {args.hidden_weight:g}: the student's hidden state "
                          f"(H{description['hidden_size']}) has no channel-for-channel match in the teacher's "
                          f"(H{teacher_model.config.hidden_size}); give --student-layers, or --prune with --student-size")
    if args.attention_weight and match.attention_map is None:
        raise ConfigError(f"--attention-weight {args.attention_weight:g}: the student's attention heads do not come "
                          f"from the teacher's (a fresh or pre-trained student); give --student-layers, or --prune "
                          f"with --student-size")
    add_teacher_logits(teacher_model.to(device_for(args.device)), features, args.eval_batch_size, args.bf16,
                       match.hidden_channels if args.hidden_weight else None)
    teacher_model.cpu()  # the logits are cached; --attention-weight runs a trimmed copy beside the student
    description = {"teacher": str(directory), **description, "alpha": args.alpha, "temperature": args.temperature,
                   "hidden_weight": args.hidden_weight, "attention_weight": args.attention_weight,
                   "augment": augment_copies, "unlabelled_features": len(features) - labelled}
    history = distil(build, task_object, kind, features, eval_set, args, tokenizer, resume, description,
                     teacher_model, match.attention_map)
    best = history["best"] or {}
    return {"train_examples": len(train_data), "steps": history["total_steps"], "student": description,
            "best": {k: v for k, v in best.items() if not isinstance(v, dict)}}, history["args"]


def _distil_general(directory, train_path, validation_path, args, student_options, resume):
    """`directory`: the --teacher as `checkpoint_option` resolved it, which the command has done."""
    from bertforge.distillation import GeneralDistillConfig, distil_general
    from bertforge.model import BertForPreTraining
    from bertforge.pipelines.fill_mask import FillMaskPipeline
    from bertforge.pipelines.loading import load_for_task
    from bertforge.pretraining.shards import PretrainingData
    from bertforge.tasks import default_learning_rate
    from bertforge.training.arguments import TrainingArguments

    if student_options["student_size"] is not None or student_options["student_dir"] is not None or \
            student_options["prune"]:
        raise ConfigError("--task mlm: the student starts from the teacher's layers (--student-layers), "
                          "not --student-size, --student or --prune")
    try:  # refused without an MLM head as fill-mask and pretrain evaluate refuse one; named as checkpoint_option does
        teacher_model = load_for_task(BertForPreTraining, directory, "distill --task mlm", FillMaskPipeline.head_prefix,
                                      FillMaskPipeline.head_name)
    except CheckpointError as e:
        raise ConfigError(f"--teacher {e}") from None
    build, description, _ = _student(teacher_model, **student_options)
    max_steps = args.max_steps or max(1, round(args.epochs * len(PretrainingData(train_path)) / args.batch_size))
    # Every setting the two trainers share is finetune's option, so a new one needs no line here; the
    # log keeps pre-training's row every 10 steps.
    shared = {f.name: getattr(args, f.name) for f in fields(TrainingArguments) if f.name != "log_every"}
    rate = args.learning_rate or default_learning_rate(description["hidden_size"], args.batch_size)
    shared.update(max_steps=max_steps, eval_every=args.eval_every or max_steps, learning_rate=rate)
    config = GeneralDistillConfig(**shared, data_dir=train_path, eval_data_dir=validation_path,
                                  temperature=args.temperature, with_teacher=args.alpha > 0)
    description = {"teacher": str(directory), **description, "teacher_losses": args.alpha > 0}
    return distil_general(config, teacher_model, build, description, resume), config.settings()


@click.command()
@click.option("--task", type=click.Choice(TASKS + ("mlm",)), required=True,
              help="classification, pair-classification, ner or qa from a teacher fine-tuned for it; mlm: general "
                   "distillation of a pre-trained teacher on `bertforge pretrain prepare` shards.")
@click.option("--teacher", type=click.Path(), required=True,
              help="The teacher: a model fine-tuned for TASK (for mlm: a pre-trained model with its MLM head).")
@click.option("--train", "train_path", type=click.Path(), required=True,
              help="Training file (for mlm: a prepared data directory).")
@click.option("--validation", "validation_path", type=click.Path(), default=None,
              help="Validation file, evaluated every epoch, the best student kept (for mlm: a prepared held-out "
                   "directory, MLM accuracy at the end or every --eval-every steps).")
@click.option("--unlabelled", "unlabelled_path", type=click.Path(dir_okay=False), default=None,
              help="More inputs without labels, labelled by the teacher alone: --train's format, or for sentence "
                   "classifiers also a .txt file, a text a line (empty lines skipped).")
@click.option("--augment", "augment_copies", type=click.IntRange(0), default=0, show_default=True,
              help="Add N perturbed copies of each training text, labelled by the teacher alone (Tang et al. 2019: "
                   "words masked or swapped for other training words, 1-5 word n-grams); classification tasks only.")
@click.option("--output", "output_dir", type=click.Path(file_okay=False), required=True,
              help="Where the student, metrics.json, the logs, the checkpoint and the run card go.")
@click.option("--student-layers", type=click.IntRange(1), default=None,
              help="A student of N of the teacher's layers, evenly spaced from the first: half the layers is every "
                   "other one as in DistilBERT (6 → 3 takes layers 0, 2, 4) [default: half the teacher's].")
@click.option("--student-size", default=None,
              help="A fresh, smaller network from the grid instead (e.g. L4-H256), no larger than the teacher.")
@click.option("--student", "student_dir", type=click.Path(), default=None,
              help="Or start the student from this smaller pre-trained model (e.g. the bundled bertforge-mini) with a "
                   "fresh task head; it must have the teacher's vocabulary.")
@click.option("--prune", is_flag=True,
              help="With --student-size: cut the student from the teacher instead of starting it fresh: the "
                   "teacher's evenly spaced layers, keeping the hidden channels, heads and feed-forward units with "
                   "the most activation on the first 1,024 training inputs (Minitron). Heads keep the teacher's size.")
@click.option("--prune-depth", type=click.Choice(["spaced", "importance"]), default=None,
              help="Which teacher layers --prune keeps: evenly spaced from the first, as --student-layers takes them "
                   "(the default; 6 → 4: layers 0, 1, 3, 4), or by importance: those whose removal would move the "
                   "teacher's last hidden state most on the same inputs (6 → 4 from MiniLM: 0, 3, 4, 5). The two "
                   "made equally good SST-2 students (docs/results.md).")
@click.option("--save-as", type=click.Choice(["bert", "distilbert"]), default="bert", show_default=True,
              help="The student's layout: distilbert trains it without token types and saves it for "
                   "transformers' DistilBert* classes.")
@classifier_pooling_option("What the student's sentence classifier reads: the pooler on [CLS], or the mean of its "
                           "last layer's token vectors [default: what the teacher's reads].")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Weight of the teacher's soft targets; 1 − alpha goes to the gold labels. For mlm any "
                   "alpha > 0 uses DistilBERT's 5/2/1 weights; 0 is the control, the MLM loss alone.")
@click.option("--temperature", type=click.FloatRange(0, min_open=True), default=2.0, show_default=True,
              help="Softmax temperature of the soft targets (the KL is multiplied by T²).")
@click.option("--hidden-weight", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Also pull the student's last hidden state towards the teacher's, token by token (1 − cosine, "
                   "DistilBERT's L_cos) with this weight, on the teacher's channels the student has: with "
                   "--student-layers, or --prune. The teacher's states are computed once, kept in float16.")
@click.option("--attention-weight", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Also teach each student head the attention distributions of the teacher head it came from (KL "
                   "per token, averaged over layers and heads; MiniLM, TinyBERT) with this weight: with "
                   "--student-layers, or --prune. The teacher then runs beside the student on every batch.")
def distill(task, teacher, train_path, validation_path, unlabelled_path, augment_copies, output_dir, student_layers,
            student_size, student_dir, prune, prune_depth, save_as, classifier_pooling, hold_out, train_limit, resume,
            max_length, threads, deterministic, **options):
    """Distil a TEACHER into a smaller student and keep the best student in --output.

    \b
    Examples:
    bertforge distill --task classification --teacher sst2-model --train train.tsv \\
        --validation dev.tsv --student-layers 3 --output sst2-student
    bertforge distill --task ner --teacher conll-model --train train.conll --hold-out 200 \\
        --student-size L4-H256 --save-as distilbert --output conll-student
    bertforge distill --task mlm --teacher bertforge-minilm-gutenberg --train shards/ \\
        --validation held-out-shards/ --max-steps 10000 --output general-student"""
    threads = configure(threads, deterministic)
    from bertforge.distillation import DistillArgs
    from bertforge.runcard import RunCard
    from bertforge.training import is_main_process

    # The options' conflicts first: the run card's fingerprints read every input file.
    if validation_path and hold_out:
        raise ConfigError("give either --validation or --hold-out, not both")
    check_held_out(train_path, validation_path)
    if task == "mlm" and (hold_out or train_limit or unlabelled_path):
        raise ConfigError("--task mlm reads prepared shards: --hold-out, --train-limit and --unlabelled do not apply")
    if augment_copies and task not in SENTENCE_CLASSIFIER_TASKS:
        raise ConfigError(f"--augment {augment_copies} with --task {task}: perturbed copies serve classification and "
                          f"pair-classification only (they would shift NER tags and QA answer spans; mlm masks "
                          f"its own inputs)")
    layer_lr_decay = options["layer_lr_decay"]
    if task == "mlm" and options["hidden_weight"]:
        raise ConfigError("--hidden-weight is for task students; --task mlm has its own hidden-state cosine loss")
    if task == "mlm" and options["attention_weight"]:
        raise ConfigError("--attention-weight is for task students; --task mlm learns the teacher's MLM outputs and "
                          "hidden states")
    if task == "mlm" and layer_lr_decay not in (None, 1):
        raise ConfigError(f"--layer-lr-decay {layer_lr_decay} is for fine-tuning a task student; --task mlm trains "
                          f"all of its layers at one rate")
    fine_tuning_only = [name for name, given in (("--freeze-word-embeddings", options["freeze_word_embeddings"]),
                                                 ("--no-group-by-length", not options["group_by_length"])) if given]
    if task == "mlm" and fine_tuning_only:
        raise ConfigError(f"{' and '.join(fine_tuning_only)}: for task students; --task mlm trains on prepared shards "
                          f"with its own batches and every weight")
    columns = [f"--{name.replace('_', '-')}" for name in ("text_column", "text_pair_column", "label_column",
                                                          "tag_column") if typed(name)]
    if task == "mlm" and columns:
        raise ConfigError(f"{' and '.join(columns)}: for a task's data files; --task mlm reads prepared shards")
    check_classifier_pooling(task, classifier_pooling)
    if prune_depth and not prune:
        raise ConfigError(f"--prune-depth {prune_depth} chooses the layers --prune keeps: give --prune too")
    if prune and student_dir is not None:
        raise ConfigError("--prune cuts the student from the teacher; --student starts it from another model: "
                          "give one of them")
    card = RunCard.start(click.get_current_context().params,
                         [train_path, validation_path, unlabelled_path, teacher, student_dir], output_dir,
                         options["seed"])
    check_output_dir(output_dir, "--output", inputs=(train_path, validation_path, unlabelled_path, teacher,
                                                     student_dir))  # --overwrite deletes the output
    # A teacher without config.json fails before the data is read.
    teacher_path = checkpoint_option(teacher, "--teacher")[0]
    # A rate of None (not given) is resolved from the student the run builds: finetune's rule, by its width and
    # the batch.
    args = training_args(DistillArgs, output_dir=output_dir, **options)
    student_options = {"student_layers": student_layers, "student_size": student_size, "save_as": save_as,
                       "student_dir": student_dir, "prune": (prune_depth or "spaced") if prune else None,
                       "classifier_pooling": classifier_pooling}
    started = time.perf_counter()
    if task == "mlm":
        summary, settings = _distil_general(teacher_path, train_path, validation_path, args, student_options, resume)
    else:
        summary, settings = _distil_task(task, teacher, train_path, validation_path, hold_out, train_limit,
                                         unlabelled_path, augment_copies, options, args,
                                         max_length_for(task, max_length, teacher, training=True), student_options, resume)
    card.options.update({name: settings[name] for name in DistillArgs.RESOLVED_DEFAULTS})
    summary = {"output": output_dir, **summary, "wall_seconds": round(time.perf_counter() - started, 1)}
    if is_main_process():
        card.finish(output_dir, {k: v for k, v in summary.items() if k != "output"}, threads, options["device"])
    click.echo(json.dumps(summary, default=str))


# finetune's own option objects (data columns, lengths, batch size, device, schedule, seed, resume, ...).
distill.params.extend(p for p in finetune_command.params if p.name not in NOT_SHARED)
