"""Duration-bucketed batching for variable-length speech.

A Whisper-style encoder pads every utterance in a batch to the longest one, so the
memory (and compute) a batch costs is ``batch size x longest duration``: the *padded*
duration. This sampler caps exactly that, and keeps padding small by batching
utterances of similar length together.

One epoch, computed identically on every rank from ``(seed, epoch)`` alone:

1. Bucket: every utterance goes to bucket ``floor(duration / bucket_width_s)``.
   With ``shuffle`` the order inside each bucket is random (a new permutation per
   epoch), so batch membership changes from epoch to epoch.
2. Pack: walk the buckets from short to long and cut greedily into batches whose
   padded duration ``len(batch) * max(duration)`` stays <= ``max_batch_seconds``.
   Packing runs across bucket boundaries, so there is no ragged leftover per bucket.
   An utterance longer than the cap on its own gets a batch of its own (never dropped).
3. Order: with ``shuffle`` the list of batches is permuted, so the model does not
   see short-to-long curricula within an epoch.
4. Shard (``world_size > 1``): every rank must run the same number of steps, or
   DDP's all-reduce hangs. ``drop_last=False`` (default) splits the largest batches in
   two until the count divides evenly -- each half is under the cap too -- so every
   utterance is seen exactly once, no duplicates and no losses. Only when there are
   too few multi-utterance batches to split (a dataset smaller than the world size,
   in practice) are the first batches repeated as padding. ``drop_last=True``
   instead drops the last ``n_batches % world_size`` batches of the (shuffled) list.
   Rank ``r`` then takes batches ``r, r + world_size, ...``.

Resuming: ``state_dict()`` records the epoch and how many batches of it this rank has
consumed; a new sampler given ``load_state_dict(state)`` yields exactly the remaining
batches of that epoch, then continues normally.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional, Sequence

import numpy as np

DEFAULT_BUCKET_WIDTH_S = 0.5  # seconds; items in a bucket differ by < 0.5 s of padding


class DurationBucketSampler:
    """Iterable of batches (lists of dataset indices) capped in padded seconds.

    Pass it to ``DataLoader(dataset, batch_sampler=sampler, ...)``. Call
    ``set_epoch(e)`` before each epoch, as with DistributedSampler.

    Args:
        durations: seconds of audio per dataset index.
        max_batch_seconds: cap on ``len(batch) * longest duration in the batch``.
        seed: base of the per-epoch shuffle; identical on every rank.
        shuffle: random order in buckets and of batches; False gives a fixed
            short-to-long order (useful for evaluation).
        bucket_width_s: width of the duration buckets in seconds. Smaller means
            less padding but less randomness in who shares a batch.
        rank, world_size: this process's shard in data-parallel training.
        drop_last: how to make the batch count divisible by world_size (see module doc).
        max_batch_size: optional cap on utterances per batch (for very short clips,
            where the decoder's token tensors rather than the audio set the memory).
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_batch_seconds: float,
        *,
        seed: int,
        shuffle: bool = True,
        bucket_width_s: float = DEFAULT_BUCKET_WIDTH_S,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        max_batch_size: Optional[int] = None,
    ):
        self.durations = np.asarray(durations, dtype=np.float64)
        if self.durations.ndim != 1 or len(self.durations) == 0:
            raise ValueError("durations must be a non-empty 1-D sequence")
        if not np.all(np.isfinite(self.durations)) or np.any(self.durations < 0):
            raise ValueError("durations must be finite and >= 0")
        if max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds must be > 0, got {max_batch_seconds}")
        if bucket_width_s <= 0:
            raise ValueError(f"bucket_width_s must be > 0, got {bucket_width_s}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.max_batch_seconds = float(max_batch_seconds)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.bucket_width_s = float(bucket_width_s)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.max_batch_size = max_batch_size

        self.epoch = 0
        self._start = 0  # batches of this epoch to skip (set by load_state_dict)
        self._yielded = 0  # batches of this epoch handed out so far
        self._cache: Optional[tuple[int, list[list[int]]]] = None  # (epoch, rank's batches)

    # ---- epoch control -------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields.

        Setting the epoch a resumed state points at keeps the resume position, so the
        usual ``for e in range(start, n): sampler.set_epoch(e)`` loop works after
        ``load_state_dict``.
        """
        if epoch != self.epoch:
            self._start = 0
            self._yielded = 0
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        # Not a generator function: the position is reset when iter() is called, not
        # when the first batch is requested, so state_dict() is right at once.
        batches = self._rank_batches()
        self._yielded = self._start
        return self._generate(batches[self._start :])

    def _generate(self, batches: list[list[int]]) -> Iterator[list[int]]:
        for batch in batches:
            self._yielded += 1
            yield list(batch)
        # the epoch is complete: a later iteration of the same epoch starts afresh
        self._start = 0

    def __len__(self) -> int:
        """Batches the next iteration will yield (the remainder, after a resume)."""
        return len(self._rank_batches()) - self._start

    # ---- resuming ------------------------------------------------------------------

    def state_dict(self, batches_consumed: Optional[int] = None) -> dict:
        """Position inside the current epoch.

        By default the position is the number of batches this sampler has yielded.
        A DataLoader with workers pulls batches ahead of the training loop
        (prefetching), so a training loop should pass the number of batches it has
        actually finished as ``batches_consumed``.
        """
        position = self._yielded if batches_consumed is None else int(batches_consumed)
        return {
            "epoch": self.epoch,
            "batches_consumed": position,
            # what must match for "the remaining batches" to mean the same thing
            "seed": self.seed,
            "world_size": self.world_size,
            "rank": self.rank,
            "n_utterances": len(self.durations),
            "max_batch_seconds": self.max_batch_seconds,
        }

    def load_state_dict(self, state: dict) -> None:
        for key, mine in (
            ("seed", self.seed),
            ("world_size", self.world_size),
            ("rank", self.rank),
            ("n_utterances", len(self.durations)),
            ("max_batch_seconds", self.max_batch_seconds),
        ):
            if state[key] != mine:
                raise ValueError(
                    f"sampler state has {key}={state[key]!r} but this sampler has {mine!r}; "
                    "resuming would not give the same batches"
                )
        self.epoch = int(state["epoch"])
        n = len(self._rank_batches())
        if not 0 <= state["batches_consumed"] <= n:
            raise ValueError(f"batches_consumed={state['batches_consumed']} outside [0, {n}]")
        self._start = int(state["batches_consumed"])
        self._yielded = self._start

    # ---- batch construction --------------------------------------------------------

    def _rank_batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            batches = self._sharded_batches(self.epoch)
            self._cache = (self.epoch, batches[self.rank :: self.world_size])
        return self._cache[1]

    def _sharded_batches(self, epoch: int) -> list[list[int]]:
        """All ranks' batches for ``epoch``, a multiple of world_size in number."""
        # The generator depends only on (seed, epoch): every rank computes the same list.
        rng = np.random.default_rng([self.seed, epoch])
        batches = self._pack(self._bucketed_order(rng))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        remainder = len(batches) % self.world_size
        if remainder == 0:
            return batches
        if self.drop_last:
            return batches[: len(batches) - remainder]
        return self._split_to_multiple(batches)

    def _bucketed_order(self, rng: np.random.Generator) -> np.ndarray:
        """Indices grouped by duration bucket (short first), random inside a bucket."""
        bucket = np.floor(self.durations / self.bucket_width_s)
        # shuffled: random order inside a bucket; not shuffled: strictly by duration
        tie_break = rng.random(len(bucket)) if self.shuffle else self.durations
        return np.lexsort((tie_break, bucket))  # the last key is the primary one

    def _pack(self, order: np.ndarray) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0.0
        for index in order.tolist():
            duration = self.durations[index]
            new_longest = max(longest, duration)
            fits = (len(current) + 1) * new_longest <= self.max_batch_seconds
            if self.max_batch_size is not None:
                fits = fits and len(current) < self.max_batch_size
            if current and not fits:
                batches.append(current)
                current, new_longest = [], duration
            current.append(index)
            longest = new_longest
        if current:
            batches.append(current)
        return batches

    def _split_to_multiple(self, batches: list[list[int]]) -> list[list[int]]:
        """Reach a multiple of world_size by halving the largest batches in place."""
        needed = self.world_size - len(batches) % self.world_size
        # largest first; the stable sort keeps earlier positions first among equals
        splittable = sorted(
            (i for i, b in enumerate(batches) if len(b) >= 2), key=lambda i: -len(batches[i])
        )[:needed]
        to_split = set(splittable)
        result: list[list[int]] = []
        for i, batch in enumerate(batches):
            if i in to_split:
                half = math.ceil(len(batch) / 2)
                result += [batch[:half], batch[half:]]
            else:
                result.append(batch)
        # Not enough batches to split (fewer utterances than ranks, in practice): pad by
        # repeating batches from the start, as DistributedSampler does with samples.
        shortfall = -len(result) % self.world_size
        result += [list(result[i % len(result)]) for i in range(shortfall)]
        return result
