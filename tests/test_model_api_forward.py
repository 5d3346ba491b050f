"""The forward calls users port from transformers' PreTrainedModel, compared with transformers: tuples, hidden states
and attentions, inputs_embeds, masked-LM losses, the config's output flags, activation checkpointing. Loading,
saving, embeddings and the config's attributes are in tests/test_model_api.py."""

from __future__ import annotations

import contextlib

import pytest
import torch
import transformers
from model_api_helpers import SMALL, saved_reference

from bertforge.errors import ConfigError
from bertforge.model import BertConfig, BertForMaskedLM, BertForPreTraining, BertForSequenceClassification, BertModel


@pytest.mark.parametrize("name,ours_class", [("BertModel", BertModel), ("BertForMaskedLM", BertForMaskedLM),
                                             ("BertForSequenceClassification", BertForSequenceClassification)])
def test_return_dict_false_gives_transformers_tuple(tmp_path, name, ours_class):
    reference, folder = saved_reference(tmp_path, name)
    ours = ours_class.from_pretrained(folder)
    ids = torch.randint(5, 60, (2, 7), generator=torch.Generator().manual_seed(3))
    labels = {"BertModel": {}, "BertForMaskedLM": {}, "BertForSequenceClassification": {"labels": torch.tensor([0, 1])}}
    expected = reference(input_ids=ids, return_dict=False, **labels[name])
    got = ours(ids, return_dict=False, **labels[name])
    assert type(got) is tuple and len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)
    assert not isinstance(ours(ids, return_dict=True), tuple)


def test_masked_lm_gives_hidden_states_and_attentions_as_transformers(tmp_path):
    _, folder = saved_reference(tmp_path, "BertForMaskedLM")
    # eager attention: transformers' SDPA path returns no attention weights (the comparison would be empty)
    reference = transformers.BertForMaskedLM.from_pretrained(folder, attn_implementation="eager").eval()
    ours = BertForMaskedLM.from_pretrained(folder)
    ids = torch.randint(5, 60, (2, 7), generator=torch.Generator().manual_seed(4))
    expected = reference(input_ids=ids, output_hidden_states=True, output_attentions=True)
    assert len(expected.attentions) == ours.config.num_hidden_layers > 0
    got = ours(ids, output_hidden_states=True, output_attentions=True)
    for mine, theirs in zip(got.hidden_states + got.attentions, expected.hidden_states + expected.attentions,
                            strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)
    # the same as transformers' tuple: (logits, attentions)
    got = ours(ids, output_attentions=True, return_dict=False)
    expected = reference(input_ids=ids, output_attentions=True, return_dict=False)
    assert len(got) == len(expected) == 2
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-5)
    for mine, theirs in zip(got[1], expected[1], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)


