"""The BERT encoder (`bert`), its heads (`heads`), its configuration and checkpoint IO."""

from bertforge.model.bert import BertModel, BertOutput
from bertforge.model.checkpoint import default_model_path, load_model, save_model
from bertforge.model.config import BertConfig
from bertforge.model.heads import (
    ARCHITECTURES,
    IGNORE_INDEX,
    BertEncoder,
    BertForMaskedLM,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertPreTrainedModel,
)

__all__ = [
    "ARCHITECTURES", "IGNORE_INDEX", "BertConfig", "BertEncoder", "BertForMaskedLM", "BertForNextSentencePrediction",
    "BertForPreTraining", "BertForQuestionAnswering", "BertForSequenceClassification", "BertForTokenClassification",
    "BertModel", "BertOutput", "BertPreTrainedModel", "default_model_path", "load_model", "save_model",
]
