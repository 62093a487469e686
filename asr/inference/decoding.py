"""Decoding one window of audio per utterance: greedy, sampling or beam search, batched over
utterances (and beams), always with the KV cache, so each step feeds only the newest token.

The rules that shape the next-token distribution are small `LogitFilter`s applied in order:
blank suppression at the first step, special-token suppression, Whisper's timestamp rules and a
guard against repetition loops.
"""
from __future__ import annotations

import string
import zlib
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .chunked_topk import chunked_topk
from .step_threads import PROBE_STEPS, StepThreads
from ..text.tokenizer import Tokenizer

MAX_INITIAL_TIMESTAMP = 1.0  # seconds: the first timestamp of a window may not start later
REPEAT_LIMIT = 4  # an n-gram repeated this many times in a row ends the hypothesis
MAX_REPEAT_NGRAM = 12  # longest n-gram the repetition guard looks for


@dataclass(frozen=True)
class DecodingOptions:
    task: Optional[str] = "transcribe"  # None: no task token (English-only Whisper models)
    language: Optional[str] = "en"  # None: no language token
    temperature: float = 0.0
    sample_len: Optional[int] = None  # most tokens to sample (default: half the text context)
    beam_size: Optional[int] = None  # None: greedy (sampling when temperature > 0); n: beam search
    patience: float = 1.0  # beam search stops after patience * beam_size finished hypotheses
    length_penalty: Optional[float] = None  # None: rank by mean log-probability
    prompt: Sequence[int] = ()  # text tokens of the previous window or an initial prompt
    suppress_blank: bool = True
    suppress_tokens: Sequence[int] = ()  # further token ids never to produce
    without_timestamps: bool = False
    max_initial_timestamp: Optional[float] = MAX_INITIAL_TIMESTAMP
    repetition_guard: bool = True
    # > 0: joint CTC/attention decoding with this weight on the CTC prefix score (models
    # trained with a CTC head; needs without_timestamps); see asr.inference.ctc_prefix
    ctc_weight: float = 0.0


@dataclass
class DecodingResult:
    tokens: list[int]  # sampled tokens, timestamps included, without the final <|endoftext|>
    text: str
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float
    language: Optional[str] = None
    sum_logprob: float = 0.0  # of the tokens and the final <|endoftext|>

    def rank(self, length_penalty: Optional[float]) -> float:
        """How it ranks against other candidates for the same window (see rank_score)."""
        return rank_score(self.sum_logprob, len(self.tokens), length_penalty)


def rank_score(sum_logprob: float, length: int, length_penalty: Optional[float]) -> float:
    """Whisper's ranking of finished sequences (beam hypotheses, or samples with best_of): the
    mean log-probability per token, or with a length penalty p, the sum over ((5 + length) / 6)^p
    (Google NMT's length normalisation)."""
    if length_penalty is None:
        return sum_logprob / max(length, 1)
    return sum_logprob / ((5 + length) / 6) ** length_penalty