def test_inputs_embeds_and_position_ids_give_transformers_outputs_and_input_gradients(default_model_dir, tokenizer):
    """What attribution methods (integrated gradients) do: scaled token vectors in, gradients w.r.t. them out;
    and positions that do not start at 0. On the bundled all-MiniLM-L6-v2 and Gutenberg lines."""
    from tests.conftest import gutenberg_lines

    ours = BertModel.from_pretrained(default_model_dir).eval()
    reference = transformers.BertModel.from_pretrained(str(default_model_dir)).eval()
    batch = tokenizer(gutenberg_lines(4, skip=200), padding=True, truncation=True, max_length=48,
                      return_tensors="pt")
    real = batch["attention_mask"].bool()
    positions = torch.arange(5, 5 + batch["input_ids"].shape[1]).expand_as(batch["input_ids"])
    results = []
    for model in (ours, reference):
        scaled = (model.get_input_embeddings()(batch["input_ids"]) * 0.7).detach().requires_grad_()
        out = model(inputs_embeds=scaled, attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"], position_ids=positions)
        out.last_hidden_state[real].sum().backward()
        results.append((out.last_hidden_state[real], out.pooler_output, scaled.grad[real]))
    # the gradients (up to ~40) within 1e-5 of the largest: float32 sums
    for mine, theirs in zip(*results, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5 * max(1.0, theirs.abs().max().item()))
    # the vectors the ids look up give what the ids give
    with torch.no_grad():
        from_ids = ours(**batch).last_hidden_state
        from_vectors = ours(inputs_embeds=ours.get_input_embeddings()(batch["input_ids"]),
                            attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(from_vectors[real], from_ids[real], rtol=0, atol=1e-6)


def test_every_head_takes_inputs_embeds_as_transformers(tmp_path):
    ids = torch.randint(5, 60, (2, 6), generator=torch.Generator().manual_seed(2))
    for name, ours_class in (("BertForSequenceClassification", BertForSequenceClassification),
                             ("BertForMaskedLM", BertForMaskedLM), ("BertForPreTraining", BertForPreTraining)):
        reference, folder = saved_reference(tmp_path, name)
        ours = ours_class.from_pretrained(folder).eval()
        vectors = reference.get_input_embeddings()(ids).detach()
        with torch.no_grad():
            mine, theirs = ours(inputs_embeds=vectors, return_dict=False), reference(inputs_embeds=vectors,
                                                                                    return_dict=False)
        for got, expected in zip(mine, theirs, strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name,ours_class", [("BertForMaskedLM", BertForMaskedLM),
                                             ("BertForPreTraining", BertForPreTraining)])
def test_masked_lm_with_labels_gives_transformers_loss_and_every_logit(tmp_path, name, ours_class):
    """What transformers' run_mlm.py metrics read: (batch, seq, vocab) logits beside the labels."""
    reference, folder = saved_reference(tmp_path, name)
    ours = ours_class.from_pretrained(folder)
    ids = torch.randint(5, 60, (3, 8), generator=torch.Generator().manual_seed(5))
    labels = torch.where(torch.rand(3, 8, generator=torch.Generator().manual_seed(6)) < 0.3, ids, -100)
    extra = {"next_sentence_label": torch.tensor([0, 1, 0])} if name == "BertForPreTraining" else {}
    with torch.no_grad():
        mine, theirs = ours(ids, labels=labels, return_dict=False, **extra), \
            reference(input_ids=ids, labels=labels, return_dict=False, **extra)
    assert len(mine) == len(theirs) and mine[1].shape == (3, 8, 60)
    for got, expected in zip(mine, theirs, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_output_flags_in_the_config_are_the_calls_defaults_as_in_transformers(tmp_path):
    """bertviz's form, from_pretrained(path, output_attentions=True), and config attributes set after loading."""
    reference_class, folder = saved_reference(tmp_path, "BertForSequenceClassification")
    ids = torch.randint(5, 60, (2, 6), generator=torch.Generator().manual_seed(3))
    ours = BertForSequenceClassification.from_pretrained(folder, output_attentions=True)
    theirs = transformers.BertForSequenceClassification.from_pretrained(folder, output_attentions=True).eval()
    with torch.no_grad():
        for mine, expected in zip(ours(ids).attentions, theirs(input_ids=ids).attentions, strict=True):
            torch.testing.assert_close(mine, expected, rtol=0, atol=1e-5)
        for model in (ours, theirs):
            model.config.output_hidden_states = True
        assert len(ours(ids).hidden_states) == len(theirs(input_ids=ids).hidden_states) == 3
        assert ours(ids, output_hidden_states=False).hidden_states is None  # the call's value wins
        for model in (ours, theirs):
            model.config.return_dict = False
        assert len(ours(ids)) == len(theirs(input_ids=ids)) == 3 and isinstance(ours(ids), tuple)
    ours.config.return_dict = True
    ours.save_pretrained(tmp_path / "flags")
    assert transformers.BertConfig.from_pretrained(tmp_path / "flags").output_hidden_states


def test_activation_checkpointing_recomputes_layers_and_keeps_the_gradients():
    """Each checkpointed layer runs twice (forward, then again in the backward pass); the loss and every
    gradient are those of the plain run, dropout included (its random state is replayed)."""
    model = BertForSequenceClassification(BertConfig(**{**SMALL, "num_hidden_layers": 4})).train()
    ids = torch.randint(5, 60, (3, 9), generator=torch.Generator().manual_seed(1))
    calls = []
    for index, layer in enumerate(model.bert.encoder.layers):
        # a pre-hook: the recomputation stops once it has what the backward pass needs (torch's early stop)
        layer.register_forward_pre_hook(lambda module, args, index=index: calls.append(index))

    def step():
        model.zero_grad()
        calls.clear()
        torch.manual_seed(0)
        loss = model(ids, labels=torch.tensor([0, 1, 1])).loss
        loss.backward()
        return loss, [p.grad.clone() for p in model.parameters()], sorted(calls)

    plain_loss, plain_grads, plain_calls = step()
    assert plain_calls == [0, 1, 2, 3] and not model.is_gradient_checkpointing
    for enable, expected_calls in (
            (lambda: model.gradient_checkpointing_enable(), [0, 0, 1, 1, 2, 2, 3, 3]),
            (lambda: model.activation_checkpointing_enable({"use_reentrant": True}, every_n_layers=2),
             [0, 0, 1, 2, 2, 3])):
        enable()
        loss, grads, layer_calls = step()
        assert layer_calls == expected_calls and model.is_activation_checkpointing
        torch.testing.assert_close(loss, plain_loss, rtol=0, atol=0)
        for got, expected in zip(grads, plain_grads, strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-7)
    model.gradient_checkpointing_disable()
    assert step()[2] == plain_calls and not model.is_activation_checkpointing
    model.gradient_checkpointing_enable()
    with torch.no_grad():  # nothing to recompute without gradients, nor in eval mode
        calls.clear()
        model(ids)
        assert sorted(calls) == plain_calls
    with pytest.raises(ConfigError, match=r"^activation_checkpointing_enable\(every_n_layers=0\): give a positive "
                                          r"whole number$"):
        model.activation_checkpointing_enable(every_n_layers=0)


def test_transformers_trainer_turns_activation_checkpointing_on(tmp_path):
    model = BertForSequenceClassification(BertConfig(**SMALL))
    rows = [{"input_ids": torch.randint(5, 60, (8,), generator=torch.Generator().manual_seed(i)),
             "labels": torch.tensor(i % 2)} for i in range(8)]
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4,
                                          activation_checkpointing=True, report_to=[], use_cpu=True,
                                          save_strategy="no", logging_strategy="no")
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    assert model.is_activation_checkpointing and trainer.state.global_step == 2


def test_enable_input_require_grads_lets_reentrant_checkpointing_train_behind_frozen_embeddings():
    """The PEFT recipe: frozen base, reentrant checkpointing; without the hook no gradient reaches the layers."""
    model = BertForSequenceClassification(BertConfig(**SMALL)).train()
    for parameter in model.bert.embeddings.parameters():
        parameter.requires_grad_(False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    ids = torch.randint(5, 60, (2, 6), generator=torch.Generator().manual_seed(3))
    layer_weight = model.bert.encoder.layers[0].intermediate.weight
    for enabled in (False, True):
        if enabled:
            model.enable_input_require_grads()
        model.zero_grad()
        with pytest.warns(UserWarning) if not enabled else contextlib.nullcontext():
            model(ids, labels=torch.tensor([0, 1])).loss.backward()
        assert (layer_weight.grad is not None and bool(layer_weight.grad.any())) == enabled
    model.disable_input_require_grads()
