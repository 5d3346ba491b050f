"""The BERT encoder (`bert`), its heads (`heads`), its configuration and checkpoint IO."""

from bertforge.model.bert import (
    BaseModelOutputWithPooling,
    BertEncoder,
    BertModel,
    UnpaddedOutput,
)
from bertforge.model.pretrained import BertPreTrainedModel
from bertforge.model.checkpoint import default_model_path, load_model, save_model
from bertforge.model.config import BertConfig
from bertforge.model.heads import (
    ARCHITECTURES,
    IGNORE_INDEX,
    BertForMaskedLM,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)

__all__ = [
    "ARCHITECTURES", "IGNORE_INDEX", "BaseModelOutputWithPooling", "BertConfig", "BertEncoder", "BertForMaskedLM",
    "BertForNextSentencePrediction", "BertForPreTraining", "BertForQuestionAnswering", "BertForSequenceClassification",
    "BertForTokenClassification", "BertModel", "BertPreTrainedModel", "UnpaddedOutput", "default_model_path",
    "load_model", "save_model",
]
