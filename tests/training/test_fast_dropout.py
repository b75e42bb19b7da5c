"""FastDropout and tuneforge_sdpa: the same drop rate and expectation as torch's dropout, identity in eval."""

from __future__ import annotations

import torch

from tuneforge.training.fast_dropout import FastDropout, fast_dropout, sdpa_fast_dropout, use_fast_dropout


def test_fast_dropout_drops_at_the_rate_and_keeps_the_expectation():
    torch.manual_seed(0)
    x = torch.ones(2_000_000, requires_grad=True)
    layer = FastDropout(0.1).train()
    y = layer(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.001
    assert abs(y.mean().item() - 1.0) < 0.002  # kept values scaled by 1 / (1 - p)
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # the gradient passes through the same mask and scale
    assert torch.equal(layer.eval()(x), x)


def test_attention_with_fast_dropout_matches_sdpa_without_drops_and_in_expectation():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    module = torch.nn.Module().train()
    query, key, value = (torch.randn(2, 4, 6, 8) for _ in range(3))
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    mask[1, :, :, 4:] = False  # padded keys
    expected, _ = sdpa_attention_forward(module.eval(), query, key, value, mask, dropout=0.0)
    module.train()
    nothing_dropped, _ = sdpa_fast_dropout(module, query, key, value, mask, dropout=1e-6)  # manual path, no drop
    torch.testing.assert_close(nothing_dropped, expected, rtol=1e-5, atol=1e-6)
    draws = torch.stack([sdpa_fast_dropout(module, query, key, value, mask, dropout=0.3)[0] for _ in range(3000)])
    torch.testing.assert_close(draws.mean(0), expected, rtol=0, atol=0.04)
    assert (draws.std(0) > 0.01).float().mean() > 0.9  # it does drop


def test_use_fast_dropout_changes_only_the_dropout_sites(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(5, 1000, (2, 10))
    expected = model.eval()(input_ids=ids).logits
    changed = use_fast_dropout(model)
    # embeddings, 3 per layer (the attention module keeps its rate in one), the classifier, and the attention
    assert changed == 1 + 2 * 3 + 1 + 1
    assert model.config._attn_implementation == "tuneforge_sdpa"
    torch.testing.assert_close(model.eval()(input_ids=ids).logits, expected)  # eval: unchanged
    model.train()(input_ids=ids, labels=torch.tensor([0, 1])).loss.backward()
    assert model.state_dict().keys() == before.keys()
    assert fast_dropout(torch.ones(3), 0.0).tolist() == [1.0, 1.0, 1.0]
