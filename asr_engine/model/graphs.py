"""The encoder's streaming step as captured CUDA graphs.

A step of the bundled model launches about 600 kernels; at small batches a GPU spends most of
the step waiting for the host to launch them (`bench encoder`: the device was busy for under
half of a batch-1 pass). A captured graph replays them with one launch. A graph needs fixed
shapes, so the batch is padded to a power of two (rows with no valid frames), and a skipping
step is two graphs around its one host read: the lower layers and the gates, then, for the
compactions' sizes rounded up to a multiple of `bucket` rows (padding rows change no output;
`finish_chunk`), the gather, the upper layers and the scatter. Graphs are captured the first
time their shapes come, and kept: a few per batch size (13 for the bundled model's 32-frame
chunks with skipping, at the default bucket).

Where there is no CUDA (the tests on a CPU), the same code runs each part eagerly into the same
fixed tensors, which every run overwrites as a replay does.
"""

from __future__ import annotations

from typing import Callable

import torch

from asr_engine.kernels import host_sizes
from asr_engine.model.config import SkipOptions
from asr_engine.model.encoder import ChunkStart, Encoder, EncoderOutput
from asr_engine.model.streaming import StateRows, StreamState

__all__ = ["Recorded", "StepGraphs", "padded_batch", "bucketed"]


class Recorded:
    """fn over fixed input tensors, run again and again on their new contents: captured once as a
    CUDA graph and replayed (`capture`), or run eagerly into the same output tensors (every run
    overwrites them, as a replay does). `run` returns the outputs, valid until the next run."""

    def __init__(self, fn: Callable[..., list[torch.Tensor]], inputs: list[torch.Tensor], capture: bool,
                 pool=None, warmup: int = 2):
        self.fn, self.inputs, self.graph = fn, inputs, None
        self.outputs: list[torch.Tensor] | None = None
        if capture:  # warm up on a side stream first (Triton compiles, cuBLAS picks its kernels), as torch advises
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    fn(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: a server's other threads (a second pass) may use the GPU while this captures
            with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):
                self.outputs = list(fn(*inputs))

    def run(self) -> list[torch.Tensor]:
        if self.graph is not None:
            self.graph.replay()
            return self.outputs
        outs = self.fn(*self.inputs)
        if self.outputs is None:
            self.outputs = [o.clone() for o in outs]
        else:
            for mine, o in zip(self.outputs, outs):
                mine.copy_(o)
        return self.outputs


def padded_batch(b: int) -> int:
    """The batch a graph runs for b streams: the next power of two."""
    return 1 << max(b - 1, 0).bit_length()


