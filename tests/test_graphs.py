"""The streaming step through recorded parts (CUDA graphs on a GPU, the same parts run eagerly on
a CPU) equals `forward_chunk`; padded compactions change no output."""

import pytest
import torch

from asr_engine.kernels import select_ops
from asr_engine.model.encoder import SkipOptions
from asr_engine.model.graphs import Recorded, StepGraphs, bucketed, padded_batch
from asr_engine.model.streaming import StreamState

from conftest import LAYOUTS, tiny_model

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="needs a CUDA GPU"))]


def _setup(layout: str, right: int, device: str = "cpu"):
    m = tiny_model(layout, right_context=right).to(device)
    m.feat_istd.fill_(0.5)
    m.ops = select_ops(torch.device(device))
    torch.manual_seed(3)
    lengths = [203, 150, 61, 0, 97]  # a stream with nothing to do, streams that end early
    x = torch.randn(len(lengths), 260, 80, device=device) * 2 + 8
    xl = torch.tensor(lengths, device=device)
    with torch.no_grad():  # a threshold that skips about half of the frames
        out = m(x, xl)
        valid = torch.arange(out.final.raw.shape[1], device=device)[None] < out.lengths[:, None]
        p = out.intermediate[m.cfg.skip_layer].blank_prob()[valid].sort().values
    # between the two neighbours with the widest gap among the middle fifth: far from every frame's
    # P(blank), so that float rounding (other batch shapes) cannot move a frame across it
    lo = int(0.4 * len(p))
    k = lo + int((p[lo + 1: int(0.6 * len(p))] - p[lo: int(0.6 * len(p)) - 1]).argmax())
    return m, x, xl, float(p[k] + p[k + 1]) / 2


