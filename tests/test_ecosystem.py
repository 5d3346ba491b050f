"""Tools users run on BERT models, run on bertforge's as their documentation runs them on transformers': PEFT's
LoRA adapters and Captum's attributions, each compared with the same code on transformers' model of the same
weights."""

from __future__ import annotations

import pytest
import torch
import transformers
from captum.attr import LayerConductance, LayerIntegratedGradients
from peft import LoraConfig, TaskType, get_peft_model

from bertforge import BertTokenizer
from bertforge.model import BertConfig, BertForSequenceClassification

SMALL = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def test_lora_trains_the_adapters_merges_and_loads_in_transformers(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**SMALL))
    adapted = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8,
                                               target_modules=["qkv", "out"]))
    trainable = {name for name, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or "classifier" in name for name in trainable)
    frozen = {name: p.detach().clone() for name, p in adapted.named_parameters() if not p.requires_grad}
    ids = torch.randint(5, 60, (4, 7), generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        adapted(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.equal(p, frozen[name]) for name, p in adapted.named_parameters() if name in frozen)
    adapted.eval()
    with torch.no_grad():
        adapted_logits = adapted(input_ids=ids).logits
        merged = adapted.merge_and_unload()
        torch.testing.assert_close(merged(ids).logits, adapted_logits, rtol=0, atol=1e-5)
    merged.save_pretrained(tmp_path / "merged")
    reference = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(reference(input_ids=ids).logits, adapted_logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["integrated-gradients", "conductance"])
def test_captum_attributions_equal_transformers(default_model_dir, tmp_path, method):
    """Captum's BERT tutorial on the bundled MiniLM with a seeded head: attributions of the embeddings (integrated
    gradients) and of the first layer's output (conductance) equal those transformers' model gives."""
    torch.manual_seed(0)
    ours = BertForSequenceClassification.from_pretrained(default_model_dir, num_labels=2).eval()
    ours.save_pretrained(tmp_path / "classifier")
    theirs = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "classifier").eval()
    tokenizer = BertTokenizer.from_pretrained(default_model_dir)
    inputs = tokenizer("a gripping, beautifully acted film", return_tensors="pt")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    baseline = torch.tensor([[tokenizer.cls_token_id] + [tokenizer.pad_token_id] * (ids.shape[1] - 2)
                             + [tokenizer.sep_token_id]])
    attributions = []
    for model, layer in ((ours, ours.bert.encoder.layers[0]), (theirs, theirs.bert.encoder.layer[0])):
        if method == "integrated-gradients":
            explainer = LayerIntegratedGradients(
                lambda input_ids, attention_mask, model=model: model(
                    input_ids=input_ids, attention_mask=attention_mask).logits[:, 1], model.bert.embeddings)
            start, end = ids, baseline
        else:  # on the token vectors (inputs_embeds), as the tutorial's interpretable embedding layer does
            explainer = LayerConductance(
                lambda vectors, attention_mask, model=model: model(
                    inputs_embeds=vectors, attention_mask=attention_mask).logits[:, 1], layer)
            embeddings = model.get_input_embeddings()
            start, end = embeddings(ids).detach(), embeddings(baseline).detach()
        attributions.append(explainer.attribute(start, baselines=end, additional_forward_args=(mask,),
                                                n_steps=16).sum(-1))
    mine, expected = attributions
    torch.testing.assert_close(mine, expected, rtol=0, atol=1e-5 * max(1.0, expected.abs().max().item()))
    assert expected.abs().max() > 0
