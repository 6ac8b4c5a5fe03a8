"""The fast paths, and the one function that chooses them.

The reference path (`rnnlm.cells`, `rnnlm.recurrence`, `rnnlm.loss`) is what the
model computes; the modules here compute the same numbers faster, and each is
tested equal to the reference, outputs and gradients, in tests/test_fast.py:

    bptt.py          a layer's scan with a hand-written backward pass through time;
                     on CPUs each step projects its own inputs inside the loop
    table.py         a small vocabulary's embedding @ w_x + b read by token id
    wavefront.py     forward-only passes of narrow stacks: all layers in one loop
    decoder_loss.py  decoder + cross-entropy in time chunks (evaluation: shifted by the
                     target's logit; training: gradients made in the forward pass)
    precision.py     bfloat16 matmuls with bfloat16 backward products
    huge_pages.py    the command line's one re-execution with huge pages for malloc

`choose` is the only place that decides which of them a forward pass takes;
`speed.reference=True` in the config turns them all off, and a cell the fast
paths do not know (no `Cell.core`, or inputs that are not one affine map) falls
back to the reference by itself. The `speed` config section sets how, never what:
a resumed run may change it.
"""

from __future__ import annotations

import dataclasses

# Nothing heavy at import: the command line imports `rnnlm.fast.huge_pages` before JAX.

WAVEFRONT_MAX_HIDDEN = 256  # measured faster up to this width (docs/levers.md)


@dataclasses.dataclass(frozen=True)
class Speed:
    """The `speed` config section as a model holds it (hashable, so a model stays a jit-static value)."""

    reference: bool = False  # True: the plain reference path everywhere
    unroll: int = 1  # lax.scan unroll factor of training's passes
    eval_unroll: int = 2  # lax.scan unroll factor of forward-only passes
    fold_embedding: bool = True  # allow `table` where it applies
    wavefront: bool = True  # allow `wavefront` where it applies
    linear_scan: str = "auto"  # linear cells: "parallel", "sequential", or "auto" (sequential on CPUs)

    @classmethod
    def from_config(cls, speed_config) -> "Speed":
        return cls(**{f.name: speed_config[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which fast paths one forward pass takes; False everywhere is the reference path."""

    bptt: bool = False
    in_loop_projection: bool = False
    input_table: bool = False
    wavefront: bool = False
    chunked_loss: bool = False
    low_precision_backward: bool = False
    parallel_scan: bool = False  # a linear cell's windows by lax.associative_scan (False: the loop)


REFERENCE = Plan()


def choose(speed: Speed, cell, *, train: bool, probe: bool = False, vocab: int = 0, embed: int = 0,
           hidden: int = 0, layers: int = 1, steps: int = 0, tokens: int = 0, embed_dropout: bool = False,
           matmul_dtype: str = "float32", backend: str | None = None, between_layers: bool = False,
           normed_inputs: bool = False) -> Plan:
    """The fast paths a forward pass takes. Its facts: the cell; whether the pass is differentiated for
    training (dropout on); a study's probe; the model's sizes; the call's steps T and tokens B*T; whether
    embedding dropout is on in this pass; the matmul dtype; the backend (default: JAX's); whether
    something runs between the layers (a residual, a layer norm) and whether layer inputs are normalised.

    | path                   | taken when (otherwise the reference)                                   |
    |------------------------|------------------------------------------------------------------------|
    | everything             | never with speed.reference or a probe                                  |
    | bptt                   | the cell has a core (one recurrent matmul, then elementwise gates)     |
    | in_loop_projection     | bptt, on a CPU                                                         |
    | input_table            | speed.fold_embedding, affine inputs, V <= E, B*T >= 2V, no embedding   |
    |                        | dropout in this pass, no layer norm                                    |
    | wavefront              | speed.wavefront, forward-only, a core, no input table, >= 2 layers,    |
    |                        | E == H <= 256, T >= layers, on a CPU, nothing between the layers       |
    | chunked_loss           | always                                                                 |
    | low_precision_backward | bfloat16 matmuls                                                       |
    | parallel_scan          | a linear cell (`Cell.linear`), speed.linear_scan "parallel", or "auto" |
    |                        | off a CPU (on 2 CPU cores the loop trained minGRU 2.3x faster)         |
    """
    if speed.reference or probe:
        return REFERENCE
    import jax
    from rnnlm.cells import project_inputs
    backend = backend or jax.default_backend()
    core = cell.core is not None
    table = (speed.fold_embedding and cell.project is project_inputs and vocab <= embed and 2 * vocab <= tokens
             and not embed_dropout and not normed_inputs)
    return Plan(
        bptt=core,
        in_loop_projection=core and backend == "cpu",
        input_table=table,
        wavefront=(speed.wavefront and not train and core and not table and layers >= 2 and not between_layers
                   and embed == hidden <= WAVEFRONT_MAX_HIDDEN and steps >= layers and backend == "cpu"),
        chunked_loss=True,
        low_precision_backward=matmul_dtype != "float32",
        parallel_scan=(cell.linear is not None
                       and (speed.linear_scan == "parallel" or (speed.linear_scan == "auto" and backend != "cpu"))),
    )


def layer_scan(plan: Plan):
    """The layer scan a plan asks for: `rnnlm.recurrence.scan_layer`, or `rnnlm.fast.bptt.scan_layer`, which
    also reads an input table's ids (a cell without a core then runs the reference loop over the rows)."""
    import functools
    if plan.bptt or plan.input_table:
        from rnnlm.fast import bptt
        return functools.partial(bptt.scan_layer, in_loop=plan.in_loop_projection, parallel=plan.parallel_scan)
    from rnnlm.recurrence import scan_layer
    return functools.partial(scan_layer, parallel=plan.parallel_scan)
