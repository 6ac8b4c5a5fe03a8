"""Truncated-BPTT batching: a token sequence as B contiguous streams cut into windows of T.

The N = len(ids) - 1 (input, target) pairs are laid out row by row in a
[B, n] grid, n = ceil(N / B), so stream b holds pairs b*n ... b*n + n - 1 and
continues across windows. The grid is padded at the end up to a whole number of
windows (W = ceil(n / T)); padded cells have weight 0. So every target token of a
split is scored exactly once and none is dropped, unlike the usual reshape that
discards up to B - 1 + (n mod T) tokens; eval perplexity is therefore over the
whole split.

Windows are numpy arrays on the host; the train loop shards them onto devices.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Streams:
    tokens: np.ndarray  # [B, W*T] int32 inputs
    targets: np.ndarray  # [B, W*T] int32 next tokens
    weights: np.ndarray  # [B, W*T] float32, 0 on padding
    bptt: int

    @property
    def num_windows(self) -> int:
        return self.tokens.shape[1] // self.bptt

    @property
    def num_targets(self) -> int:
        return int(self.weights.sum())

    def window(self, index: int) -> dict[str, np.ndarray]:
        cut = slice(index * self.bptt, (index + 1) * self.bptt)
        return {"tokens": self.tokens[:, cut], "targets": self.targets[:, cut], "weights": self.weights[:, cut]}

    def rows(self, rows: slice) -> "Streams":
        """A subset of the streams: one process's share in a multi-host run."""
        return Streams(self.tokens[rows], self.targets[rows], self.weights[rows], self.bptt)


def make_streams(ids: np.ndarray, batch_size: int, bptt: int) -> Streams:
    ids = np.asarray(ids, dtype=np.int32)
    pairs = len(ids) - 1
    if pairs < 1:
        raise ValueError("need at least two tokens to form one (input, target) pair")
    per_stream = math.ceil(pairs / batch_size)
    length = math.ceil(per_stream / bptt) * bptt
    size = batch_size * per_stream

    def grid(values, fill):
        padded = np.full(size, fill, values.dtype)
        padded[:len(values)] = values
        out = np.full((batch_size, length), fill, values.dtype)
        out[:, :per_stream] = padded.reshape(batch_size, per_stream)
        return out

    return Streams(
        tokens=grid(ids[:-1], 0),
        targets=grid(ids[1:], 0),
        weights=grid(np.ones(pairs, np.float32), 0.0),
        bptt=bptt,
    )
