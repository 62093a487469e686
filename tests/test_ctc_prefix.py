"""Joint CTC/attention decoding: the CTC prefix scores against a brute-force sum over every
alignment, joint greedy decoding against a naive search over those sums, the CTC head saved and
loaded with a model directory, and the blank suppression that must not forbid a sentencepiece
model's word-start piece."""
import itertools
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from asr.inference.ctc_prefix import CTCPrefixScorer, linear_recurrence
from asr.inference.decoding import DecodingOptions, FilterContext, SuppressBlank, decode
from asr.nn.ctc_head import CTCHead

sys.path.insert(0, str(Path(__file__).parent))
from test_decoding_pins import TableModel, toy_options, tokenizer, words  # noqa: E402,F401


def collapse(path, blank):
    out, previous = [], None
    for label in path:
        if label != previous and label != blank:
            out.append(label)
        previous = label
    return tuple(out)


def brute_force(log_probs, labels, blank):
    """(prefix probabilities, exact-sequence probabilities) over every path through the given
    classes: log_probs [T, classes], the other classes taken to have probability 0."""
    prefix, exact = {}, {}
    for path in itertools.product([*labels, blank], repeat=log_probs.shape[0]):
        p = math.exp(sum(float(log_probs[t, c]) for t, c in enumerate(path)))
        y = collapse(path, blank)
        exact[y] = exact.get(y, 0.0) + p
        for k in range(len(y) + 1):
            prefix[y[:k]] = prefix.get(y[:k], 0.0) + p
    return prefix, exact


def test_linear_recurrence_equals_the_loop():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, generator=g, dtype=torch.float64)
    a = torch.randn(3, 9, generator=g, dtype=torch.float64)
    log_b = -torch.rand(3, 9, generator=g, dtype=torch.float64) * 3
    expected = torch.empty(3, 9, dtype=torch.float64)
    expected[:, 0] = x0
    for t in range(1, 9):
        expected[:, t] = torch.logaddexp(expected[:, t - 1], a[:, t - 1]) + log_b[:, t]
    torch.testing.assert_close(linear_recurrence(x0, a, log_b), expected, rtol=0, atol=1e-10)


def test_prefix_scores_equal_the_sum_over_alignments():
    """Two utterances in one batch, the second padded (4 real frames of 6): every hypothesis
    of up to 3 labels gets log psi(h + c) - log psi(h) and, for <|endoftext|>, log P(exactly h)
    - log psi(h), as the enumeration of all 4^T paths gives."""
    g = torch.Generator().manual_seed(0)
    classes, frames, d = 4, 6, 5  # labels 0, 1, 2 and the blank 3
    head = CTCHead(torch.randn(classes, d, generator=g) * 2, torch.randn(classes, generator=g))
    audio = torch.randn(2, frames, d, generator=g)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    eot = 7
    scorer = CTCPrefixScorer(head.log_probs(audio, mask), weight=1.0, eot=eot, sample_begin=0)
    refs = [brute_force(head.log_probs(audio[i:i + 1, :n])[0], [0, 1, 2], 3) for i, n in enumerate([6, 4])]
    checked = 0
    for length in range(4):
        for h in itertools.product([0, 1, 2], repeat=length):
            tokens = torch.tensor([list(h)] * 2, dtype=torch.long).reshape(2, length)
            joint = scorer.joint_scores(torch.zeros(2, 8), tokens)
            for row, (prefix, exact) in enumerate(refs):
                if prefix.get(h, 0.0) == 0.0:
                    continue
                for c in (0, 1, 2):
                    if prefix.get(h + (c,), 0.0) > 0.0:
                        expected = math.log(prefix[h + (c,)]) - math.log(prefix[h])
                        assert joint[row, c].item() == pytest.approx(expected, abs=2e-5), (row, h, c)
                        checked += 1
                expected_eot = math.log(exact[h]) - math.log(prefix[h]) if exact.get(h) else None
                if expected_eot is not None:
                    assert joint[row, eot].item() == pytest.approx(expected_eot, abs=2e-5), (row, h)
                assert joint[row, 4:eot].eq(float("-inf")).all()  # not candidates
    assert checked > 80


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_prefix_scores_on_cuda_equal_those_on_the_cpu():
    """Validation decodes on the training device: CTC log-probabilities and attention logits on
    CUDA, token rows on either side. That mix once stopped every CUDA training run at its first
    validation (tensors on two devices); the joint scores must come back on the logits' device
    and equal the CPU's, which the brute-force test above checks."""
    g = torch.Generator().manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(2, 6, 4, generator=g, dtype=torch.float64), -1)
    logits = torch.randn(2, 8, generator=g)
    tokens = torch.tensor([[0, 1], [2, 2]])
    cpu_scorer = CTCPrefixScorer(log_probs, weight=0.5, eot=7, sample_begin=0)
    gpu_scorer = CTCPrefixScorer(log_probs.cuda(), weight=0.5, eot=7, sample_begin=0)
    for length in range(3):
        expected = cpu_scorer.joint_scores(logits, tokens[:, :length])
        got = gpu_scorer.joint_scores(logits.cuda(), tokens[:, :length].cuda(), torch.arange(2).cuda())
        assert got.is_cuda
        assert torch.allclose(got.cpu(), expected, atol=1e-6, equal_nan=True)


