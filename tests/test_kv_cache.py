"""The preallocated KV cache and the dropping of finished rows.

References are independent of the cache: the model's full forward over all tokens (no cache),
a naive concatenating cache written out here, and each utterance decoded alone."""
import pytest
import torch

from asr.config import ModelDimensions, ModelOptions
from asr.inference.decoding import DecodingOptions, decode
from asr.nn.kv_cache import INITIAL_CAPACITY, DecoderCache, LayerCache
from asr.nn.model import ASRModel
from asr.nn.presets import seed_options
from asr.text.tokenizer import Tokenizer

DIMS = ModelDimensions(n_mels=80, n_audio_ctx=32, n_audio_state=32, n_audio_head=4, n_audio_layer=2,
                       n_vocab=200, n_text_ctx=160, n_text_state=32, n_text_head=4, n_text_layer=2)


def make_model(options=None, seed=0):
    torch.manual_seed(seed)
    model = ASRModel(DIMS, options or ModelOptions()).to(torch.float64).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("options", [ModelOptions(), seed_options()], ids=["whisper", "seed"])
def test_cached_steps_equal_the_full_forward_past_a_buffer_growth(options):
    model = make_model(options)
    mel = torch.randn(3, 80, 64, dtype=torch.float64)
    n_tokens = INITIAL_CAPACITY + 20  # the buffers double once on the way
    tokens = torch.randint(0, DIMS.n_vocab, (3, n_tokens))
    with torch.no_grad():
        audio, mask = model.embed_audio(mel)
        full = model.logits(tokens, audio, mask)
        cache = model.new_cache()
        steps = [model.logits(tokens[:, :3], audio, mask, cache)]
        steps += [model.logits(tokens[:, i:i + 1], audio, mask, cache) for i in range(3, n_tokens)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-9, atol=1e-9)
    assert cache.layers[0].length == n_tokens and cache.offset == n_tokens


def test_steps_write_into_the_buffer_without_reallocating():
    layer = LayerCache()
    k = torch.randn(2, 4, 1, 8)
    layer.append_self(k, k)
    buffer = layer.key_buffer.data_ptr()
    written = [k]
    for _ in range(INITIAL_CAPACITY - 1):
        step = torch.randn(2, 4, 1, 8)
        keys, _ = layer.append_self(step, step)
        written.append(step)
        assert layer.key_buffer.data_ptr() == buffer  # no new tensor per step
    torch.testing.assert_close(keys, torch.cat(written, dim=2))  # the naive concatenation


def test_reorder_and_dropping_utterances_equal_index_select():
    cache = DecoderCache.empty(1, group_size=2)
    layer = cache.layers[0]
    keys = torch.randn(6, 2, 5, 4)  # 3 utterances x 2 beam rows
    layer.append_self(keys, keys + 1)
    layer.cross_key = layer.cross_value = torch.randn(3, 2, 7, 4)  # one per utterance
    cross = layer.cross_key.clone()
    cache.reorder(torch.tensor([1, 1, 2, 3, 5, 4]))
    torch.testing.assert_close(layer.self_key, keys[[1, 1, 2, 3, 5, 4]])
    torch.testing.assert_close(layer.cross_key, cross)  # shared by the group: stays put
    cache.keep_utterances(torch.tensor([0, 2]))
    torch.testing.assert_close(layer.self_key, keys[[1, 1, 5, 4]])
    torch.testing.assert_close(layer.self_value, keys[[1, 1, 5, 4]] + 1)
    torch.testing.assert_close(layer.cross_key, cross[[0, 2]])


class Counting:
    """The model, recording how many rows each decoding step computes."""

    def __init__(self, model):
        self.model, self.rows = model, []
        self.dims = model.dims

    def new_cache(self, **kwargs):
        return self.model.new_cache(**kwargs)

    def logits(self, tokens, audio, mask, cache):
        self.rows.append(tokens.shape[0])
        return self.model.logits(tokens, audio, mask, cache)


TEXTS = ["the quick brown fox jumps over the lazy dog", "she sells sea shells by the sea shore",
         "a stitch in time saves nine", "all that glitters is not gold"] * 4
EOT_BOOST = 2.0  # scales the <|endoftext|> embedding row so that hypotheses end at varied steps


def eot_boosted_model(tokenizer, seed: int) -> ASRModel:
    """A small float64 model with noisy weights whose hypotheses end at varied steps."""
    torch.manual_seed(seed)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=32, n_audio_state=32, n_audio_head=4, n_audio_layer=2,
                           n_vocab=tokenizer.n_vocab, n_text_ctx=64, n_text_state=32, n_text_head=4,
                           n_text_layer=2)
    model = ASRModel(dims, ModelOptions()).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        model.decoder.token_embedding.weight[tokenizer.eot] *= EOT_BOOST
    return model


def test_finished_rows_leave_the_batch_and_results_equal_decoding_alone():
    tokenizer = Tokenizer.train(TEXTS, vocab_size=300)
    model = eot_boosted_model(tokenizer, seed=0)
    options = DecodingOptions(task=None, language=None, without_timestamps=True, sample_len=40)
    lengths = None
    for seed in range(20):  # audio whose hypotheses end at different steps
        mels = torch.randn(4, 80, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            audio, mask = model.embed_audio(mels)
        counting = Counting(model)
        together = decode(counting, tokenizer, audio, mask, options)
        lengths = sorted(len(r.tokens) for r in together)
        if len(set(lengths)) > 1 and lengths[-1] < 40:
            break
    assert len(set(lengths)) > 1  # the test only means something if rows end at different steps
    alone = [decode(model, tokenizer, audio[i:i + 1], None, options)[0] for i in range(4)]
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    assert [r.avg_logprob for r in together] == pytest.approx([r.avg_logprob for r in alone], abs=1e-9)
    # each step computes exactly the rows whose hypothesis has not ended yet: a row whose
    # hypothesis has n tokens (plus <|endoftext|>) is computed at steps 0 .. n
    expected = [sum(1 for n in lengths if n >= step) for step in range(len(counting.rows))]
    assert counting.rows == expected, (counting.rows, lengths)


@pytest.mark.parametrize("beam_size", [2, 3])
def test_beam_search_drops_finished_utterances_and_equals_decoding_alone(beam_size):
    tokenizer = Tokenizer.train(TEXTS, vocab_size=300)
    model = eot_boosted_model(tokenizer, seed=1)
    options = DecodingOptions(task=None, language=None, without_timestamps=True, sample_len=40, beam_size=beam_size)
    for seed in range(20):  # audio whose utterances finish their search at different steps
        mels = torch.randn(3, 80, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            audio, mask = model.embed_audio(mels)
        steps_alone = []
        alone = []
        for i in range(3):
            counting = Counting(model)
            alone.append(decode(counting, tokenizer, audio[i:i + 1], None, options)[0])
            steps_alone.append(len(counting.rows))
        if len(set(steps_alone)) > 1:
            break
    assert len(set(steps_alone)) > 1  # the test only means something if searches end apart
    counting = Counting(model)
    together = decode(counting, tokenizer, audio, mask, options)
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    assert [r.avg_logprob for r in together] == pytest.approx([r.avg_logprob for r in alone], abs=1e-9)
    # each step computes the beam rows of exactly the utterances whose search goes on
    expected = [beam_size * sum(1 for n in steps_alone if n > step) for step in range(max(steps_alone))]
    assert counting.rows == expected, (counting.rows, steps_alone)
