"""`run.compile: true` (torch.compile of the training forward, Inductor's C++ backend on CPU)
trains the same trajectory as eager mode on the seed model."""
from __future__ import annotations

import shutil

import pytest

from test_train_resume import losses, make_toy_corpus, run, train_command, write_config

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="torch.compile's CPU backend needs a C++ compiler")


def test_compiled_training_follows_the_eager_trajectory(tmp_path):
    # equal clips two per batch: one input shape, so one compilation
    train, dev = make_toy_corpus(tmp_path / "data", n_train=8, n_dev=2, equal_lengths=True)
    config = write_config(tmp_path / "toy.yaml", train, dev, max_steps=4, dropout=0.0, augment="false", batch_size=2)
    run(train_command(config, "--run-dir", tmp_path / "eager"))
    run(train_command(config, "--run-dir", tmp_path / "compiled", "--set", "run.compile=true"), timeout=600)
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert sorted(compiled) == sorted(eager) == [1, 2, 3, 4]
    for step, loss in eager.items():
        assert abs(compiled[step] - loss) <= 1e-4 * max(1.0, abs(loss)), (step, loss, compiled[step])
    assert len({round(v, 4) for v in eager.values()}) == 4  # the loss moved


@pytest.mark.parametrize("kind", ["vanilla", "seed"])
def test_compiled_blocks_hold_across_batch_shapes(kind):
    # Duration-bucketed batches change batch size, frames and tokens every step. The whole-forward
    # compile it replaces compiled afresh for each (80-140 s a step on 2 cores); the blocks'
    # graphs must serve every later shape. aot_eager traces and guards as Inductor does, quicker.
    # The seed model once needed a graph per rotary layer (torch's orthogonal parametrisation gave
    # each its own class) and fixed lengths while tracing (dynamic convolution's min(64, T), the
    # hybrid heads' choice among three paths by length).
    import torch
    from torch._dynamo.utils import counters

    from asr.config import ModelDimensions
    from asr.nn.model import ASRModel
    from asr.nn.presets import seed_options, vanilla_options
    from asr.train.loop import compile_blocks
    from asr.train.objective import TrainingModel

    torch._dynamo.reset()
    counters.clear()  # reset() leaves the counts of earlier tests
    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=400, n_audio_state=32, n_audio_head=2, n_audio_layer=2,
                           n_vocab=120, n_text_ctx=64, n_text_state=32, n_text_head=2, n_text_layer=2)
    options = vanilla_options() if kind == "vanilla" else seed_options()
    model = TrainingModel(ASRModel(dims, options), n_text=100, ctc_weight=0.3, label_smoothing=0.1, dropout=0.1)
    compile_blocks(model, torch.device("cpu"), backend="aot_eager")

    def step(batch, frames, tokens):
        mels = torch.randn(batch, 80, frames)
        n_frames = torch.full((batch,), frames)
        n_frames[1:] = frames * 3 // 4
        inputs = torch.randint(0, 100, (batch, tokens))
        targets = torch.randint(0, 100, (batch, tokens))
        model(mels, n_frames, inputs, targets)[0].backward()

    # encoder and decoder blocks; then, for the seed model's hybrid heads, inputs past
    # DENSE_MAX_KEYS positions (attended in blocks): at most one more graph per block kind. A first
    # batch as large as the number of heads once tied the two sizes together ("duck sizing").
    step(2, 160, 12)
    step(5, 600, 17)
    compiled = counters["stats"]["unique_graphs"]
    assert compiled <= 4
    for shape in [(4, 180, 14), (7, 120, 9), (2, 700, 21), (6, 210, 19), (2, 460, 30), (2, 90, 5)]:
        step(*shape)
    assert counters["stats"]["unique_graphs"] == compiled
    torch._dynamo.reset()