def test_joint_weight_mixes_attention_and_ctc():
    log_probs = torch.log_softmax(torch.randn(1, 5, 4, dtype=torch.float64), -1)
    logits = torch.randn(1, 6)
    empty = torch.zeros(1, 0, dtype=torch.long)
    ctc_only = CTCPrefixScorer(log_probs, weight=1.0, eot=5, sample_begin=0).joint_scores(logits, empty)
    half = CTCPrefixScorer(log_probs, weight=0.5, eot=5, sample_begin=0).joint_scores(logits, empty)
    attention = torch.log_softmax(logits.double(), -1).float()
    for c in (0, 1, 2, 5):
        assert half[0, c].item() == pytest.approx(0.5 * attention[0, c].item() + 0.5 * ctc_only[0, c].item(), abs=1e-5)


class FixedCTC:
    """A CTC head whose log-probabilities the test gives: only `labels` and the blank can occur."""

    def __init__(self, log_probs, blank):
        self.table, self.blank = log_probs, blank

    def log_probs(self, audio, audio_mask=None):
        return self.table


def naive_joint_greedy(model, ctc_log_probs, labels, blank, eot, weight, max_len):
    """Greedy search scoring every next token by brute-force prefix sums."""
    prefix, exact = brute_force(ctc_log_probs, labels, blank)
    h = ()
    while len(h) < max_len:
        attention = torch.log_softmax(model.next_logits(h), -1)
        scores = {c: (1 - weight) * float(attention[c]) + weight * (math.log(prefix.get(h + (c,), 1e-300))
                                                                     - math.log(prefix[h]))
                  for c in labels}
        scores[eot] = (1 - weight) * float(attention[eot]) + weight * (math.log(exact.get(h, 1e-300))
                                                                       - math.log(prefix[h]))
        best = max(scores, key=scores.get)
        if best == eot:
            break
        h += (best,)
    return list(h)


@pytest.mark.parametrize("weight", [0.3, 0.7])
def test_joint_greedy_decoding_equals_a_naive_search(tokenizer, weight):
    """An attention model that prefers the wrong words and a CTC head that has heard the right
    ones: decode() follows the joint score, step by step, as a brute-force search does."""
    a, b, c = words(tokenizer, 3)
    eot, blank = tokenizer.eot, tokenizer.n_text
    table = {(): {a: 0.5, b: 0.3}, (a,): {a: 0.6, c: 0.2}, (b,): {c: 0.5, eot: 0.2},
             (a, a): {eot: 0.5}, (b, c): {eot: 0.6}, (a, c): {eot: 0.7}}
    options = toy_options(ctc_weight=weight)
    model = TableModel(tokenizer, table, options, default={eot: 0.5})
    frames = 7
    g = torch.Generator().manual_seed(3)
    log_probs = torch.full((1, frames, blank + 1), -1.0e4, dtype=torch.float64)
    # the audio says "b c": b early, c late, blanks around
    loud = torch.tensor([[0.1, 4, 0.1, 0.1], [0.1, 3, 0.1, 1], [0.1, 0.1, 0.5, 3], [0.1, 0.1, 4, 0.1],
                         [0.1, 0.1, 3, 1], [0.5, 0.1, 0.1, 3], [0.1, 0.1, 0.1, 4]], dtype=torch.float64)
    loud = loud + 0.1 * torch.rand(loud.shape, generator=g, dtype=torch.float64)
    log_probs[0][:, [a, b, c, blank]] = torch.log_softmax(loud, -1)
    model.ctc_head = FixedCTC(log_probs, blank)
    [result] = decode(model, tokenizer, torch.zeros(1, 1, 1), None, options)
    expected = naive_joint_greedy(model, log_probs[0], [a, b, c], blank, eot, weight, options.sample_len)
    assert result.tokens == expected
    attention_only = decode(model, tokenizer, torch.zeros(1, 1, 1), None, toy_options())[0].tokens
    assert attention_only == [a, a]  # what the decoder alone says
    if weight == 0.7:
        assert expected == [b, c]  # the CTC head's words win when it weighs most


