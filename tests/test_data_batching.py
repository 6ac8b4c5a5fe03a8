"""rnnlm/data/batching.py: truncated-BPTT streams score every target exactly once."""

import numpy as np
import pytest

from rnnlm.data.batching import make_streams


@pytest.mark.parametrize("pairs,batch,bptt", [(1, 1, 1), (99, 4, 7), (100, 5, 10), (37, 8, 3), (5, 10, 4)])
def test_streams_score_every_target_exactly_once(pairs, batch, bptt):
    ids = np.arange(pairs + 1, dtype=np.int32) + 1000
    streams = make_streams(ids, batch, bptt)
    seen_targets = []
    for w in range(streams.num_windows):
        window = streams.window(w)
        assert window["tokens"].shape == (batch, bptt)
        keep = window["weights"] > 0
        seen_targets.extend(window["targets"][keep].tolist())
    assert sorted(seen_targets) == ids[1:].tolist()
    assert streams.num_targets == pairs
    # Within a stream, each target is the next token of the same stream (contiguity across windows).
    full_tokens, full_targets, full_w = streams.tokens, streams.targets, streams.weights > 0
    np.testing.assert_array_equal(full_targets[full_w], full_tokens[full_w] + 1)
