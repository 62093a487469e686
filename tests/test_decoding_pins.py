"""Decoding behaviours pinned against computations written out here, each chosen so that a
plausible slip in the code changes the outcome:

- the decoder's relative position bias is causal T5 buckets (a naive decoder forward with the
  bias table looked up per query/key pair, and position t blind to the tokens after it);
- the beam-search length penalty is Whisper's, sign included (a toy model whose candidates are
  ranked one way by sum / ((5 + length) / 6) ** alpha and the other way without it);
- beam patience: round(beam_size * patience) finished hypotheses are collected before stopping;
- `no_speech_prob` is P(<|nospeech|>) right after <|startoftranscript|>, also when a prompt
  comes first (computed by running the model on the prompt + <|startoftranscript|> alone).

The toy model (`TableModel`) stands in for ASRModel inside `decode`: its next-token
distribution is a table keyed by the tokens sampled so far, so every hypothesis' probability
is known exactly and the search's choices can be worked out by hand.
"""
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from asr.config import ModelDimensions, ModelOptions, StackOptions
from asr.inference import decoding
from asr.inference.decoding import DecodingOptions, decode, initial_tokens
from asr.nn.model import ASRModel
from asr.text.tokenizer import Tokenizer

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "a stitch in time saves nine",
    "all that glitters is not gold",
] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(TEXTS, vocab_size=300)


# ---------------------------------------------------------------------------------------------
# a model whose next-token distribution the test writes down


class TableCache:
    """The token history of every row; beam search reorders it like the real KV cache."""

    def __init__(self):
        self.rows = None

    def reorder(self, source):
        self.rows = [list(self.rows[i]) for i in source.tolist()]


class TableModel:
    """Next-token probabilities by sampled prefix: table[tuple of sampled tokens] = {token: p}.
    Text tokens the entry does not list share what is left of the probability equally; special
    tokens other than <|endoftext|> never occur. Prefixes not in the table use `default`."""

    def __init__(self, tokenizer: Tokenizer, table: dict, options: DecodingOptions, default=None,
                 n_text_ctx: int = 64):
        self.dims = SimpleNamespace(n_text_ctx=n_text_ctx)
        self.tokenizer = tokenizer
        self.table = table
        self.default = default or {}
        self.sample_begin = len(initial_tokens(tokenizer, options, n_text_ctx))
        self.calls = 0

    def new_cache(self, *args, **kwargs):
        return TableCache()

    def distribution(self, sampled: tuple) -> dict:
        return self.table.get(sampled, self.default)

    def prob(self, sampled: tuple, token: int) -> float:
        listed = self.distribution(sampled)
        if token in listed:
            return listed[token]
        if token >= self.tokenizer.n_text:
            return 0.0
        rest = 1.0 - sum(listed.values())
        return rest / (self.tokenizer.n_text - sum(t < self.tokenizer.n_text for t in listed))

    def next_logits(self, sampled: tuple) -> torch.Tensor:
        """log-probabilities (they sum to one, so log_softmax leaves them as they are)."""
        listed = self.distribution(sampled)
        assert sum(listed.values()) < 1.0, "leave some probability for the unlisted text tokens"
        logits = torch.full((self.tokenizer.n_vocab,), -math.inf, dtype=torch.float64)
        for token in [*range(self.tokenizer.n_text), *listed]:
            logits[token] = math.log(self.prob(sampled, token))
        return logits

    def logits(self, tokens, audio, audio_mask, cache):
        self.calls += 1
        new = tokens.tolist()
        cache.rows = new if cache.rows is None else [row + step for row, step in zip(cache.rows, new)]
        n_new = tokens.shape[1]
        out = torch.zeros(len(cache.rows), n_new, self.tokenizer.n_vocab, dtype=torch.float64)
        for r, history in enumerate(cache.rows):
            for i in range(n_new):
                seen = history[:len(history) - n_new + i + 1]
                if len(seen) >= self.sample_begin:  # inside the prefix any finite logits do
                    out[r, i] = self.next_logits(tuple(seen[self.sample_begin:]))
        return out

    def sum_logprob(self, sequence, finished: bool = True) -> float:
        """log P(sequence [+ <|endoftext|>]) from the table."""
        sequence = list(sequence) + ([self.tokenizer.eot] if finished else [])
        return sum(math.log(self.prob(tuple(sequence[:i]), token)) for i, token in enumerate(sequence))