def test_joint_decoding_needs_a_ctc_head_and_no_timestamps(tokenizer):
    model = TableModel(tokenizer, {}, toy_options(), default={tokenizer.eot: 0.5})
    model.ctc_head = None
    with pytest.raises(ValueError, match="CTC head"):
        decode(model, tokenizer, torch.zeros(1, 1, 1), None, toy_options(ctc_weight=0.5))
    model.ctc_head = FixedCTC(torch.zeros(1, 3, tokenizer.n_text + 1), tokenizer.n_text)
    with pytest.raises(ValueError, match="without timestamps"):
        decode(model, tokenizer, torch.zeros(1, 1, 1), None, toy_options(ctc_weight=0.5, without_timestamps=False))


def test_ctc_head_travels_with_the_model_directory(tmp_path):
    from asr.config import ModelDimensions, ModelOptions
    from asr.nn.model import ASRModel
    from asr.store.checkpoint import load_checkpoint, save_checkpoint

    dims = ModelDimensions(n_mels=80, n_audio_ctx=16, n_audio_state=16, n_audio_head=2, n_audio_layer=1,
                           n_vocab=40, n_text_ctx=8, n_text_state=16, n_text_head=2, n_text_layer=1)
    model = ASRModel(dims, ModelOptions())
    head = CTCHead(torch.randn(31, 16), torch.randn(31))
    save_checkpoint(model, tmp_path / "with", tokenizer={"kind": "test"}, ctc_head=head)
    save_checkpoint(model, tmp_path / "without", tokenizer={"kind": "test"})
    loaded, _ = load_checkpoint(tmp_path / "with")
    assert torch.equal(loaded.ctc_head.weight, head.weight) and torch.equal(loaded.ctc_head.bias, head.bias)
    assert loaded.ctc_head.blank == 30
    assert load_checkpoint(tmp_path / "without")[0].ctc_head is None
    assert set(loaded.state_dict()) == set(model.state_dict())  # not part of the weights


def test_blank_suppression_keeps_a_word_start_piece():
    """Whisper's BPE: the bare space (220) is suppressed at the first step, since no word starts
    with it. A sentencepiece model whose words start with the piece "\u2581" keeps it allowed."""
    class Toy:
        eot = 99

        def __init__(self, pieces):
            self.pieces = pieces

        def encode(self, text):
            return self.pieces(text)

    gpt2_like = Toy(lambda text: [220] if text == " " else [1000 + ord(text[-1])])
    sentencepiece_like = Toy(lambda text: [5, 5] if text == " " else [5, ord(text[-1])])
    assert SuppressBlank(FilterContext(gpt2_like, 3)).blank == [220, 99]
    assert SuppressBlank(FilterContext(sentencepiece_like, 3)).blank == [99]


def test_average_averages_the_ctc_heads(tmp_path, tokenizer):
    from asr.config import ModelDimensions, ModelOptions
    from asr.nn.model import ASRModel
    from asr.store.checkpoint import load_checkpoint, save_checkpoint
    from asr.train.average import average_checkpoints

    dims = ModelDimensions(n_mels=80, n_audio_ctx=16, n_audio_state=16, n_audio_head=2, n_audio_layer=1,
                           n_vocab=tokenizer.n_vocab, n_text_ctx=8, n_text_state=16, n_text_head=2, n_text_layer=1)
    classes = tokenizer.n_text + 1
    heads = [CTCHead(torch.randn(classes, 16), torch.randn(classes)) for _ in range(3)]
    for i, head in enumerate(heads):
        save_checkpoint(ASRModel(dims, ModelOptions()), tmp_path / f"m{i}", tokenizer=tokenizer,
                        ctc_head=head if i < 2 else None)
    both, _ = load_checkpoint(average_checkpoints([tmp_path / "m0", tmp_path / "m1"], tmp_path / "avg"))
    torch.testing.assert_close(both.ctc_head.weight, (heads[0].weight + heads[1].weight) / 2)
    torch.testing.assert_close(both.ctc_head.bias, (heads[0].bias + heads[1].bias) / 2)
    one_without, _ = load_checkpoint(average_checkpoints([tmp_path / "m0", tmp_path / "m2"], tmp_path / "avg2"))
    assert one_without.ctc_head is None  # a head averaged with nothing would not match the weights