def compression_ratio(text: str) -> float:
    """Bytes of text / bytes of its zlib compression: high for repetitive (looping) text."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


# ---------------------------------------------------------------------------------------------
# logit filters: each edits logits [rows, n_vocab] in place given the tokens so far


@dataclass
class FilterContext:
    tokenizer: Tokenizer
    sample_begin: int  # index in the token rows where sampled tokens start


class SuppressBlank:
    """At the first sampled position, neither a bare space nor <|endoftext|>.

    Whisper's BPE has a bare-space token that no word starts with. A sentencepiece model's word
    boundary piece ("▁") also encodes a bare space, but it starts every word, the first
    included: suppressing it made models trained here with character pieces misspell the first
    word of nearly every utterance ("that rick rested" for "patrick rested"), so a space token
    that starts a word stays allowed."""

    def __init__(self, ctx: FilterContext):
        self.ctx = ctx
        word_starts = {ctx.tokenizer.encode(" " + letter)[0] for letter in string.ascii_lowercase}
        spaces = [t for t in dict.fromkeys(ctx.tokenizer.encode(" ")) if t not in word_starts]
        self.blank = spaces + [ctx.tokenizer.eot]

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        if tokens.shape[1] == self.ctx.sample_begin:
            logits[:, self.blank] = float("-inf")


class SuppressTokens:
    def __init__(self, tokens: Sequence[int]):
        self.tokens = sorted(set(tokens))
        # made once: indexing with the Python list built this tensor anew at every step (~40 us
        # of a ~6 ms step at batch 1)
        self.index = torch.tensor(self.tokens, dtype=torch.long)

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        if self.index.device != logits.device:
            self.index = self.index.to(logits.device)
        logits.index_fill_(1, self.index, float("-inf"))


class TimestampRules:
    """Whisper's rules: start with a timestamp (no later than max_initial_timestamp); timestamps
    come in pairs (end of one segment, start of the next) except right before <|endoftext|>;
    they never go back in time; and when the timestamps together are likelier than any single
    text token, a timestamp is taken."""

    def __init__(self, ctx: FilterContext, max_initial_timestamp: Optional[float]):
        self.ctx = ctx
        self.max_initial = (None if max_initial_timestamp is None
                            else ctx.tokenizer.timestamp_token(max_initial_timestamp))

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        tok = self.ctx.tokenizer
        begin, eot = tok.timestamp_begin, tok.eot
        logits[:, tok.no_timestamps] = float("-inf")
        for row, sequence in enumerate(tokens[:, self.ctx.sample_begin:].tolist()):
            last_was_timestamp = len(sequence) >= 1 and sequence[-1] >= begin
            penultimate_was_timestamp = len(sequence) < 2 or sequence[-2] >= begin
            if last_was_timestamp:
                if penultimate_was_timestamp:  # a pair is complete: text must follow
                    logits[row, begin:] = float("-inf")
                else:  # an open segment: close it with a timestamp, or end
                    logits[row, :eot] = float("-inf")
            timestamps = [t for t in sequence if t >= begin]
            if timestamps:
                # a closing timestamp may equal the opening one; a new segment starts later
                floor = timestamps[-1] if last_was_timestamp and not penultimate_was_timestamp else timestamps[-1] + 1
                logits[row, begin:floor] = float("-inf")
        if tokens.shape[1] == self.ctx.sample_begin:
            logits[:, :begin] = float("-inf")
            if self.max_initial is not None:
                logits[:, self.max_initial + 1:] = float("-inf")
        # Whisper compares log-probabilities: logsumexp(timestamps) > max(text) after
        # log_softmax. The normaliser they share cancels, and exponentiated relative to the best
        # text token the test reads sum(exp(timestamps - best)) > 1: four operations on 1501
        # logits instead of a softmax over all 51864 and torch's logsumexp (~15 operations),
        # ~0.3 ms of a ~6 ms greedy step. An overflow to inf still compares right; -inf - -inf
        # (no text and no timestamp possible) is nan, which is not > 1, as -inf > -inf is not.
        scores = logits.float()
        best_text = scores[:, :begin].amax(dim=-1, keepdim=True)
        timestamps_likelier = (scores[:, begin:] - best_text).exp().sum(dim=-1) > 1
        # row by row: indexing with the boolean mask took 106-123 us at five rows, ~2 % of a
        # beam step, true or not; a row's slice is filled in ~5 us
        for row, likelier in enumerate(timestamps_likelier.tolist()):
            if likelier:
                logits[row, :begin] = float("-inf")


class RepetitionGuard:
    """A hypothesis whose last n-gram (n <= MAX_REPEAT_NGRAM) has repeated REPEAT_LIMIT times
    in a row may only end. Its text then compresses well, which the temperature fallback
    detects."""

    def __init__(self, ctx: FilterContext):
        self.ctx = ctx

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        eot = self.ctx.tokenizer.eot
        for row, sequence in enumerate(tokens[:, self.ctx.sample_begin:].tolist()):
            if is_looping(sequence):
                keep = logits[row, eot].clone()
                logits[row] = float("-inf")
                logits[row, eot] = keep if torch.isfinite(keep) else 0.0


def is_looping(sequence: list[int]) -> bool:
    for n in range(1, MAX_REPEAT_NGRAM + 1):
        if len(sequence) < n * REPEAT_LIMIT:
            break
        tail = sequence[-n:]
        if all(sequence[-(k + 1) * n:len(sequence) - k * n] == tail for k in range(1, REPEAT_LIMIT)):
            return True
    return False


def suppressed_specials(tokenizer: Tokenizer, options: DecodingOptions) -> list[int]:
    """Special tokens that never belong in a transcript (eot and timestamps are handled apart)."""
    tokens = [tokenizer.sot, tokenizer.sot_prev, tokenizer.sot_lm, tokenizer.no_speech,
              tokenizer.transcribe, tokenizer.translate,
              *(tokenizer.language_token(code) for code in tokenizer.languages)]
    if options.without_timestamps:
        tokens.append(tokenizer.no_timestamps)
        tokens.extend(range(tokenizer.timestamp_begin, tokenizer.n_vocab))
    return tokens + list(options.suppress_tokens)


def build_filters(tokenizer: Tokenizer, options: DecodingOptions, sample_begin: int) -> list:
    ctx = FilterContext(tokenizer, sample_begin)
    filters = []
    if options.suppress_blank:
        filters.append(SuppressBlank(ctx))
    filters.append(SuppressTokens(suppressed_specials(tokenizer, options)))
    if not options.without_timestamps:
        filters.append(TimestampRules(ctx, options.max_initial_timestamp))
    if options.repetition_guard:
        filters.append(RepetitionGuard(ctx))
    return filters


# ---------------------------------------------------------------------------------------------
# the decoding loop


def initial_tokens(tokenizer: Tokenizer, options: DecodingOptions, n_text_ctx: int) -> list[int]:
    """[<|startofprev|> prompt...] <|startoftranscript|> <|lang|> <|task|> [<|notimestamps|>]"""
    tokens = list(tokenizer.sot_sequence(options.language, options.task))
    if options.without_timestamps:
        tokens.append(tokenizer.no_timestamps)
    if options.prompt:
        keep = n_text_ctx // 2 - 1  # as Whisper: at most half the context for the prompt
        tokens = [tokenizer.sot_prev, *list(options.prompt)[-keep:]] + tokens
    return tokens


def decode(model, tokenizer: Tokenizer, audio: Tensor, audio_mask: Optional[Tensor],
           options: DecodingOptions = DecodingOptions(),
           generators: Optional[Sequence[torch.Generator]] = None) -> list[DecodingResult]:
    """Decode one window per utterance. audio: encoder output [utterances, frames, d].
    ``generators`` (one CPU torch.Generator per utterance) make sampling at temperature > 0
    reproducible, and independent of which other utterances share the batch. On the CPU each
    window's steps run on the caller's threads or on one, whichever its first steps measured
    faster (asr.inference.step_threads)."""
    # off the CPU there is nothing to time: the caller's count stays as it is
    threads = StepThreads(torch.get_num_threads(), probe_steps=PROBE_STEPS if audio.device.type == "cpu" else 0)
    try:
        with torch.inference_mode():
            return _decode(model, tokenizer, audio, audio_mask, options, generators, threads)
    finally:
        threads.restore()


def _decode(model, tokenizer: Tokenizer, audio: Tensor, audio_mask: Optional[Tensor],
            options: DecodingOptions, generators: Optional[Sequence[torch.Generator]],
            threads: StepThreads) -> list[DecodingResult]:
    n_utt = audio.shape[0]
    prefix = initial_tokens(tokenizer, options, model.dims.n_text_ctx)
    sample_begin = len(prefix)
    sample_len = options.sample_len or model.dims.n_text_ctx // 2
    sample_len = min(sample_len, model.dims.n_text_ctx - sample_begin)
    # beam search whenever a beam size is given (beam 1 included: it must equal greedy)
    beam = options.beam_size if options.beam_size and options.temperature == 0 else None
    filters = build_filters(tokenizer, options, sample_begin)
    beam_rows = beam or 1  # consecutive token rows per utterance, one per hypothesis
    cache = model.new_cache(group_size=beam_rows)
    tokens = torch.tensor([prefix] * (n_utt * beam_rows), device=audio.device)
    ctc = ctc_scorer(model, tokenizer, audio, audio_mask, options, sample_begin, beam_rows)
    # joint CTC/attention scores are log-scores already, and not to be renormalised
    normalize = ctc is None
    search = (BeamSearch(tokenizer, beam, options, normalize) if beam
              else GreedySearch(tokenizer, options.temperature, generators, normalize))

    # Rows that are done leave the batch, so the model only computes the rest: greedy/sampling
    # rows that produced <|endoftext|> (their tokens are padded with it), beam search
    # utterances with enough finished hypotheses (their rows are frozen, padded likewise).
    active = None  # row indices still decoded; None = all of them
    no_speech_probs = None
    step_tokens = tokens
    for _ in range(sample_len):
        threads.start_step()
        logits = model.logits(step_tokens, audio, audio_mask, cache)
        if no_speech_probs is None:  # the prediction right after <|startoftranscript|>
            sot_index = prefix.index(tokenizer.sot)
            probs = logits[::beam_rows, sot_index].float().softmax(dim=-1)
            no_speech_probs = probs[:, tokenizer.no_speech].tolist()
        logits = logits[:, -1]
        for f in filters:
            f.apply(logits, tokens if active is None else tokens[active])
        if ctc is not None:
            logits = ctc.joint_scores(logits, tokens if active is None else tokens[active], active)
        tokens, source, done = search.step(tokens, logits, active)
        threads.end_step()
        if source is not None:
            cache.reorder(source)
        if done:
            break
        if beam is None:
            active, keep = still_running(tokens, active, tokenizer.eot)
        else:
            active, keep = search.still_running(active)
        if keep is not None:  # keep: positions among the previously active utterances
            keep = keep.to(audio.device)
            if beam is None:
                cache.reorder(keep)
            else:
                cache.keep_utterances(keep)
            audio = audio.index_select(0, keep)
            audio_mask = None if audio_mask is None else audio_mask.index_select(0, keep)
        step_tokens = tokens[:, -1:] if active is None else tokens[active, -1:]
    return [
        make_result(tokenizer, sequence, logprob, no_speech_probs[i], options)
        for i, (sequence, logprob) in enumerate(search.best(tokens, sample_begin, options.length_penalty))
    ]


def ctc_scorer(model, tokenizer: Tokenizer, audio: Tensor, audio_mask: Optional[Tensor],
               options: DecodingOptions, sample_begin: int, beam_rows: int):
    """The CTC prefix scorer of joint decoding, or None when options.ctc_weight is 0."""
    if not options.ctc_weight:
        return None
    from .ctc_prefix import CTCPrefixScorer

    head = getattr(model, "ctc_head", None)
    if head is None:
        raise ValueError("joint CTC/attention decoding (a CTC weight > 0) needs a model with a CTC head "
                         "(one trained with loss.ctc_weight > 0, saved with ctc_head.safetensors)")
    if not options.without_timestamps:
        raise ValueError("joint CTC/attention decoding (a CTC weight > 0) runs without timestamps: "
                         "CTC has no timestamp tokens")
    if head.blank != tokenizer.n_text:
        raise ValueError(f"the CTC head has {head.blank} text classes, the tokenizer {tokenizer.n_text} text tokens")
    return CTCPrefixScorer(head.log_probs(audio, audio_mask), options.ctc_weight, tokenizer.eot,
                           sample_begin, beam_rows)


def still_running(tokens: Tensor, active: Optional[Tensor], eot: int) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """(rows still decoding, or None for all; positions among the previously active rows to
    keep, or None when none finished this step)."""
    rows = active if active is not None else torch.arange(tokens.shape[0], device=tokens.device)
    running = tokens[rows, -1] != eot
    if bool(running.all()):
        return active, None
    keep = running.nonzero().squeeze(1)
    return rows[keep], keep


@torch.inference_mode()
def detect_language(model, tokenizer: Tokenizer, audio: Tensor, audio_mask: Optional[Tensor] = None
                    ) -> list[dict[str, float]]:
    """Whisper's language identification: the probabilities of the language tokens right after
    <|startoftranscript|>, renormalised over the languages alone. One dict per utterance of
    encoder output `audio` [utterances, frames, d], language code -> probability."""
    codes = list(tokenizer.languages)
    language_ids = torch.tensor([tokenizer.language_token(c) for c in codes], device=audio.device)
    start = torch.full((audio.shape[0], 1), tokenizer.sot, device=audio.device)
    logits = model.logits(start, audio, audio_mask, model.new_cache())[:, -1]
    probs = logits[:, language_ids].float().softmax(dim=-1)
    return [dict(zip(codes, row)) for row in probs.tolist()]


def make_result(tokenizer, sequence, sum_logprob, no_speech_prob, options) -> DecodingResult:
    text = tokenizer.decode(sequence).strip()
    return DecodingResult(tokens=list(sequence), text=text,
                          avg_logprob=sum_logprob / (len(sequence) + 1), no_speech_prob=no_speech_prob,
                          temperature=options.temperature, compression_ratio=compression_ratio(text),
                          language=options.language, sum_logprob=sum_logprob)


def argmax(logits: Tensor) -> Tensor:
    """logits [rows, n_vocab] -> the index of each row's largest value (the first of equal ones).

    On the CPU through numpy, whose argmax is vectorised: torch's took 45 us for one row of
    51864 float32 logits against numpy's 5 us (2-core AVX-512 EPYC, torch 2.x)."""
    if logits.device.type == "cpu" and logits.dtype == torch.float32:
        return torch.from_numpy(logits.numpy().argmax(axis=-1))
    return logits.argmax(dim=-1)