def toy_options(**changes) -> DecodingOptions:
    # nothing reshapes the table's distributions: no blank suppression at the first step, no
    # timestamp rules, no repetition guard (the specials they would suppress are 0 already)
    return replace(DecodingOptions(sample_len=10, without_timestamps=True, suppress_blank=False,
                                   repetition_guard=False), **changes)


def decode_toy(model: TableModel, options: DecodingOptions):
    [result] = decode(model, model.tokenizer, torch.zeros(1, 1, 1), None, options)
    return result


def words(tokenizer, n):
    """n distinct text token ids."""
    ids = list(dict.fromkeys(tokenizer.encode(" quick brown fox jumps over lazy dog sells sea shells")))
    assert len(ids) >= n
    return ids[:n]


# ---------------------------------------------------------------------------------------------
# (b) the length penalty


def whisper_rank_score(sum_logprob: float, length: int, length_penalty) -> float:
    """openai-whisper's MaximumLikelihoodRanker: length = sampled tokens without <|endoftext|>;
    no penalty given: the mean log-probability, else Google NMT's ((5 + length) / 6) ** alpha."""
    penalty = length if length_penalty is None else ((5 + length) / 6) ** length_penalty
    return sum_logprob / penalty


@pytest.fixture(scope="module")
def short_and_long(tokenizer):
    """Beam 2 collects exactly two hypotheses: SHORT = [a] (log-prob -1.00) finishes at the
    second step, LONG = [b1 .. b5] (log-prob -1.44) at the sixth. The plain sum prefers SHORT,
    Whisper's length penalty with alpha = 1 (and the mean) prefers LONG. Unlisted prefixes never
    end (no <|endoftext|>), so no third hypothesis finishes first."""
    eot = tokenizer.eot
    a, b1, b2, b3, b4, b5 = words(tokenizer, 6)
    table = {
        (): {a: 0.45, b1: 0.40},
        (a,): {eot: 0.82},
        (b1,): {b2: 0.9}, (b1, b2): {b3: 0.9}, (b1, b2, b3): {b4: 0.9}, (b1, b2, b3, b4): {b5: 0.9},
        (b1, b2, b3, b4, b5): {eot: 0.9},
    }
    return table, [a], [b1, b2, b3, b4, b5]


@pytest.mark.parametrize("length_penalty", [None, 0.0, 0.5, 1.0, 2.0])
def test_length_penalty_is_whispers(tokenizer, short_and_long, length_penalty):
    table, short, long = short_and_long
    options = toy_options(beam_size=2, length_penalty=length_penalty)
    model = TableModel(tokenizer, table, options)
    candidates = {tuple(short): model.sum_logprob(short), tuple(long): model.sum_logprob(long)}
    want = max(candidates, key=lambda s: whisper_rank_score(candidates[s], len(s), length_penalty))
    got = decode_toy(model, options)
    assert got.tokens == list(want)
    assert got.avg_logprob == pytest.approx(candidates[want] / (len(want) + 1), abs=1e-6)


def test_length_penalty_decides_the_toy_case(short_and_long, tokenizer):
    """The case above can tell the penalty's sign: with alpha = 1 Whisper's formula picks LONG,
    the sum times the penalty (the sign flipped) or no penalty at all picks SHORT."""
    table, short, long = short_and_long
    model = TableModel(tokenizer, table, toy_options())
    s, l = model.sum_logprob(short), model.sum_logprob(long)
    assert whisper_rank_score(l, 5, 1.0) > whisper_rank_score(s, 1, 1.0)
    assert l * ((5 + 5) / 6) < s * ((5 + 1) / 6)  # flipped sign
    assert l < s  # alpha = 0: the plain sum


# ---------------------------------------------------------------------------------------------
# (c) patience