def test_running_average_keeps_the_ctc_head(tokenizer):
    """The running average covers the CTC head as well: its mean over the updates equals the
    arithmetic mean of the head's weights at those steps, and the model's weights are untouched
    by the head's. A checkpoint from before (no head average) resumes without a head."""
    from asr.config import ModelDimensions, ModelOptions
    from asr.nn.model import ASRModel
    from asr.train.average import RunningAverage

    dims = ModelDimensions(n_mels=80, n_audio_ctx=16, n_audio_state=16, n_audio_head=2, n_audio_layer=1,
                           n_vocab=tokenizer.n_vocab, n_text_ctx=8, n_text_state=16, n_text_head=2, n_text_layer=1)
    model = ASRModel(dims, ModelOptions())
    head = torch.nn.Linear(16, tokenizer.n_text + 1)
    average = RunningAverage(model, head)
    seen_heads, seen_ln = [], []
    for _ in range(4):
        with torch.no_grad():
            for p in [*model.parameters(), *head.parameters()]:
                p.add_(torch.randn_like(p))
        seen_heads.append((head.weight.detach().clone(), head.bias.detach().clone()))
        seen_ln.append(model.decoder.ln.weight.detach().clone())
        average.update(model, head)
    averaged = average.ctc_head()
    torch.testing.assert_close(averaged.weight, torch.stack([w for w, _ in seen_heads]).mean(0))
    torch.testing.assert_close(averaged.bias, torch.stack([b for _, b in seen_heads]).mean(0))
    copy = ASRModel(dims, ModelOptions())
    average.copy_into(copy)
    torch.testing.assert_close(copy.decoder.ln.weight, torch.stack(seen_ln).mean(0))

    older = {k: v for k, v in average.state_tensors().items() if ".ctc_head." not in k}
    resumed = RunningAverage(model, head)
    resumed.load_state_tensors(older, average.count)
    assert resumed.ctc_head() is None
    torch.testing.assert_close(resumed.state_tensors()["average.decoder.ln.weight"], torch.stack(seen_ln).mean(0))
    assert RunningAverage(model).ctc_head() is None  # training without a CTC loss


def test_joint_beam_search_finds_the_best_joint_sequence(tokenizer):
    """Beam search with the CTC term: the per-step joint scores telescope to
    (1 - w) log p_att(h, <|endoftext|>) + w log P_ctc(exactly h). The decoded hypothesis carries
    that score (P_ctc summed over every alignment by brute force) and, in this small space, is
    the best of every hypothesis of up to 4 tokens under Whisper's length-normalised ranking
    (patience 2: with 1, Whisper's rule stops at the first 3 finished hypotheses, before the
    best one, 3 tokens long, has finished)."""
    a, b, c = words(tokenizer, 3)
    eot, blank = tokenizer.eot, tokenizer.n_text
    weight = 0.5
    # the decoder prefers "a" and then stops early; the audio says "b c a" less loudly
    table = {(): {a: 0.6, b: 0.3}, (a,): {eot: 0.6, c: 0.2}, (b,): {c: 0.6, eot: 0.2},
             (b, c): {a: 0.4, eot: 0.4}, (b, c, a): {eot: 0.8}, (a, c): {eot: 0.7}}
    options = toy_options(ctc_weight=weight, beam_size=3, patience=2.0)
    model = TableModel(tokenizer, table, options, default={eot: 0.5})
    g = torch.Generator().manual_seed(5)
    loud = torch.tensor([[0.1, 3, 0.1, 1], [0.1, 0.1, 0.1, 3], [0.1, 0.1, 3, 0.5], [0.1, 0.1, 2, 2],
                         [3, 0.1, 0.1, 0.5], [1, 0.1, 0.1, 3]], dtype=torch.float64)
    loud = loud + 0.1 * torch.rand(loud.shape, generator=g, dtype=torch.float64)
    log_probs = torch.full((1, loud.shape[0], blank + 1), -1.0e4, dtype=torch.float64)
    log_probs[0][:, [a, b, c, blank]] = torch.log_softmax(loud, -1)
    model.ctc_head = FixedCTC(log_probs, blank)
    [result] = decode(model, tokenizer, torch.zeros(1, 1, 1), None, options)

    _, exact = brute_force(log_probs[0], [a, b, c], blank)

    def joint(h):
        return (1 - weight) * model.sum_logprob(h) + weight * math.log(exact.get(tuple(h), 1e-300))

    hypotheses = [list(h) for n in range(1, 5) for h in itertools.product([a, b, c], repeat=n)]
    best = max(hypotheses, key=lambda h: joint(h) / len(h))
    assert result.tokens == best
    assert result.avg_logprob * (len(best) + 1) == pytest.approx(joint(best), abs=1e-4)
    greedy = decode(model, tokenizer, torch.zeros(1, 1, 1), None, toy_options())[0].tokens
    assert greedy == [a] and best != greedy  # the decoder alone stops after "a"
