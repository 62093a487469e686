"""Joint CTC/attention decoding: each next token scored by the attention decoder and by the CTC
head together (Watanabe et al. 2017, "Hybrid CTC/attention architecture for end-to-end speech
recognition", the prefix score of its Algorithm 2; ESPnet decodes this way):

    score(h + c) = (1 - w) * log p_att(c | h) + w * (log psi(h + c) - log psi(h))

psi(h) is the CTC probability that the transcript starts with h, summed over every alignment;
psi(h + <|endoftext|>) is the probability that the transcript is exactly h. The CTC term is
monotonic in the audio, so it penalises what an attention decoder alone does when it is unsure
where it is: repeat a stretch, skip one, stop early or run on.

Per hypothesis h the scorer keeps, over encoder positions t, the log-probabilities that the
first t+1 frames emit exactly h ending in its last token (r_n) or in a blank (r_b):

    phi_t(c)   = r_b[t] + r_n[t]   (r_b[t] alone when c repeats h's last token)
    psi(h + c) = sum_t phi_{t-1}(c) * p_t(c)          (phi_{-1} = 1 for the empty h)
    r_n'[t]    = (r_n'[t-1] + phi_{t-1}(c)) * p_t(c)  for h' = h + c
    r_b'[t]    = (r_b'[t-1] + r_n'[t-1]) * p_t(blank)

(sums in probability, computed in log space). The two recursions have the form
x[t] = (x[t-1] + a[t-1]) * b[t], whose solution is a cumulative sum, so they run as whole-tensor
operations instead of a Python loop over frames (linear_recurrence). Everything is float64.

Hypotheses are found by their tokens, so beam search needs no extra bookkeeping when it reorders
or drops rows. Only the `candidates` likeliest next tokens under the attention decoder get a CTC
score (ESPnet's pre-beam); the others are not chosen. CTC knows no timestamps: joint decoding
runs without them.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

# next tokens scored by CTC at each step, the likeliest under the attention decoder (ESPnet's
# pre-beam is 1.5 x the beam); for character vocabularies that is nearly all of them
CANDIDATES = 32
NEG = -1.0e30  # log(0) as a finite number: sums along time never meet inf - inf


def linear_recurrence(x0: Tensor, a: Tensor, log_b: Tensor) -> Tensor:
    """x[:, 0] = x0 and, in probability, x[t] = (x[t-1] + a[t-1]) * b[t]; all in log space.
    Unrolled: x[t] = B[t] * (x0 + sum_{s=1..t} a[s-1] / B[s-1]) with B[t] = b[1] * ... * b[t]."""
    big_b = torch.cat([torch.zeros_like(log_b[:, :1]), log_b[:, 1:].cumsum(dim=1)], dim=1)  # log B[t]
    acc = torch.logcumsumexp(a[:, :-1] - big_b[:, :-1], dim=1)  # t = 1..T-1
    rest = big_b[:, 1:] + torch.logaddexp(x0[:, None], acc)
    return torch.cat([x0[:, None], rest], dim=1)


class CTCPrefixScorer:
    """Joint scores for the rows of one decoding call.

    log_probs [utterances, T, classes] from CTCHead.log_probs (blank last); row r of the token
    matrix belongs to utterance r // rows_per_utterance; its hypothesis is its tokens from
    sample_begin on."""

    def __init__(self, log_probs: Tensor, weight: float, eot: int, sample_begin: int,
                 rows_per_utterance: int = 1, candidates: int = CANDIDATES):
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"CTC weight must be in (0, 1], got {weight}")
        # on the CPU whatever the model's device: the per-step work is small, bookkeeping-heavy
        # and float64, and the attention scores it meets are brought to the CPU too
        self.log_probs = log_probs.detach().double().cpu()
        self.weight = weight
        self.eot = eot
        self.blank = log_probs.shape[-1] - 1
        self.sample_begin = sample_begin
        self.rows_per_utterance = rows_per_utterance
        self.candidates = min(candidates, self.blank)
        # (utterance, hypothesis) -> (r_n [T], r_b [T], log psi(hypothesis))
        self.states: dict[tuple[int, tuple], tuple[Tensor, Tensor, float]] = {}
        # (utterance, hypothesis) -> {next token: log psi(hypothesis + token)}
        self.extensions: dict[tuple[int, tuple], dict[int, float]] = {}

    def joint_scores(self, logits: Tensor, tokens: Tensor, rows: Optional[Tensor] = None) -> Tensor:
        """Joint log-scores [len(rows), n_vocab] for the next token of each row, from the
        attention decoder's (filtered) logits of those rows and their tokens so far. `rows`:
        the rows' indices in the full token matrix (None: all rows, in order). Tokens that are
        not candidates get -inf."""
        n = logits.shape[0]
        rows = torch.arange(n) if rows is None else rows.cpu()
        utterances = (rows // self.rows_per_utterance).tolist()
        hypotheses = [tuple(seq) for seq in tokens[:, self.sample_begin:].tolist()]
        keys = list(zip(utterances, hypotheses))
        self._add_states([k for k in dict.fromkeys(keys) if k not in self.states])

        attention = F.log_softmax(logits.double(), dim=-1).cpu()
        top = attention[:, :self.blank].topk(self.candidates, dim=-1).indices  # [n, K]
        r_n = torch.stack([self.states[k][0] for k in keys])  # [n, T]
        r_b = torch.stack([self.states[k][1] for k in keys])
        psi_h = torch.tensor([self.states[k][2] for k in keys], dtype=torch.float64)
        last = torch.tensor([h[-1] if h else -1 for _, h in keys])
        empty = torch.tensor([not h for _, h in keys])

        # phi_t(c) for every candidate [n, T, K], then shifted one frame: phi_{t-1}(c)
        repeats = (top == last[:, None])[:, None, :]
        phi = torch.where(repeats, r_b[:, :, None], torch.logaddexp(r_b, r_n)[:, :, None])
        start = torch.where(empty, 0.0, NEG).double()[:, None, None].expand(-1, 1, self.candidates)
        phi_before = torch.cat([start, phi[:, :-1]], dim=1)
        frames = torch.arange(self.log_probs.shape[1])
        emit_c = self.log_probs[torch.tensor(utterances)[:, None, None], frames[None, :, None],
                                top[:, None, :]]  # [n, T, K]: the candidates' columns only
        psi = torch.logsumexp(phi_before + emit_c, dim=1)  # [n, K]
        psi_eot = torch.logaddexp(r_n[:, -1], r_b[:, -1])  # [n]

        for key, tokens_k, psi_k in zip(keys, top.tolist(), psi.tolist()):
            self.extensions[key] = dict(zip(tokens_k, psi_k))

        joint = torch.full_like(attention, float("-inf"))
        w = self.weight
        joint.scatter_(1, top, (1 - w) * attention.gather(1, top) + w * (psi - psi_h[:, None]))
        joint[:, self.eot] = (1 - w) * attention[:, self.eot] + w * (psi_eot - psi_h)
        return joint.to(device=logits.device, dtype=torch.float32)

    def _add_states(self, keys: list[tuple[int, tuple]]) -> None:
        """States of new hypotheses: the empty one directly, the others from their parent (one
        token shorter, scored at the step before) in one batch."""
        extend = []
        for key in keys:
            utterance, hypothesis = key
            if not hypothesis:
                blank = self.log_probs[utterance, :, self.blank]
                self.states[key] = (torch.full_like(blank, NEG), blank.cumsum(0), 0.0)
            else:
                extend.append(key)
        if not extend:
            return
        parents = [(u, h[:-1]) for u, h in extend]
        missing = [p for p in parents if p not in self.states or p not in self.extensions]
        if missing:
            raise RuntimeError(f"CTC prefix scorer: hypotheses {missing[:2]} were never scored")
        tokens = torch.tensor([h[-1] for _, h in extend])
        utterances = torch.tensor([u for u, _ in extend])
        r_n = torch.stack([self.states[p][0] for p in parents])
        r_b = torch.stack([self.states[p][1] for p in parents])
        repeat = torch.tensor([bool(p[1]) and p[1][-1] == h[-1] for p, (_, h) in zip(parents, extend)])
        phi = torch.where(repeat[:, None], r_b, torch.logaddexp(r_b, r_n))
        frames = torch.arange(self.log_probs.shape[1])
        emit_c = self.log_probs[utterances[:, None], frames[None, :], tokens[:, None]]  # [m, T]
        emit_blank = self.log_probs[utterances, :, self.blank]
        first = torch.tensor([not p[1] for p in parents])
        x0 = torch.where(first, emit_c[:, 0], torch.full_like(emit_c[:, 0], NEG))
        new_r_n = linear_recurrence(x0, phi, emit_c)
        new_r_b = linear_recurrence(torch.full_like(x0, NEG), new_r_n, emit_blank)
        for i, (key, parent) in enumerate(zip(extend, parents)):
            # every token a search can take was a candidate: the others score -inf
            self.states[key] = (new_r_n[i], new_r_b[i], self.extensions[parent][key[1][-1]])

