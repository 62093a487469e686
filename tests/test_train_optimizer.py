"""The training optimiser and what reads the weights between its steps: after a step of
make_optimizer's (fused) AdamW, a no-grad forward sees the new weights. The fused kernel does not
bump the parameters' version counters, and TextDecoder.output_weight keys its copy of the tied
projection on that counter: without make_optimizer's hook every validation after the first used
the first one's projection. The reference is the embedding table itself and a fresh model
loaded with the same weights."""
from __future__ import annotations

import copy

import torch

from asr.config import ModelDimensions
from asr.nn.model import ASRModel
from asr.train.config import config_from_dict
from asr.train.loop import make_optimizer


def test_no_grad_forward_after_a_fused_step_uses_the_new_weights():
    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=8, n_audio_ctx=16, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=40, n_text_ctx=16, n_text_state=32, n_text_head=2, n_text_layer=1)
    model = ASRModel(dims)
    config = config_from_dict({"data": {"train": "unused"}, "optim": {"fused": True, "lr": 0.05}}, "test")
    optimizer = make_optimizer(model, config, torch.device("cpu"))
    mels, tokens = torch.randn(2, 8, 32), torch.randint(0, 40, (2, 6))

    def no_grad_logits(m):
        with torch.no_grad():
            return m.logits(tokens, m.embed_audio(mels)[0])

    no_grad_logits(model)  # a validation: builds the projection's copy
    model.logits(tokens, model.embed_audio(mels)[0]).logsumexp(-1).mean().backward()
    optimizer.step()
    with torch.no_grad():
        projection = model.decoder.output_weight(torch.float32)
    torch.testing.assert_close(projection, model.decoder.token_embedding.weight.t(), rtol=0, atol=0)
    fresh = copy.deepcopy(model)  # the same weights, no copy made yet
    fresh.decoder.__dict__.pop("_output_weight", None)
    fresh.decoder.__dict__.pop("_output_weight_key", None)
    torch.testing.assert_close(no_grad_logits(model), no_grad_logits(fresh), rtol=0, atol=0)