@pytest.fixture(scope="module")
def late_winner(tokenizer):
    """Beam 2. Finished in order: A = [a] at step 2 (mean -1.20), C = [a, a2] at step 3 (mean
    -0.92), D = [b, b2, b3, b4] at step 5 (mean -0.41, the best), then a junk hypothesis at
    step 6 (unlisted prefixes end with probability 0.5, far below the others). So patience 1
    (2 finished) stops at step 3 with C; patience 1.3, 1.5 and 2 (3, 3 and 4 finished) wait
    for D."""
    eot = tokenizer.eot
    a, a2, b, b2, b3, b4 = words(tokenizer, 6)
    table = {
        (): {a: 0.5, b: 0.3},
        (a,): {eot: 0.6, a2: 0.35}, (a, a2): {eot: 0.9},
        (b,): {b2: 0.9}, (b, b2): {b3: 0.9}, (b, b2, b3): {b4: 0.9}, (b, b2, b3, b4): {eot: 0.9},
    }
    return table, {"A": [a], "C": [a, a2], "D": [b, b2, b3, b4]}, {eot: 0.5}


@pytest.mark.parametrize("patience,collected,steps,winner", [
    (1.0, 2, 3, "C"),  # round(2 * 1.0) = 2: A and C
    (1.3, 3, 5, "D"),  # round(2 * 1.3) = 3 (rounded, not truncated to 2): A, C, D
    (1.5, 3, 5, "D"),  # round(2 * 1.5) = 3: A, C, D
    (2.0, 4, 6, "D"),  # round(2 * 2.0) = 4: A, C, D and the junk one
])
def test_patience_collects_round_beam_times_patience_finished(tokenizer, late_winner, monkeypatch,
                                                              patience, collected, steps, winner):
    table, named, default = late_winner
    searches = []

    class RecordingBeamSearch(decoding.BeamSearch):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            searches.append(self)

    monkeypatch.setattr(decoding, "BeamSearch", RecordingBeamSearch)
    options = toy_options(beam_size=2, patience=patience)
    model = TableModel(tokenizer, table, options, default=default)
    got = decode_toy(model, options)
    assert got.tokens == named[winner]
    assert got.avg_logprob == pytest.approx(model.sum_logprob(named[winner]) / (len(named[winner]) + 1),
                                            abs=1e-6)
    assert model.calls == steps  # stopped as soon as enough had finished
    [search] = searches
    finished = search.finished[0]
    assert len(finished) == collected == round(2 * patience)
    # what was collected, in the order it finished, with its exact log-probability
    order = [named[k] for k in ("A", "C", "D")][:collected]
    assert [list(s[model.sample_begin:]) for s in finished][:len(order)] == order
    for sequence, score in finished.items():
        assert score == pytest.approx(model.sum_logprob(sequence[model.sample_begin:]), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# greedy against beam search where the locally best first token leads nowhere


def test_beam_search_escapes_the_greedy_garden_path(tokenizer):
    """G = [g, g2]: g is the likeliest first token, but every continuation of it is unsure;
    H = [h, h2] starts less likely and then is nearly certain. Greedy takes G; beam 2 finds H,
    whose mean log-probability is higher."""
    eot = tokenizer.eot
    g, g2, g3, h, h2 = words(tokenizer, 5)
    table = {
        (): {g: 0.6, h: 0.4 - 1e-3},
        (g,): {g2: 0.4, g3: 0.3}, (g, g2): {eot: 0.5}, (g, g3): {eot: 0.5},
        (h,): {h2: 0.95}, (h, h2): {eot: 0.95},
    }
    options = toy_options()
    model = TableModel(tokenizer, table, options)
    greedy = decode_toy(model, options)
    assert greedy.tokens == [g, g2]
    assert greedy.avg_logprob == pytest.approx(model.sum_logprob([g, g2]) / 3, abs=1e-6)
    beam = decode_toy(TableModel(tokenizer, table, options), replace(options, beam_size=2))
    assert beam.tokens == [h, h2]
    assert beam.avg_logprob == pytest.approx(model.sum_logprob([h, h2]) / 3, abs=1e-6)
    assert beam.avg_logprob > greedy.avg_logprob


# ---------------------------------------------------------------------------------------------
# real models (tiny, double precision, every parameter perturbed so zero-initialised extras act)


def perturbed(model: ASRModel, seed: int = 0, scale: float = 0.3) -> ASRModel:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def small_dims(n_vocab: int, **changes) -> ModelDimensions:
    dims = ModelDimensions(n_mels=80, n_audio_ctx=32, n_audio_state=32, n_audio_head=4, n_audio_layer=1,
                           n_vocab=n_vocab, n_text_ctx=48, n_text_state=32, n_text_head=4, n_text_layer=2)
    return replace(dims, **changes)


# (a) the decoder's relative position bias


def naive_causal_t5_bucket(relative: int, num_buckets: int, max_distance: int) -> int:
    """T5's _relative_position_bucket with bidirectional=False, for one key - query distance:
    keys after the query all share bucket 0; distances below num_buckets / 2 are exact, then
    logarithmic up to max_distance, then the last bucket."""
    distance = max(-relative, 0)
    exact = num_buckets // 2
    if distance < exact:
        return distance
    log_bucket = exact + int(math.log(distance / exact) / math.log(max_distance / exact) * (num_buckets - exact))
    return min(log_bucket, num_buckets - 1)


def naive_decoder_logits(decoder, tokens: list[int], audio: torch.Tensor, use_bias: bool = True):
    """One sequence through the decoder written out with loops over heads: token + learned
    positions, per block causal self-attention with bias[h, i, j] = table[bucket(j - i), h],
    cross-attention to `audio` [frames, d], GELU MLP; final LayerNorm; tied output weight."""
    n, n_head = len(tokens), decoder.blocks[0].attn.n_head
    table = decoder.positions.relative_bias.embedding.weight
    buckets = torch.tensor([[naive_causal_t5_bucket(j - i, table.shape[0], decoder.positions.relative_bias.max_distance)
                             for j in range(n)] for i in range(n)])
    bias = table[buckets].permute(2, 0, 1) if use_bias else torch.zeros(n_head, n, n, dtype=table.dtype)
    future = torch.ones(n, n, dtype=torch.bool).triu(1)
    x = decoder.token_embedding.weight[tokens] + decoder.positions.absolute[:n]

    def attend(q, k, v, causal_with_bias=False):
        outs = []
        width = q.shape[-1] // n_head
        for h in range(n_head):
            part = slice(h * width, (h + 1) * width)
            scores = q[:, part] @ k[:, part].T / math.sqrt(width)
            if causal_with_bias:
                scores = (scores + bias[h]).masked_fill(future, -math.inf)
            outs.append(torch.softmax(scores, dim=-1) @ v[:, part])
        return torch.cat(outs, dim=-1)

    for block in decoder.blocks:
        q, k, v = block.attn.qkv(block.attn_ln(x)).chunk(3, dim=-1)
        x = x + block.attn.out(attend(q, k, v, causal_with_bias=True))
        cross = block.cross_attn
        q = cross.query(block.cross_attn_ln(x))
        k, v = cross.kv(audio).chunk(2, dim=-1)
        x = x + cross.out(attend(q, k, v))
        x = x + block.mlp(block.mlp_ln(x))
    return decoder.ln(x) @ decoder.token_embedding.weight.T


@pytest.mark.parametrize("num_buckets,max_distance", [(8, 16), (32, 128)])
def test_decoder_relative_bias_is_causal_t5(num_buckets, max_distance):
    text = StackOptions(positions="learned", relative_bias=True, bias_buckets=num_buckets,
                        bias_max_distance=max_distance, attention="mha")
    model = perturbed(ASRModel(small_dims(60), ModelOptions(text=text)).double().eval())
    decoder = model.decoder
    n = 24  # distances 0..23: exact, logarithmic and (for 8/16) past max_distance
    torch.manual_seed(1)
    tokens = torch.randint(0, 60, (n,)).tolist()
    mel = torch.randn(1, 80, 40, dtype=torch.float64)
    with torch.no_grad():
        audio, _ = model.embed_audio(mel)
        want = naive_decoder_logits(decoder, tokens, audio[0])
        # the bias matters: without it the logits move
        assert (naive_decoder_logits(decoder, tokens, audio[0], use_bias=False) - want).abs().max() > 1e-2
        full = model.logits(torch.tensor([tokens]), audio)[0]
        torch.testing.assert_close(full, want.float(), rtol=1e-5, atol=1e-5)
        # the cached path: one token at a time, the bias row of each new query from the offset
        cache = model.new_cache()
        steps = torch.cat([model.logits(torch.tensor([[t]]), audio, None, cache)[0] for t in tokens])
        torch.testing.assert_close(steps, want.float(), rtol=1e-5, atol=1e-5)
        # position t is blind to the tokens after it
        for t in (0, 7, 15):
            changed = tokens[:t + 1] + [(x + 1) % 60 for x in tokens[t + 1:]]
            moved = model.logits(torch.tensor([changed]), audio)[0]
            torch.testing.assert_close(moved[:t + 1], full[:t + 1], rtol=0, atol=1e-6)
            assert (moved[t + 1:] - full[t + 1:]).abs().max() > 1e-3
        # the stack's bias grid itself: causal T5 buckets looked up per (query, key)
        grid = decoder.positions.attention_inputs(n, 0, None).bias.dense()[0]
    weight = decoder.positions.relative_bias.embedding.weight.detach()
    for i in range(n):
        for j in range(n):
            torch.testing.assert_close(grid[:, i, j], weight[naive_causal_t5_bucket(j - i, num_buckets, max_distance)],
                                       rtol=0, atol=0)


# (d) no_speech_prob with and without a prompt


@pytest.fixture(scope="module")
def model(tokenizer):
    return perturbed(ASRModel(small_dims(tokenizer.n_vocab)).double().eval())


def encoded(model, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    mel = torch.zeros(len(lengths), 80, max(lengths), dtype=torch.float64)
    for i, n in enumerate(lengths):
        mel[i, :, :n] = torch.randn(80, n, generator=g, dtype=torch.float64)
    with torch.no_grad():
        return model.embed_audio(mel, torch.tensor(lengths))


def no_speech_reference(model, tokenizer, up_to_sot: list[int], audio, mask) -> float:
    """P(<|nospeech|>) predicted at <|startoftranscript|>: the model run on the tokens up to and
    including it alone (the decoder is causal, so what follows cannot matter)."""
    with torch.no_grad():
        logits = model.logits(torch.tensor([up_to_sot]), audio, mask)[0, -1]
    return float(logits.double().softmax(dim=-1)[tokenizer.no_speech])


@pytest.mark.parametrize("beam_size", [None, 3])
@pytest.mark.parametrize("prompt", ["", " she sells sea shells"])
def test_no_speech_prob_is_read_at_start_of_transcript(model, tokenizer, beam_size, prompt):
    prompt_tokens = tokenizer.encode(prompt) if prompt else []
    options = DecodingOptions(sample_len=4, beam_size=beam_size, prompt=tuple(prompt_tokens))
    up_to_sot = ([tokenizer.sot_prev, *prompt_tokens] if prompt_tokens else []) + [tokenizer.sot]
    lengths = [40, 30, 22]
    audio, mask = encoded(model, lengths)
    results = decode(model, tokenizer, audio, mask, options)
    prefix = up_to_sot + [tokenizer.language_token("en"), tokenizer.transcribe]
    for i, result in enumerate(results):
        want = no_speech_reference(model, tokenizer, up_to_sot, audio[i:i + 1], mask[i:i + 1])
        # (small probabilities, from a random model: compared relatively)
        assert result.no_speech_prob == pytest.approx(want, rel=1e-5, abs=0)  # float32 logits
        # the test can tell positions apart: elsewhere in the prefix the probability differs
        for position in range(len(prefix)):
            if position != len(up_to_sot) - 1:
                other = no_speech_reference(model, tokenizer, prefix[:position + 1], audio[i:i + 1], mask[i:i + 1])
                assert abs(other - want) > 1e-2 * want