def bucketed(sizes: list[int], limits: list[int], bucket: int) -> list[int]:
    """Compaction sizes rounded up to a multiple of `bucket`, each at most its limit."""
    return [min(-(-s // bucket) * bucket, cap) for s, cap in zip(sizes, limits)]


class StepGraphs:
    """`Encoder.forward_chunk` through recorded parts (see the module): the same outputs and states."""

    def __init__(self, encoder: Encoder, capture: bool | None = None, bucket: int = 8):
        self.encoder, self.bucket = encoder, bucket
        device = next(encoder.parameters()).device
        self.device = device
        self.capture = device.type == "cuda" if capture is None else capture
        self.pool = torch.cuda.graph_pool_handle() if self.capture else None
        self.inputs: dict[tuple, list[torch.Tensor]] = {}
        self.parts: dict[tuple, Recorded] = {}
        self.starts: dict[tuple, ChunkStart] = {}  # each start part's structure
        self.outs: dict[tuple, list[torch.Tensor]] = {}  # the steps' outputs, per batch shape

    def __len__(self) -> int:
        return len(self.parts)

    def step(self, feats: torch.Tensor, n_valid: torch.Tensor, state: StreamState | StateRows,
             skip: SkipOptions | None, hidden: bool = False) -> tuple[list[torch.Tensor], StreamState | None]:
        """feats (B, T_in, F), n_valid (B,), state as `forward_chunk` takes them (on any device: they are
        copied into the parts' inputs) -> (log-probs (B, C, V), the frames that ran the top layers (B,
        C), and with `hidden` the last layer's output (B, C, D)), on the encoder's device and valid
        until the next step; and the new state (the streams' own tensors). With `StateRows` for the
        state, the states are gathered from their pool straight into the parts' inputs and the new
        ones written back straight from the outputs (two copies of a state a step, not four), and
        the new state returned is None."""
        B, shape = feats.shape[0], tuple(feats.shape[1:])
        Bp = padded_batch(B)
        rows = state if isinstance(state, StateRows) else None
        fields = (rows.pool.rows if rows is not None else state).fields()  # their shapes past the batch
        at = (Bp, shape, feats.dtype)
        ins = self.inputs.get(at)
        if ins is None:
            ins = self.inputs[at] = [
                torch.zeros((Bp, *t.shape[1:]), dtype=t.dtype, device=self.device) for t in (feats, n_valid, *fields)]
        ins[0][:B].copy_(feats)
        ins[1][:B].copy_(n_valid)
        if rows is not None:
            rows.gather_into(tuple(ins[2:]))
        else:
            for mine, theirs in zip(ins[2:], state.fields()):
                mine[:B].copy_(theirs)
        if B < Bp:
            ins[1][B:].zero_()  # padding rows have no valid frames
        enc, dest = self.encoder, (*at, hidden)

        def outputs(out: EncoderOutput, new: StreamState) -> list[torch.Tensor]:
            """A step's outputs, written into the same tensors whichever part made them: one set per batch
            shape, not one per graph (a state of the bundled model is 3 MB a stream)."""
            made = [enc.ops.log_probs(out.final.raw).float(), out.top_mask,
                    *([out.top_out.float()] if hidden else []), *new.fields()]
            if dest not in self.outs:  # the first run, eager (a warm-up before any capture)
                self.outs[dest] = [torch.empty_like(t) for t in made]
            for mine, t in zip(self.outs[dest], made):
                mine.copy_(t)
            return self.outs[dest]

        if skip is None:  # one part: nothing is read mid-step
            def whole(feats, n_valid, *fields):
                s = StreamState(*fields)
                return outputs(*enc.step_finish(enc.step_start(feats, n_valid, s), s, None, hidden))

            outs = self._part(("whole", *at, hidden), whole, ins).run()
        else:
            def start(feats, n_valid, *fields):
                first = enc.step_start(feats, n_valid, StreamState(*fields), skip)
                self.starts[(*at, skip)] = first
                return first.tensors()

            start_ts = self._part(("start", *at, skip), start, ins).run()
            first = self.starts[(*at, skip)].from_tensors(start_ts)
            n, N = first.frames.n_real, first.x.shape[1]
            sizes = bucketed(host_sizes(*first.gated), [n, N - n], self.bucket)  # the step's one host read

            def finish(*ts):
                s = StreamState(*ts[len(start_ts):])
                return outputs(*enc.step_finish(first.from_tensors(ts[: len(start_ts)]), s, skip, hidden, sizes))

            outs = self._part(("finish", *at, skip, hidden, *sizes), finish, [*start_ts, *ins[2:]]).run()
        k = 3 if hidden else 2
        if rows is not None:
            rows.put(StreamState(*(t[:B] for t in outs[k:])))
            return [t[:B] for t in outs[:k]], None
        return [t[:B] for t in outs[:k]], StreamState(*(t[:B].clone() for t in outs[k:]))

    def _part(self, key: tuple, fn, inputs: list[torch.Tensor]) -> Recorded:
        part = self.parts.get(key)
        if part is None:
            part = self.parts[key] = Recorded(fn, inputs, self.capture, self.pool)
        return part
