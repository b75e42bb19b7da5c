"""The first-token-only last layer of BERT-style classifiers: same logits and gradients as the full layer."""

from __future__ import annotations

import copy

import pytest
import torch

from tuneforge.models.first_token import first_token_only


def _classifier(attention: str, lora: bool):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3,
                        attn_implementation=attention)
    model = BertForSequenceClassification(config)
    if lora:
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules="all-linear", task_type="SEQ_CLS",
                                                           exclude_modules=["classifier"], init_lora_weights=False))
    return model.eval()  # no dropout: the comparison is exact up to rounding


@pytest.mark.parametrize("attention,lora", [("sdpa", False), ("eager", False), ("sdpa", True)])
def test_first_token_layer_gives_the_same_logits_and_gradients(attention, lora):
    plain = _classifier(attention, lora)
    fast = copy.deepcopy(plain)
    assert first_token_only(fast.get_base_model() if lora else fast)
    ids = torch.randint(1, 100, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padding: keys beyond it must stay masked for the first token's query
    labels = torch.tensor([0, 2, 1])
    outputs = [model(input_ids=ids, attention_mask=mask, labels=labels) for model in (plain, fast)]
    torch.testing.assert_close(outputs[1].logits, outputs[0].logits, rtol=1e-5, atol=1e-6)
    for output in outputs:
        output.loss.backward()
    grads = [{n: p.grad for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
             for model in (plain, fast)]
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 4
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert fast.state_dict().keys() == plain.state_dict().keys()  # nothing changes in what is saved


def test_classifiers_that_read_every_position_are_not_patched_and_patching_twice_is_harmless():
    from transformers import BertConfig, BertForTokenClassification

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    assert not first_token_only(BertForTokenClassification(config))  # every position is read: not patched
    plain = _classifier("sdpa", False)
    assert first_token_only(plain) and first_token_only(plain)
    ids = torch.randint(1, 100, (2, 8))
    plain.bert.encoder.layer[-1]._full_forward(plain.bert.embeddings(ids))  # the fallback is still the full layer


def test_the_flops_model_counts_the_first_token_layer_by_its_keys_and_values():
    from tuneforge.training.speed import flops_model

    full = flops_model(_classifier("sdpa", False), causal=False)
    patched_model = _classifier("sdpa", False)
    first_token_only(patched_model)
    patched = flops_model(patched_model, causal=False)
    last = patched_model.bert.encoder.layer[-1]
    one_position = sum(m.weight.numel() for name, m in last.named_modules()
                       if isinstance(m, torch.nn.Linear) and name not in ("attention.self.key", "attention.self.value"))
    assert patched.matmul_params == full.matmul_params - one_position
    assert patched.backward_matmul_params == full.backward_matmul_params - one_position
    assert patched.layers == full.layers - 1  # the quadratic attention term: one query in the last layer