def _windows(m, x, xl, C):
    """Each step's (features, n_valid), as the engine feeds a batch of streams."""
    sub, R = m.subsampling, m.cfg.right_context
    n = sub.output_lengths(xl)
    for k in range(-(-int(n.max()) // C)):
        a = k * C * sub.stride
        win = x[:, a: a + sub.input_frames(C + R)]
        win = torch.cat([win, win.new_zeros(x.shape[0], sub.input_frames(C + R) - win.shape[1], x.shape[2])], 1)
        yield win, (n - k * C).clamp(0, C + R)


def _assert_same_state(a: StreamState, b: StreamState):
    """The same caches where they hold frames (a padded compaction leaves other stale rows in the
    slots of frames not there, flagged invalid)."""
    assert torch.equal(a.kv_valid, b.kv_valid) and torch.equal(a.offset, b.offset)
    for mine, theirs in ((a.k, b.k), (a.v, b.v)):  # (B, L, H, W, E), valid per (B, L, W)
        torch.testing.assert_close(mine.transpose(2, 3)[a.kv_valid], theirs.transpose(2, 3)[b.kv_valid],
                                   atol=1e-5, rtol=1e-5)
    assert torch.equal(a.kv_pos[a.kv_valid], b.kv_pos[b.kv_valid])
    torch.testing.assert_close(a.conv, b.conv, atol=1e-5, rtol=1e-5)


def flag_the_parts(monkeypatch, mode) -> None:
    """mode.inside is True while a recorded part runs (to count what a step does outside them)."""
    run = Recorded.run

    def parts(self):
        mode.inside = True
        try:
            return run(self)
        finally:
            mode.inside = False

    monkeypatch.setattr(Recorded, "run", parts)


def test_padded_batches_and_bucketed_sizes():
    assert [padded_batch(b) for b in (1, 2, 3, 4, 5, 64, 65)] == [1, 2, 4, 4, 8, 64, 128]
    assert bucketed([0, 1, 8, 9, 31], [32] * 5, 8) == [0, 8, 8, 16, 32]
    assert bucketed([30, 14], [32, 14], 8) == [32, 14]  # never past the frames there are


@pytest.mark.parametrize("right", [0, 3])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_padded_compactions_change_no_output(layout, right):
    """A skipping step's compactions padded with invalid rows (a graph's fixed sizes) give the same
    outputs and, step after step, the same caches."""
    m, x, xl, threshold = _setup(layout, right)
    skip, C = SkipOptions(threshold, 0), 2 * m.cfg.chunk_size
    exact = padded = StreamState.zeros(m.cfg, x.shape[0])
    kept = []
    with torch.no_grad():
        for win, n_valid in _windows(m, x, xl, C):
            a, exact = m.forward_chunk(win, n_valid, exact, skip, hidden=True)
            start = m.step_start(win, n_valid, padded, skip)
            limits = [C, start.x.shape[1] - C]
            b, padded = m.step_finish(start, padded, skip, True, limits)  # every row there is
            keep = a.top_mask
            torch.testing.assert_close(b.final.raw[keep], a.final.raw[keep], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(b.top_out, a.top_out, atol=1e-5, rtol=1e-5)
            assert torch.equal(b.top_mask, keep)
            _assert_same_state(padded, exact)
            kept.append(keep[a.lengths[:, None] > torch.arange(C)].float().mean())
    assert 0.2 < float(torch.stack(kept).mean()) < 0.8  # both paths ran


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("right", [0, 3])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_recorded_steps_equal_forward_chunk(layout, right, device):
    """Batches of 5, then 3, then 1 streams (padded to 8, 4 and 1), with and without skipping and the
    last layer's output: each step's outputs and new state equal forward_chunk's; the states handed
    back are the streams' own (the next step does not overwrite them); the parts stay few."""
    m, x, xl, threshold = _setup(layout, right, device)
    graphs = StepGraphs(m, bucket=2)  # compactions padded to 0, 2 or 4 real frames, 0, 2 or 3 copies
    assert graphs.capture == (device == "cuda")
    C = m.cfg.chunk_size
    with torch.inference_mode():
        for skip in (None, SkipOptions(threshold, 0)):
            for rows in ([0, 1, 2, 3, 4], [0, 2, 4], [1]):
                ref = got = StreamState.zeros(m.cfg, len(rows), device)
                for win, n_valid in _windows(m, x[rows], xl[rows], C):
                    out, ref = m.forward_chunk(win, n_valid, ref, skip, hidden=True)
                    before = got
                    (log_probs, mask, top_out), got = graphs.step(win.cpu(), n_valid.cpu(), got, skip, hidden=True)
                    assert torch.equal(mask, out.top_mask)
                    torch.testing.assert_close(log_probs, m.ops.log_probs(out.final.raw).float(),
                                               atol=1e-5, rtol=1e-5)
                    torch.testing.assert_close(top_out, out.top_out, atol=1e-5, rtol=1e-5)
                    _assert_same_state(got, ref)
                    kept_before = [t.clone() for t in got.fields()]
                graphs.step(win.cpu(), n_valid.cpu(), before, skip, hidden=True)  # one step more, then:
                for mine, old in zip(got.fields(), kept_before):
                    assert torch.equal(mine, old)
    # per padded batch: one part without skipping; with it, one start and a finish per pair of sizes seen
    pairs = len({bucketed([s], [C], 2)[0] for s in range(C + 1)}) * len({bucketed([s], [right], 2)[0]
                                                                       for s in range(right + 1)})
    assert 3 * 3 <= len(graphs) <= 3 * (2 + pairs)
    assert len(graphs.outs) == 3  # the parts of a batch shape write one set of outputs


@pytest.mark.parametrize("right", [0, 3])
def test_the_recorded_parts_read_nothing_from_the_device(monkeypatch, right):
    """A captured part cannot wait for the device: a step through them reads the host once with skipping
    (the compactions' sizes, between its two parts) and never without."""
    from test_streaming import HostReads

    m, x, xl, threshold = _setup("conformer", right)
    graphs, reads = StepGraphs(m, bucket=2), HostReads(monkeypatch)
    state = StreamState.zeros(m.cfg, x.shape[0])
    with torch.inference_mode():
        for win, n_valid in list(_windows(m, x, xl, m.cfg.chunk_size))[:3]:
            assert reads(graphs.step, win, n_valid, state, None) == 0
            assert reads(graphs.step, win, n_valid, state, SkipOptions(threshold, 0)) == 1
            start = m.step_start(win, n_valid, state, SkipOptions(threshold, 0))
            assert reads(m.step_finish, start, state, SkipOptions(threshold, 0), True, [4, right]) == 0


@pytest.mark.parametrize("right", [0, 3])
def test_no_host_data_enters_a_recorded_part(monkeypatch, right):
    """Host values made into a tensor inside a captured part (torch.tensor, as_tensor, new_tensor: a copy
    from host memory) fail the capture or are frozen into the graph: the parts make none. Counted on the
    CPU through torch's dispatcher (every such tensor passes aten.lift_fresh)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Fresh(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.inside, self.made = False, []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if self.inside and func.__name__.startswith("lift_fresh"):
                self.made.append(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    mode = Fresh()
    flag_the_parts(monkeypatch, mode)
    m, x, xl, threshold = _setup("conformer", right)
    graphs, state = StepGraphs(m, bucket=2), StreamState.zeros(m.cfg, x.shape[0])
    with torch.inference_mode(), mode:
        for win, n_valid in list(_windows(m, x, xl, m.cfg.chunk_size))[:3]:
            for skip in (None, SkipOptions(threshold, 0)):
                _, state = graphs.step(win, n_valid, state, skip, hidden=True)
        mode.inside = True
        torch.tensor([1, 2])  # the count sees one
        mode.inside = False
    assert mode.made == ["lift_fresh"] and len(graphs) >= 3


@pytest.mark.parametrize("device", DEVICES)
def test_pool_rows_step_as_their_states_do(device):
    """A step given rows of a StatePool (`StateRows`: gathered straight into the parts' inputs, written
    back straight from their outputs) gives the outputs and new states that the same rows' states
    give, in the rows' order; the pool's other rows are left as they were."""
    from asr_engine.model.streaming import StatePool, StateRows

    m, x, xl, threshold = _setup("conformer", 3, device)
    pool = StatePool(lambda n: StreamState.zeros(m.cfg, n, device), capacity=8)
    assert [pool.take() for _ in range(8)] == list(range(8))
    slots = [5, 1, 7, 2, 4]  # stream j holds row slots[j]; rows 0, 3 and 6 are free
    with torch.inference_mode():
        for t in pool.rows.fields():
            t[6] = 1  # a row no stream of this step holds
        other = [t[[0, 3, 6]].clone() for t in pool.rows.fields()]
        graphs, ref = StepGraphs(m, bucket=2), StepGraphs(m, bucket=2)
        state = StreamState.zeros(m.cfg, len(slots), device)
        for skip in (None, SkipOptions(threshold, 0)):
            for win, n_valid in _windows(m, x, xl, m.cfg.chunk_size):
                want, state = ref.step(win, n_valid, state, skip, hidden=True)
                got, new = graphs.step(win, n_valid, StateRows(pool, slots), skip, hidden=True)
                assert new is None
                for a, b in zip(got, want):
                    assert torch.equal(a, b)
                for mine, theirs in zip(pool.gather(slots).fields(), state.fields()):
                    assert torch.equal(mine, theirs)
        for t, was in zip(pool.rows.fields(), other):
            assert torch.equal(t[[0, 3, 6]], was)
