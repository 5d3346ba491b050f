"""DistilBERT checkpoints from transformers 5 (random weights): hidden states, fill-mask and each task
head match transformers, transformers reloads what bertforge saves, and the CLI and the server load them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bertforge import BertTokenizer
from bertforge.cli.main import cli
from conftest import sst2_sentences
from format_helpers import TF_FIXTURE


@pytest.fixture(scope="module")
def distilbert_folder(tmp_path_factory, default_model_dir) -> Path:
    """A random-weight DistilBertForMaskedLM (bert-base-uncased vocabulary) and its tokenizer, as
    transformers 5 saves them (tokenizer.json, no vocab.txt)."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(4)
    model = DistilBertForMaskedLM(DistilBertConfig(vocab_size=30522, dim=64, n_layers=2, n_heads=4,
                                                   hidden_dim=128, max_position_embeddings=128)).eval()
    directory = tmp_path_factory.mktemp("distilbert")
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(str(default_model_dir)).save_pretrained(str(directory))
    return directory


def test_distilbert_hidden_states_match_transformers(distilbert_folder):
    import bertforge
    from transformers import DistilBertModel

    from bertforge.model import BertModel

    texts = sst2_sentences(16, split="validation")
    reference = DistilBertModel.from_pretrained(distilbert_folder).eval()
    ours = BertModel.from_pretrained(distilbert_folder)
    assert ours.config.is_distilbert and ours.pooler is None and ours.embeddings.token_type is None
    batch = BertTokenizer.from_pretrained(distilbert_folder)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        got = ours(**batch, output_hidden_states=True)
        expected = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             output_hidden_states=True)
    mask = batch["attention_mask"].bool()
    assert len(got.hidden_states) == len(expected.hidden_states) == 3
    for value, reference_value in zip(got.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(value[mask], reference_value[mask], atol=1e-5, rtol=1e-5)
    # the unpadded inference path of the pipelines, word by word
    vectors = bertforge.pipeline("feature-extraction", model=distilbert_folder)(texts[:4])
    for i, vector in enumerate(vectors):
        n = int(mask[i].sum())
        torch.testing.assert_close(torch.as_tensor(vector.vectors), expected.last_hidden_state[i, :n], atol=1e-5,
                                   rtol=1e-5)


def test_distilbert_fill_mask_matches_transformers(distilbert_folder):
    import bertforge
    from transformers import pipeline

    texts = [f"{text.split(' ', 1)[0]} [MASK] {text.split(' ', 1)[1]}" for text in
             sst2_sentences(30, split="validation") if " " in text.strip()][:8]
    got = bertforge.pipeline("fill-mask", model=distilbert_folder)(texts, top_k=5)
    expected = pipeline("fill-mask", model=str(distilbert_folder))(texts, top_k=5)
    for row, reference_row in zip(got, expected, strict=True):
        assert [g["token"] for g in row] == [e["token"] for e in reference_row]
        assert [g["score"] for g in row] == pytest.approx([e["score"] for e in reference_row], abs=1e-5)


@pytest.mark.parametrize("head", ["DistilBertForSequenceClassification", "DistilBertForQuestionAnswering",
                                  "DistilBertForTokenClassification"])
def test_distilbert_task_heads_load_and_save_in_transformers_layout(head, tmp_path):
    import transformers

    from bertforge import model as ours_models

    torch.manual_seed(1)
    config = transformers.DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                           max_position_embeddings=40, sinusoidal_pos_embds=True,
                                           num_labels=2 if head.endswith("QuestionAnswering") else 3)
    reference = getattr(transformers, head)(config).eval()
    reference.save_pretrained(tmp_path / "reference")
    ours = getattr(ours_models, head.replace("DistilBert", "Bert")).from_pretrained(tmp_path / "reference")
    assert ours.missing_keys == []
    ids = torch.randint(0, 120, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask)
        got = ours(input_ids=ids, attention_mask=mask).logits
    if head.endswith("QuestionAnswering"):
        expected_logits = torch.stack([expected.start_logits, expected.end_logits], -1)
    else:
        expected_logits = expected.logits
    torch.testing.assert_close(got, expected_logits, atol=1e-5, rtol=1e-5)
    ours.save_pretrained(tmp_path / "ours")
    again, info = getattr(transformers, head).from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not any(info.values()), info
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["architectures"] == [head]
    for name, tensor in reference.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_distilbert_sinusoidal_positions_match_transformers():
    import transformers

    from bertforge.model import BertConfig, BertModel

    config = transformers.DistilBertConfig(vocab_size=50, dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                                           max_position_embeddings=40, sinusoidal_pos_embds=True)
    reference = transformers.DistilBertModel(config).embeddings.position_embeddings.weight
    ours = BertModel(BertConfig.from_dict(config.to_dict())).embeddings.position
    torch.testing.assert_close(ours.weight, reference, atol=1e-6, rtol=0)
    assert not ours.weight.requires_grad


def test_cli_convert_and_fill_mask_on_a_distilbert_folder(distilbert_folder, tmp_path):
    from transformers import DistilBertForMaskedLM

    runner = CliRunner()
    result = runner.invoke(cli, ["convert", str(distilbert_folder), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    _, info = DistilBertForMaskedLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info.values()), info
    result = runner.invoke(cli, ["fill-mask", "--model", str(tmp_path / "out"), "Paris is the [MASK] of France."])
    assert result.exit_code == 0, result.output


def test_serve_loads_google_and_distilbert_folders_with_their_heads(distilbert_folder):
    from bertforge.pipelines import pipeline
    from bertforge.pipelines.loading import load_checkpoint
    from bertforge.server.models import load_served_model

    google = load_checkpoint(TF_FIXTURE / "google")
    assert {"fill-mask", "next-sentence"} <= set(google.tasks) and type(google.model).__name__ == "BertForPreTraining"
    distilbert = load_checkpoint(distilbert_folder)
    assert "fill-mask" in distilbert.tasks and type(distilbert.model).__name__ == "BertForMaskedLM"
    # a training run's prefix and a file of the folder, as the pipelines take them
    squad = load_checkpoint(TF_FIXTURE / "squad" / "model.ckpt-88")
    assert "question-answering" in squad.tasks and squad.path == TF_FIXTURE / "squad"
    answer = pipeline("question-answering", model=TF_FIXTURE / "squad" / "model.ckpt-88")(
        "Where is Paris?", "Paris lies on the Seine in northern France.")
    served = load_served_model("squad", TF_FIXTURE / "squad" / "bert_config.json")
    assert served.run_qa([("Where is Paris?", "Paris lies on the Seine in northern France.")])[0]["answer"] == \
        answer["answer"]
