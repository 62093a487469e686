"""torch.compile sees the seed model's training forward as one graph: no graph break in any
layer (each break splits the compiled program and costs a recompile per shape). Traced by
dynamo alone (torch._dynamo.explain), no code generated, so it runs in seconds."""
from __future__ import annotations

from dataclasses import replace

import torch

from asr.nn.model import ASRModel
from asr.nn.presets import preset


def test_seed_model_training_forward_traces_without_graph_breaks():
    torch.manual_seed(0)
    dims, options = preset("seed-cpu-small", n_vocab=64)
    dims = replace(dims, n_audio_state=32, n_audio_head=2, n_audio_layer=2, n_text_state=32, n_text_head=2,
                   n_text_layer=2, n_audio_ctx=100, n_text_ctx=16)
    options = replace(options, audio=replace(options.audio, window=8))
    model = ASRModel(dims, options).train()
    mel = torch.randn(2, dims.n_mels, 2 * dims.n_audio_ctx)
    tokens = torch.randint(0, dims.n_vocab, (2, 10))
    n_frames = torch.tensor([2 * dims.n_audio_ctx, 150])
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(mel, tokens, n_frames)
    assert explanation.graph_break_count == 0, [str(reason) for reason in explanation.break_reasons]
    assert explanation.graph_count == 1
