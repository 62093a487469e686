"""Decoding: beam 1 equals greedy, batches equal one-by-one, the cached loop and its scores equal a
naive recomputing loop, and the timestamp rules allow exactly what Whisper's rules allow.
(tests/test_decoding_pins.py pins the beam-search rules and no_speech_prob on models whose
probabilities the test controls.)"""
import copy
import math
from dataclasses import replace

import pytest
import torch

from asr.config import ModelDimensions, ModelOptions
from asr.inference.decoding import (DecodingOptions, FilterContext, TimestampRules, argmax, compression_ratio, decode,
                          initial_tokens, is_looping)
from asr.nn.model import ASRModel
from asr.text.tokenizer import Tokenizer

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "a stitch in time saves nine",
    "all that glitters is not gold",
    "every cloud has a silver lining",
] * 4


EOT_BOOST = 2.5  # scales the <|endoftext|> embedding row in test_scores_equal_naive_recomputation


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=64, n_audio_state=32, n_audio_head=4, n_audio_layer=2,
                           n_vocab=tokenizer.n_vocab, n_text_ctx=48, n_text_state=32, n_text_head=4,
                           n_text_layer=2)
    m = ASRModel(dims, ModelOptions()).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m


def encode(model, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    mel = torch.zeros(len(lengths), 80, max(lengths), dtype=torch.float64)
    for i, n in enumerate(lengths):
        mel[i, :, :n] = torch.randn(80, n, generator=g, dtype=torch.float64)
    with torch.no_grad():
        return model.embed_audio(mel, torch.tensor(lengths))


OPTIONS = [
    DecodingOptions(sample_len=12),
    DecodingOptions(sample_len=12, without_timestamps=True),
]


@pytest.mark.parametrize("options", OPTIONS)
def test_beam_one_equals_greedy(model, tokenizer, options):
    audio, mask = encode(model, [40, 30, 22])
    greedy = decode(model, tokenizer, audio, mask, options)
    beam1 = decode(model, tokenizer, audio, mask, replace(options, beam_size=1))
    assert [r.tokens for r in greedy] == [r.tokens for r in beam1]
    for g, b in zip(greedy, beam1):
        assert g.avg_logprob == pytest.approx(b.avg_logprob, abs=1e-9)
    assert any(len(r.tokens) > 2 for r in greedy)  # the test decodes something


@pytest.mark.parametrize("beam_size", [None, 3])
def test_batched_equals_one_by_one(model, tokenizer, beam_size):
    options = DecodingOptions(sample_len=12, beam_size=beam_size)
    lengths = [40, 30, 22]
    audio, mask = encode(model, lengths)
    batched = decode(model, tokenizer, audio, mask, options)
    for i, n in enumerate(lengths):
        alone_audio, alone_mask = audio[i:i + 1, :(n + 1) // 2], None
        alone = decode(model, tokenizer, alone_audio, alone_mask, options)[0]
        assert alone.tokens == batched[i].tokens
        assert alone.avg_logprob == pytest.approx(batched[i].avg_logprob, abs=1e-6)
        assert alone.no_speech_prob == pytest.approx(batched[i].no_speech_prob, abs=1e-9)


def test_cached_greedy_equals_naive_recomputation(model, tokenizer):
    """A naive greedy loop that recomputes the whole prefix every step, with its own token
    suppression, must pick the same tokens as the cached decoder."""
    options = DecodingOptions(sample_len=10, without_timestamps=True, suppress_blank=False,
                              repetition_guard=False)
    audio, mask = encode(model, [40, 26])
    got = decode(model, tokenizer, audio, mask, options)
    prefix = initial_tokens(tokenizer, options, model.dims.n_text_ctx)
    allowed = torch.zeros(tokenizer.n_vocab, dtype=torch.bool)
    allowed[:tokenizer.n_text] = True
    allowed[tokenizer.eot] = True
    for i in range(2):
        tokens = list(prefix)
        with torch.no_grad():
            for _ in range(10):
                logits = model.logits(torch.tensor([tokens]), audio[i:i + 1], mask[i:i + 1])[0, -1]
                token = int(logits.masked_fill(~allowed, -math.inf).argmax())
                if token == tokenizer.eot:
                    break
                tokens.append(token)
        assert got[i].tokens == tokens[len(prefix):]


@pytest.mark.parametrize("beam_size", [None, 5])
def test_scores_equal_naive_recomputation(model, tokenizer, beam_size):
    """Each result's avg_logprob is the log-probability of its tokens (and of <|endoftext|> when
    it finished within the limit) under the same token suppression, over len(tokens) + 1, as a
    whole-prefix forward without the cache computes it. Greedy and beam search alike: beam search
    moves hypotheses between cache rows, and a score that followed the wrong row would show."""
    sample_len = 12
    options = DecodingOptions(sample_len=sample_len, without_timestamps=True, repetition_guard=False,
                              beam_size=beam_size)
    # the random model never ends within 12 tokens; a longer <|endoftext|> output row (tied
    # embedding) makes it end sometimes, so both kinds of result occur
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.decoder.token_embedding.weight[tokenizer.eot] *= EOT_BOOST
    audio, mask = encode(model, [40, 30, 22, 36], seed=3)
    results = decode(model, tokenizer, audio, mask, options)
    prefix = initial_tokens(tokenizer, options, model.dims.n_text_ctx)
    allowed = torch.zeros(tokenizer.n_vocab, dtype=torch.bool)
    allowed[:tokenizer.n_text] = True
    allowed[tokenizer.eot] = True
    first_allowed = allowed.clone()  # the first sampled token is neither blank nor the end
    first_allowed[tokenizer.encode(" ") + [tokenizer.eot]] = False
    finished = 0
    for i, result in enumerate(results):
        targets = list(result.tokens)
        if len(targets) < sample_len:
            targets.append(tokenizer.eot)
            finished += 1
        with torch.no_grad():
            logits = model.logits(torch.tensor([prefix + targets]), audio[i:i + 1], mask[i:i + 1])[0].double()
        total = 0.0
        for k, token in enumerate(targets):
            row = logits[len(prefix) - 1 + k].masked_fill(~(first_allowed if k == 0 else allowed), -math.inf)
            total += float(row.log_softmax(dim=-1)[token])
        assert result.avg_logprob == pytest.approx(total / (len(result.tokens) + 1), abs=1e-5)
    assert finished > 0  # the <|endoftext|> term is exercised


def allowed_after(tokenizer, sequence, *, mass_rule_logits=None, max_initial=1.0):
    """Which tokens TimestampRules leaves possible after `sequence` (sampled tokens)."""
    prefix = list(tokenizer.sot_sequence("en", "transcribe"))
    rules = TimestampRules(FilterContext(tokenizer, len(prefix)), max_initial)
    if mass_rule_logits is None:  # text tokens likely enough that the mass rule stays out
        logits = torch.zeros(1, tokenizer.n_vocab)
        logits[0, :tokenizer.n_text] = 10.0
        logits[0, tokenizer.eot] = 10.0
    else:
        logits = mass_rule_logits.clone()
    rules.apply(logits, torch.tensor([prefix + sequence]))
    return torch.isfinite(logits[0])


def test_timestamp_rules(tokenizer):
    tb, eot = tokenizer.timestamp_begin, tokenizer.eot
    ts = lambda seconds: tokenizer.timestamp_token(seconds)
    text = tokenizer.encode(" the")
    # first token: a timestamp, no later than 1.0 s
    allowed = allowed_after(tokenizer, [])
    assert not allowed[:tb].any()
    assert allowed[ts(0.0)] and allowed[ts(1.0)] and not allowed[ts(1.02)]
    # an open segment (text after one timestamp) may continue with text
    allowed = allowed_after(tokenizer, [ts(0.0)])
    assert allowed[text[0]] and not allowed[tokenizer.no_timestamps]
    # after text, a timestamp closes the segment: later than its start (no empty segment)
    allowed = allowed_after(tokenizer, [ts(0.5)] + text)
    assert allowed[ts(0.52)] and allowed[ts(2.0)] and not allowed[ts(0.5)] and allowed[text[0]]
    # a closing timestamp must be followed by another timestamp (next start) or the end
    allowed = allowed_after(tokenizer, [ts(0.0)] + text + [ts(1.0)])
    assert allowed[eot] and allowed[ts(1.0)] and not allowed[text[0]]
    # a complete pair (end, start) must be followed by text; the next start is later
    allowed = allowed_after(tokenizer, [ts(0.0)] + text + [ts(1.0), ts(1.2)])
    assert not allowed[tb:].any() and allowed[text[0]]
    allowed = allowed_after(tokenizer, [ts(0.0)] + text + [ts(1.0), ts(1.2)] + text)
    assert allowed[ts(1.22)] and not allowed[ts(1.2)]
    # when the timestamps together outweigh the best text token, a timestamp is forced
    logits = torch.zeros(1, tokenizer.n_vocab)
    logits[0, :tb] = -5.0
    logits[0, text[0]] = 2.0  # best text token: e^2, against 1501 timestamps of e^0 each
    allowed = allowed_after(tokenizer, [ts(0.0)] + text, mass_rule_logits=logits)
    assert not allowed[:tb].any() and allowed[tb:].any()
    logits[0, text[0]] = 9.0  # now e^9 > 1501
    allowed = allowed_after(tokenizer, [ts(0.0)] + text, mass_rule_logits=logits)
    assert allowed[text[0]]
    # rows are ruled each on their own: of three hypotheses only the middle one is forced
    prefix = list(tokenizer.sot_sequence("en", "transcribe"))
    rows = logits.repeat(3, 1)
    rows[1, text[0]] = 2.0
    TimestampRules(FilterContext(tokenizer, len(prefix)), 1.0).apply(rows, torch.tensor([prefix + [ts(0.0)] + text] * 3))
    assert [bool(torch.isfinite(row[:tb]).any()) for row in rows] == [True, False, True]
    assert torch.isfinite(rows[:, tb:]).any(dim=-1).all()


def test_argmax_is_the_first_largest_logit_of_each_row():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 51864, generator=generator)
    logits[1, [7, 900, 51000]] = 50.0  # a tie: the first one wins
    logits[2, -1] = float("inf")
    logits[3, :] = -float("inf")
    logits[3, 12] = 0.0
    want = [max(range(logits.shape[1]), key=lambda i, r=row: (r[i], -i)) for row in logits.tolist()]
    assert argmax(logits).tolist() == want
    assert argmax(logits.double()).tolist() == want  # the torch path


def test_repetition_detection_and_compression_ratio():
    assert is_looping([5, 6, 7] * 4)
    assert is_looping([1, 2] + [9] * 4)
    assert not is_looping([5, 6, 7] * 3)
    assert not is_looping(list(range(40)))
    looped = "the cat sat " * 20
    assert compression_ratio(looped) > 2.4 > compression_ratio("the quick brown fox jumps over the lazy dog")


def test_prompt_goes_before_start_of_transcript(tokenizer):
    options = DecodingOptions(prompt=tuple(tokenizer.encode(" hello there")))
    tokens = initial_tokens(tokenizer, options, n_text_ctx=48)
    assert tokens[0] == tokenizer.sot_prev
    assert tokens[1:tokens.index(tokenizer.sot)] == tokenizer.encode(" hello there")
    long = DecodingOptions(prompt=tuple(range(100)))
    assert len(initial_tokens(tokenizer, long, n_text_ctx=48)) == 1 + 23 + 3


def test_inference_logits_follow_the_embedding_as_it_changes():
    """Without gradients the decoder keeps a transposed copy of the tied output weight; it must
    give the naive logits, and follow in-place changes of the embedding (training steps,
    load_state_dict) instead of serving stale values."""
    torch.manual_seed(1)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=16, n_audio_state=16, n_audio_head=2, n_audio_layer=1,
                           n_vocab=50, n_text_ctx=8, n_text_state=16, n_text_head=2, n_text_layer=1)
    model = ASRModel(dims).eval()
    audio = torch.randn(2, 16, 16)
    tokens = torch.randint(0, 50, (2, 3))

    def naive():
        hidden = {}
        handle = model.decoder.ln.register_forward_hook(lambda m, i, o: hidden.setdefault("x", o))
        with torch.enable_grad():
            model.decoder(tokens, audio)
        handle.remove()
        return torch.nn.functional.linear(hidden["x"].detach(), model.decoder.token_embedding.weight.detach())

    with torch.inference_mode():
        first = model.decoder(tokens, audio)
    torch.testing.assert_close(first, naive(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model.decoder.token_embedding.weight.mul_(-2.0)
    with torch.inference_mode():
        second = model.decoder(tokens, audio)
    torch.testing.assert_close(second, naive(), rtol=1e-5, atol=1e-5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["decoder.token_embedding.weight"].normal_()
    model.load_state_dict(state)
    with torch.no_grad():
        third = model.decoder(tokens, audio)
    torch.testing.assert_close(third, naive(), rtol=1e-5, atol=1e-5)