class GreedySearch:
    """Argmax at temperature 0, otherwise sampling from softmax(logits / temperature)."""

    def __init__(self, tokenizer: Tokenizer, temperature: float,
                 generators: Optional[Sequence[torch.Generator]] = None, normalize: bool = True):
        self.eot = tokenizer.eot
        self.temperature = temperature
        self.generators = generators
        self.normalize = normalize  # False: the scores given are log-scores to use as they are
        self.sum_logprobs = None

    def step(self, tokens: Tensor, logits: Tensor, active: Optional[Tensor] = None):
        """Extend every row of tokens by one; `logits` are those of the rows `active` (None:
        all rows), the others have ended and get <|endoftext|> again."""
        if self.sum_logprobs is None:
            self.sum_logprobs = torch.zeros(tokens.shape[0], dtype=torch.float64, device=tokens.device)
        if self.temperature == 0:
            next_tokens = argmax(logits)
        elif self.generators is not None:  # each row draws from its own seeded stream
            probs = F.softmax(logits.float() / self.temperature, dim=-1).cpu()
            rows = range(tokens.shape[0]) if active is None else active.tolist()
            generators = [self.generators[r] for r in rows]
            next_tokens = torch.cat([torch.multinomial(row, 1, generator=g) for row, g in zip(probs, generators)])
            next_tokens = next_tokens.to(logits.device)
        else:
            next_tokens = torch.distributions.Categorical(logits=logits / self.temperature).sample()
        logprobs = F.log_softmax(logits.float(), dim=-1) if self.normalize else logits.float()
        current = logprobs.gather(1, next_tokens.unsqueeze(1)).squeeze(1)
        # (all rows, the common case, without index tensors: a step at batch 1 is ~6 ms, and
        # each indexing operation cost 10-15 us of it)
        finished = (tokens[:, -1] if active is None else tokens[active, -1]) == self.eot
        current = current.masked_fill(finished, 0.0)
        next_tokens = next_tokens.masked_fill(finished, self.eot)
        if active is None:
            self.sum_logprobs += current
            column = next_tokens
        else:
            self.sum_logprobs[active] += current
            column = torch.full((tokens.shape[0],), self.eot, dtype=tokens.dtype, device=tokens.device)
            column[active] = next_tokens
        tokens = torch.cat([tokens, column.to(tokens.dtype)[:, None]], dim=-1)
        return tokens, None, bool((tokens[:, -1] == self.eot).all())

    def best(self, tokens: Tensor, sample_begin: int, length_penalty):
        for row, sequence in enumerate(tokens[:, sample_begin:].tolist()):
            if self.eot in sequence:
                sequence = sequence[:sequence.index(self.eot)]
            yield sequence, float(self.sum_logprobs[row])


