"""What a checkpoint can do, judged by the weights it holds: the one answer that pipelines, the server,
`finetune`/`evaluate`/`predict` and `convert` share (a config's `architectures` may be missing, as in
Google's folders, or name less than the weights carry)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bertforge.errors import ConfigError
from bertforge.io.settings_files import read_json_object
from bertforge.paths import config_path

# Weight-name prefixes (Hugging Face spelling) that give a checkpoint each ability.
HEAD_TASKS = {
    "cls.predictions.": "fill-mask",
    "vocab_transform.": "fill-mask",  # DistilBERT's MLM head
    "cls.seq_relationship.": "next-sentence",
    "qa_outputs.": "question-answering",
}
ENCODER_TASKS = ["feature-extraction", "sentence-embedding", "contextual-similarity", "attention"]
# The head model that holds every head a checkpoint's weights give it.
HEAD_MODELS = (
    ({"fill-mask", "next-sentence"}, "BertForPreTraining"),
    ({"fill-mask"}, "BertForMaskedLM"),
    ({"next-sentence"}, "BertForNextSentencePrediction"),
    ({"question-answering"}, "BertForQuestionAnswering"),
    ({"text-classification"}, "BertForSequenceClassification"),
    ({"token-classification"}, "BertForTokenClassification"),
)


def weight_tasks(names: Iterable[str], architectures: list[str]) -> list[str]:
    """The tasks of a checkpoint whose weights (Hugging Face names) are `names`. The two classifiers share
    their weights' names: the config's `architectures` tell them apart (a sequence classifier when silent)."""
    names = [n.removeprefix("bert.") for n in names]
    tasks = list(ENCODER_TASKS)
    for prefix, task in HEAD_TASKS.items():
        if any(n.startswith(prefix) for n in names):
            tasks.append(task)
    if any(n.startswith("classifier.") for n in names):
        token_level = any("TokenClassification" in a for a in architectures)
        tasks.append("token-classification" if token_level else "text-classification")
    return tasks


def checkpoint_tasks(directory: Path) -> list[str]:
    """The tasks a checkpoint directory can serve."""
    from bertforge.model.weight_files import weight_names  # imports torch: only once a folder is judged

    return weight_tasks(weight_names(directory), architectures_of(directory))


def architectures_of(directory: Path) -> list[str]:
    """The config's `architectures` (config.json, or Google's bert_config.json, which has none). A config that
    cannot be read is named here: judged without it, a token classifier would pass for a sequence classifier."""
    path = config_path(directory)
    if not path.exists():  # loading the folder names what is missing
        return []
    architectures = read_json_object(path, ConfigError).get("architectures") or []
    if not (isinstance(architectures, list) and all(isinstance(a, str) for a in architectures)):
        raise ConfigError(f"{path}: 'architectures' must be a list of class names (e.g. "
                          f"[\"BertForTokenClassification\"]), got {architectures!r}")
    return architectures


def head_model(tasks: list[str]) -> str:
    """The architecture that carries every head of `tasks` (MLM and NSP: BertForPreTraining)."""
    return next((name for heads, name in HEAD_MODELS if heads <= set(tasks)), "BertModel")
