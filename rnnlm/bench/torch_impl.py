"""The PyTorch baseline, as in pytorch/examples word_language_model: nn.LSTM / nn.GRU, SGD, clip_grad_norm_.

Eager PyTorch (no torch.compile): the hidden state is detached between windows
(truncated BPTT), `clip_grad_norm_(5)` then `SGD(lr=1).step()`; sampling is the
example's per-token Python loop with `torch.multinomial`. Importing this module
needs torch; `run` only does so when `import torch` works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rnnlm.bench import shapes

TEMPERATURE = 1.0
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TorchLanguageModel(nn.Module):
    def __init__(self, shape: shapes.Shape, cell: str, dropout: float):
        super().__init__()
        recurrent = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.embedding = nn.Embedding(shape.vocab, shape.embed)
        self.drop = nn.Dropout(dropout)
        # nn.LSTM's dropout acts between layers, like rnnlm's dropout on the input of every upper layer.
        self.rnn = recurrent(shape.embed, shape.hidden, shape.layers, dropout=dropout, batch_first=True)
        self.decoder = nn.Linear(shape.hidden, shape.vocab)
        self.cell, self.shape = cell, shape

    def forward(self, tokens, hidden):
        output, hidden = self.rnn(self.drop(self.embedding(tokens)), hidden)
        return self.decoder(self.drop(output)), hidden

    def initial_hidden(self, batch: int):
        zeros = torch.zeros(self.shape.layers, batch, self.shape.hidden, device=DEVICE)
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros


def _detach(hidden):
    return tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


class TorchBench:
    name = "torch"

    def __init__(self, shape: shapes.Shape, cell: str, dropout: float = 0.0, seed: int = 0):
        torch.manual_seed(seed)
        self.shape = shape
        self.model = TorchLanguageModel(shape, cell, dropout).to(DEVICE)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1.0)
        self.hidden = self.model.initial_hidden(shape.batch)
        self.streams = shapes.train_streams(shape, seed)
        self.window = 0
        self.eval_streams: dict[int, object] = {}

    def _tensors(self, window):
        return (torch.from_numpy(window["tokens"]).long().to(DEVICE),
                torch.from_numpy(window["targets"]).long().to(DEVICE))

    def train(self, steps: int) -> None:
        self.model.train()
        for _ in range(steps):
            tokens, targets = self._tensors(self.streams.window(self.window % self.streams.num_windows))
            self.optimizer.zero_grad(set_to_none=True)
            logits, hidden = self.model(tokens, _detach(self.hidden))
            loss = F.cross_entropy(logits.reshape(-1, self.shape.vocab), targets.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            self.optimizer.step()
            self.hidden = hidden
            self.window += 1
        _sync()

    def evaluate(self, steps: int) -> None:
        if steps not in self.eval_streams:
            self.eval_streams[steps] = shapes.eval_streams(self.shape, steps)
        streams = self.eval_streams[steps]
        self.model.eval()
        with torch.no_grad():
            hidden, total = self.model.initial_hidden(self.shape.eval_batch), torch.zeros((), device=DEVICE)
            for index in range(streams.num_windows):
                tokens, targets = self._tensors(streams.window(index))
                logits, hidden = self.model(tokens, hidden)
                total += F.cross_entropy(logits.reshape(-1, self.shape.vocab), targets.reshape(-1), reduction="sum")
            float(total)

    def sample(self, batch: int, length: int) -> None:
        self.model.eval()
        with torch.no_grad():
            hidden = self.model.initial_hidden(batch)
            token = torch.zeros(batch, 1, dtype=torch.long, device=DEVICE)
            for _ in range(length):  # one eager forward per token, as the example's generate.py
                logits, hidden = self.model(token, hidden)
                token = torch.multinomial(torch.softmax(logits[:, -1] / TEMPERATURE, dim=-1), 1)
        _sync()