class BeamSearch:
    """Beam search over the `beam` consecutive token rows of each utterance (its beam rows).
    Each step extends every live hypothesis by its beam+1 best tokens and keeps the `beam` best
    live ones; an utterance is done once round(patience * beam) hypotheses have finished."""

    def __init__(self, tokenizer: Tokenizer, beam: int, options: DecodingOptions, normalize: bool = True):
        self.eot = tokenizer.eot
        self.beam = beam
        self.normalize = normalize  # False: the scores given are log-scores to use as they are
        self.max_finished = max(1, round(beam * options.patience))
        self.sum_logprobs = None
        # per utterance: finished hypothesis (token tuple, without <|endoftext|>) -> summed
        # log-probability (its <|endoftext|> included)
        self.finished: list[dict[tuple, float]] = []

    def step(self, tokens: Tensor, logits: Tensor, active: Optional[Tensor] = None):
        """Extend every row of tokens by one. `logits` are those of the rows `active` (None: all
        rows), the beam rows of the utterances still searching; the rows of the others stay as
        they are, padded with <|endoftext|>. Returns (tokens, the source of each active row as a
        position among the active rows or None when unchanged, done)."""
        rows = tokens.shape[0]
        n_utt = rows // self.beam
        if self.sum_logprobs is None:
            self.sum_logprobs = [0.0] * rows
            self.finished = [{} for _ in range(n_utt)]
        live_rows = list(range(rows)) if active is None else active.tolist()
        logprobs = F.log_softmax(logits.float(), dim=-1) if self.normalize else logits.float()
        top_logprobs, top_tokens = chunked_topk(logprobs, self.beam + 1)
        top_logprobs, top_tokens = top_logprobs.tolist(), top_tokens.tolist()
        prefixes = tokens.tolist()
        next_rows = [row + [self.eot] for row in prefixes]  # frozen rows: padded
        sums = list(self.sum_logprobs)
        source = []  # per active row: the position (among active rows) it continues
        for start in range(0, len(live_rows), self.beam):
            utt = live_rows[start] // self.beam
            candidates = {}
            for position in range(start, start + self.beam):
                row = live_rows[position]
                for logprob, token in zip(top_logprobs[position], top_tokens[position]):
                    sequence = tuple(prefixes[row] + [token])
                    score = self.sum_logprobs[row] + logprob
                    if sequence not in candidates or candidates[sequence][0] < score:
                        candidates[sequence] = (score, position)
            kept = []
            for sequence, (score, position) in sorted(candidates.items(), key=lambda kv: -kv[1][0]):
                if sequence[-1] == self.eot:
                    if len(self.finished[utt]) < self.max_finished:
                        self.finished[utt][sequence[:-1]] = score
                    continue
                kept.append((list(sequence), position, score))
                if len(kept) == self.beam:
                    break
            while len(kept) < self.beam:  # fewer live candidates than beams: repeat the last one
                kept.append((kept[-1][0], kept[-1][1], float("-inf")))
            for k, (sequence, position, score) in enumerate(kept):
                next_rows[live_rows[start + k]] = sequence
                sums[live_rows[start + k]] = score
                source.append(position)
        self.sum_logprobs = sums
        done = all(len(finished) >= self.max_finished for finished in self.finished)
        new_tokens = torch.tensor(next_rows, device=tokens.device)
        if source == list(range(len(live_rows))):  # every row extends itself (always so at beam 1)
            return new_tokens, None, done
        return new_tokens, torch.tensor(source, device=tokens.device), done

    def still_running(self, active: Optional[Tensor]) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """(rows of the utterances still searching, or None for all; positions among the
        previously active utterances to keep, or None when none finished this step)."""
        n_utt = len(self.finished)
        live = list(range(n_utt)) if active is None else active.tolist()[::self.beam]
        live = [row // self.beam for row in live] if active is not None else live
        keep = [i for i, utt in enumerate(live) if len(self.finished[utt]) < self.max_finished]
        if len(keep) == len(live):
            return active, None
        rows = [live[i] * self.beam + b for i in keep for b in range(self.beam)]
        return torch.tensor(rows), torch.tensor(keep)

    def best(self, tokens: Tensor, sample_begin: int, length_penalty):
        rows = tokens.tolist()
        for utt, utt_finished in enumerate(self.finished):
            finished = dict(utt_finished)
            if len(finished) < self.beam:  # ran out of length: take the live ones as they are
                for row in range(utt * self.beam, (utt + 1) * self.beam):
                    if self.sum_logprobs[row] > float("-inf"):
                        sequence = rows[row]
                        while sequence and sequence[-1] == self.eot:  # a frozen row's padding
                            sequence = sequence[:-1]
                        finished.setdefault(tuple(sequence), self.sum_logprobs[row])
            if not finished:
                yield [], float("-inf")
                continue

            sequence, logprob = max(finished.items(),
                                    key=lambda item: rank_score(item[1], len(item[0]) - sample_begin, length_penalty))
            yield list(sequence[sample_begin:]), logprob
