"""Truncated-BPTT batching: a token sequence as B contiguous streams cut into windows of T.

The N = len(ids) - 1 (input, target) pairs are laid out row by row in a
[B, n] grid, n = ceil(N / B), so stream b holds pairs b*n ... b*n + n - 1 and
continues across windows. The grid is padded at the end up to a whole number of
windows (W = ceil(n / T)); padded cells have weight 0. So every target token of a
split is scored exactly once and none is dropped, unlike the usual reshape that
discards up to B - 1 + (n mod T) tokens; eval perplexity is therefore over the
whole split.

With `variable_lengths` (AWD-LSTM's variable-length BPTT) an epoch's windows
have drawn lengths instead, tiling each stream's real columns once
(`Streams.span`): each is padded up to a multiple of a bucket with masked,
zero-weight cells, so a handful of shapes compile, and the mask keeps the
carry at the window's real end.

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

    @property
    def columns(self) -> int:
        """Columns holding real pairs: the longest stream's (the grid's padding comes after them)."""
        return int(self.weights.sum(axis=1).max()) if len(self.weights) else 0

    def span(self, start: int, length: int, padded: int) -> dict[str, np.ndarray]:
        """Columns [start, start + length) as a window of `padded` >= length steps: the extra steps are
        masked (mask False: the carry is kept, the output is zero) and weigh 0."""
        def cut(values, fill):
            out = np.full((values.shape[0], padded), fill, values.dtype)
            piece = values[:, start:start + length]
            out[:, :piece.shape[1]] = piece
            return out
        mask = np.zeros((self.tokens.shape[0], padded), bool)
        mask[:, :length] = True
        return {"tokens": cut(self.tokens, 0), "targets": cut(self.targets, 0),
                "weights": cut(self.weights, 0.0) * mask, "mask": mask}

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


def variable_lengths(rng: np.random.Generator, bptt: int, columns: int, max_extra: int = 20) -> np.ndarray:
    """One epoch's window lengths, drawn as AWD-LSTM's main.py draws them: the mean is bptt with
    probability 0.95, else bptt / 2; the length is int(normal(mean, 5)), at least 5, at most
    bptt + max_extra; the last window takes what is left, so the windows tile `columns` exactly."""
    lengths, used = [], 0
    while used < columns:
        mean = bptt if rng.random() < 0.95 else bptt / 2.0
        length = min(max(5, int(rng.normal(mean, 5))), bptt + max_extra, columns - used)
        lengths.append(length)
        used += length
    return np.asarray(lengths, np.int64)
