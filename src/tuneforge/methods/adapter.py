"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020), written here: PEFT has none.

A bottleneck ``x -> x + up(act(down(x)))`` (``down: d -> m``, ``up: m -> d``, ``m = max(1, d // reduction_factor)``)
is put on the output projection of a transformer sub-block, before that block's residual sum and layer norm:
``houlsby`` after the attention output and the feed-forward output, ``pfeiffer`` after the feed-forward output
only. Sites are found by structure (BERT-, Llama- and T5-style blocks, cross-attention included); each wrapped
``Linear`` becomes an :class:`Adapted` module (``.base`` the original layer, ``.adapter`` the bottleneck), so its
parameter names gain ``.base.`` (e.g. ``bert.encoder.layer.0.output.dense.base.weight``). The up-projection starts
near zero, so the adapted model starts equal to the base model. Everything else is frozen except, per config, the
task head (sequence-classification and question-answering: a generative model's LM head stays frozen) and the norms.

Saved format (:func:`save_adapter`), a folder with two files:

* ``tuneforge_adapter.json``: ``{"format": "tuneforge-bottleneck-adapter", "version": 1, "config": {AdapterConfig
  fields}, "hidden_size": d, "bottleneck": m, "sites": [module paths of the wrapped Linear layers, model order],
  "trained_outside_adapters": [names of the trained parameters outside the adapters: head, norms]}``
* ``adapter_model.safetensors``: every adapter parameter (``<site>.adapter.down.weight`` ...) and every parameter
  listed in ``trained_outside_adapters``, under its name in the adapted model.

:func:`load_adapter` wraps the same sites of a freshly loaded base model and loads those weights, strictly.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.config.schema import MethodConfig
from tuneforge.methods.spec import MethodSpec, register

FORMAT, VERSION = "tuneforge-bottleneck-adapter", 1
CONFIG_FILE, WEIGHTS_FILE = "tuneforge_adapter.json", "adapter_model.safetensors"


class AdapterConfig(MethodConfig):
    name: Literal["adapter"] = "adapter"
    kind: Literal["houlsby", "pfeiffer"] = Field(
        "pfeiffer", description="houlsby: adapters after attention and after the feed-forward block; pfeiffer: "
        "after the feed-forward block only.")
    reduction_factor: int = Field(16, ge=1, description="Bottleneck width m = hidden size // reduction_factor "
                                  "(at least 1).")
    non_linearity: Literal["relu", "gelu", "silu", "tanh"] = Field("relu", description="Activation in the bottleneck.")
    residual: bool = Field(True, description="Add the adapter's input to its output: x + up(act(down(x))).")
    init_scale: float = Field(0.0, ge=0, description="Standard deviation of the up-projection's initial weights; "
                              "0 (zeros, as LoRA's B) makes the adapted model exactly the base model at the start "
                              "(LLMs carry a few very large activations that even 1e-3 lets through).")
    train_head: bool = Field(True, description="Train the task head too (sequence-, token-classification and "
                             "question-answering; a generative model's LM head stays frozen).")
    train_norms: bool = Field(False, description="Train the layer norms too.")


register(MethodSpec("adapter", AdapterConfig, "tuneforge.methods.adapter_layers:apply",
                    "Bottleneck adapters (Houlsby / Pfeiffer) after attention and/or feed-forward blocks.",
                    save="tuneforge.methods.adapter_layers:save_adapter", learning_rates=(1e-3, 2e-4)))
