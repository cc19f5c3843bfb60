"""Engine/Session streaming API: equals offline decoding, batched equals alone, bad input is refused."""

import re

import numpy as np
import pytest
import torch

from asr_engine.audio import AudioError, load_audio
from asr_engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from asr_engine.engine import DecodeOptions, Engine
from asr_engine.model.fbank import Fbank
from asr_engine.model.encoder import Encoder, SkipOptions
from asr_engine.tokenizer import CharTokenizer

from conftest import tiny_config


def _speechy(seconds: float, seed: int) -> np.ndarray:
    """Noise bursts with pauses: gives a random model varied frames to decode."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    env = np.repeat(rng.random(n // 1600 + 1) > 0.4, 1600)[:n]
    return (0.2 * rng.standard_normal(n) * env).astype(np.float32)


@pytest.fixture(scope="module", params=[0, 3], ids=["right0", "right3"])
def tiny_ckpt_dir(request, tmp_path_factory):
    """A random tiny model calibrated on noise bursts: it emits tokens and its gate skips
    about half of the frames at threshold 0.5, so decoding and skipping are exercised;
    without and with right context (lookahead)."""
    torch.manual_seed(0)
    m = Encoder(tiny_config(right_context=request.param)).eval()
    x = Fbank()(torch.from_numpy(_speechy(3.3, 0))[None])
    with torch.no_grad():
        m.feat_mean.copy_(x[0].mean(0))
        m.feat_istd.copy_(1 / x[0].std(0))
        for h in (m.heads["2"], m.final_head):
            h.out.weight.mul_(20.0)
        out = m(x, torch.tensor([x.shape[1]]))
        m.heads["2"].out.bias[0] -= out.intermediate[2].raw[0, :, 0].median() + 0.1  # no frame at P = 0.5 exactly
        m.final_head.out.bias[0] -= out.final.raw[0, :, 0].median() + 2
    return save_checkpoint(Checkpoint(m, CharTokenizer()), tmp_path_factory.mktemp("ckpt"))


def _feed(session, audio: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(audio):
        j = i + int(rng.integers(1, 5000))
        session.accept_audio(audio[i:j])
        i = j


@pytest.mark.parametrize("beam,threshold", [(1, 1.0), (1, 0.5), (4, 0.5)])
@pytest.mark.parametrize("chunk_frames", [4, 8])
def test_session_equals_offline_transcription(tiny_ckpt_dir, beam, threshold, chunk_frames):
    ckpt = load_checkpoint(tiny_ckpt_dir)
    audio = _speechy(3.3, 0)
    offline = Engine(ckpt, DecodeOptions(beam=beam, nbest=min(2, beam), skip_threshold=threshold))
    ref = offline.transcribe_arrays([audio], ["a"])[0]
    engine = Engine(ckpt, DecodeOptions(chunk_frames=chunk_frames, beam=beam, nbest=min(2, beam),
                                        skip_threshold=threshold))
    s = engine.session()
    _feed(s, audio, 1)
    engine.run()
    assert ref.text.startswith(s.result().stable)
    res = s.finish("a")
    assert res.text == ref.text and res.nbest == ref.nbest
    assert (res.frames, res.top_frames) == (ref.frames, ref.top_frames)
    assert [(w.word, w.start, w.end) for w in res.words] == [(w.word, w.start, w.end) for w in ref.words]
    if threshold < 1.0:
        assert 0 < res.top_frames < res.frames


def test_batched_sessions_equal_sessions_alone(tiny_ckpt_dir):
    audios = [_speechy(s, i) for i, s in enumerate([2.1, 3.7, 0.9])]
    engine = Engine.load(tiny_ckpt_dir, DecodeOptions(skip_threshold=0.5))
    alone = []
    for i, a in enumerate(audios):
        s = engine.session()
        _feed(s, a, i)
        alone.append(s.finish())
        engine.close(s)
    sessions = [engine.session() for _ in audios]
    for i, (s, a) in enumerate(zip(sessions, audios)):  # interleaved feeding, one step for all
        _feed(s, a, 10 + i)
        engine.step()
    for s in sessions:
        s.input_done()
    engine.run()
    for s, ref in zip(sessions, alone):
        res = s.final()
        assert (res.text, res.frames, res.top_frames) == (ref.text, ref.frames, ref.top_frames)


def test_sessions_fed_together_take_their_frames_from_one_front_end_call(tiny_ckpt_dir):
    """`Engine.accept_audio` feeds several sessions (one at 8 kHz, int16; pieces too short for a frame)
    through one call of the model's front end a round: each gets the results it gets fed alone. A bad
    feed among them raises before any session takes its audio."""
    engine = Engine.load(tiny_ckpt_dir, DecodeOptions(skip_threshold=0.5))
    calls = []
    fbank = engine.model.fbank
    engine.model.fbank = lambda w: calls.append(w.shape) or fbank(w)
    rates = [16000, 8000, 16000]
    audios = [_speechy(2.1, 0), (_speechy(3.7, 1)[::2] * 32767).astype(np.int16), _speechy(0.9, 2)]
    alone = []
    for rate, a in zip(rates, audios):
        s = engine.session(rate)
        for i in range(0, len(a), 3001):
            s.accept_audio(a[i: i + 3001])
        alone.append(s.finish())
        engine.close(s)
    sessions = [engine.session(rate) for rate in rates]
    sizes = [5000, 1300, 300]  # samples a round each
    for r in range(max(-(-len(a) // n) for a, n in zip(audios, sizes))):
        calls.clear()
        engine.accept_audio([(s, a[r * n: (r + 1) * n]) for s, a, n in zip(sessions, audios, sizes)
                             if r * n < len(a)])
        assert len(calls) <= 1
        engine.step()
    before = [(s.samples, s._feat_total) for s in sessions]
    with pytest.raises(AudioError, match="mono"):
        engine.accept_audio([(sessions[0], np.zeros(800, np.float32)), (sessions[2], np.zeros((100, 2), np.float32))])
    with pytest.raises(ValueError, match="this engine's sessions"):
        Engine(engine.model).accept_audio([(sessions[0], np.zeros(800, np.float32))])
    assert [(s.samples, s._feat_total) for s in sessions] == before
    for s, ref in zip(sessions, alone):
        res = s.finish()
        assert (res.text, res.frames, res.top_frames) == (ref.text, ref.frames, ref.top_frames)
    assert any(r.text for r in alone) and alone[1].frames > alone[0].frames


def test_other_sample_rates_and_int16(tiny_ckpt_dir):
    engine = Engine.load(tiny_ckpt_dir)
    s = engine.session(sample_rate=8000)
    pcm = (_speechy(2.0, 3)[::2] * 32767).astype(np.int16)
    for a in range(0, len(pcm), 999):
        s.accept_audio(pcm[a: a + 999])
    res = s.finish()
    assert abs(res.duration - 2.0) < 0.01
    assert res.frames == int(engine.model.cfg.output_length(198))


def test_bad_input_is_refused(tiny_ckpt_dir):
    engine = Engine.load(tiny_ckpt_dir)
    with pytest.raises(AudioError, match="sample rate"):
        engine.session(sample_rate=1234)
    s = engine.session()
    for empty in (np.zeros(0, np.float32), np.zeros(0, np.int16), []):  # empty chunks are fine, and change nothing
        s.accept_audio(empty)
        engine.session(sample_rate=8000).accept_audio(empty)
    assert s.samples == 0 and not s.ready
    with pytest.raises(AudioError, match="mono"):
        s.accept_audio(np.zeros((100, 2), np.float32))
    with pytest.raises(AudioError, match="dtype"):
        s.accept_audio(np.zeros(100, np.int32))
    with pytest.raises(AudioError, match="NaN"):
        s.accept_audio(np.full(100, np.nan, np.float32))
    with pytest.raises(AudioError, match="int16 samples as floats"):  # heard 90 dB too loud: nothing, silently
        s.accept_audio(np.full(100, 20000.0, np.float64))
    with pytest.raises(AudioError, match=r"float samples reach [\d,]+; float audio runs from -1 to 1"):
        engine.transcribe((_speechy(1.0, 1) * 32767).astype(np.float32))
    assert engine.transcribe((_speechy(1.0, 1) * 3).astype(np.float32)).frames > 0  # loud, but audio
    assert s.finish().text == ""  # nothing valid arrived: an empty result, no crash
    with pytest.raises(RuntimeError, match="reset"):
        s.accept_audio(np.zeros(100, np.float32))
    s.reset()
    s.accept_audio(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="multiple"):
        Engine.load(tiny_ckpt_dir, DecodeOptions(chunk_frames=6))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_a_steps_outputs_come_back_to_the_host_as_themselves(device):
    """The torch model's outputs travel as one buffer (one device-to-host copy) and are split on the
    host: each array has its tensor's dtype, shape and values, views and empty tensors included."""
    from asr_engine.model.runtime import host_arrays

    torch.manual_seed(0)
    tensors = [torch.rand(3, 2, device=device) > 0.5, torch.randn(2, 3, 5, device=device),
               torch.tensor([7, -1], device=device), torch.randn(0, 4, device=device),
               torch.randn(4, 6, device=device).t(), torch.arange(5, dtype=torch.int32, device=device)]
    arrays = host_arrays(*tensors)
    assert len(arrays) == len(tensors)
    for t, a in zip(tensors, arrays):
        assert a.dtype == t.cpu().numpy().dtype and a.shape == tuple(t.shape)
        np.testing.assert_array_equal(a, t.cpu().numpy())
    assert host_arrays() == []


@pytest.mark.parametrize("beam", [1, 4])
def test_recorded_steps_stream_the_same(tiny_ckpt_dir, beam):
    """TorchModel(graphs=True) (captured CUDA graphs; on a CPU the same parts run eagerly) behind the
    engine: batched sessions give the same transcripts and skipped frames."""
    from asr_engine.model.runtime import TorchModel

    audios = [_speechy(s, i) for i, s in enumerate([2.1, 3.7, 0.9])]
    results = []
    for graphs in (False, True):
        engine = Engine(TorchModel(load_checkpoint(tiny_ckpt_dir), graphs=graphs),
                        DecodeOptions(beam=beam, skip_threshold=0.5))
        results.append([(r.text, r.frames, r.top_frames)
                        for r in engine.transcribe_arrays(audios, ["a", "b", "c"], streaming=True)])
    assert results[0] == results[1]
    assert any(text for text, _, _ in results[0]) and any(0 < top < n for _, n, top in results[0])


def test_recorded_steps_take_their_states_from_the_pool_rows_and_put_them_back(tiny_ckpt_dir, monkeypatch):
    """Through the graphs a step gathers its sessions' states from the engine's pool straight into the
    parts' inputs and writes them back straight from the outputs: two copies of a state a step outside
    the parts (four before: a batch of them each way between), whichever rows the sessions hold; the
    sessions' results are those of eager steps."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from asr_engine.model.runtime import TorchModel
    from test_graphs import flag_the_parts

    class StateCopies(TorchDispatchMode):
        """Ops outside the recorded parts that copy a tensor shaped as a state's keys or values."""

        def __init__(self, shape):
            super().__init__()
            self.shape, self.inside, self.ops = shape, False, []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            seen = [t for t in (*args, *(kwargs or {}).values(), *(out if isinstance(out, (list, tuple)) else [out]))
                    if isinstance(t, torch.Tensor)]
            made = func.__name__.split(".")[0] in ("zeros", "empty", "empty_like", "zeros_like")
            if not (self.inside or made or func.is_view) and any(tuple(t.shape[1:]) == self.shape for t in seen):
                self.ops.append(func.__name__.split(".")[0])
            return out

    results = []
    for graphs in (False, True):
        model = TorchModel(load_checkpoint(tiny_ckpt_dir), graphs=graphs)
        engine = Engine(model, DecodeOptions(skip_threshold=0.5))
        sessions = [engine.session() for _ in range(6)]
        for s in sessions[::3]:  # the rest hold rows 1, 2, 4, 5: a gather and a write-back out of order
            engine.close(s)
        live = sessions[1:3] + sessions[4:]
        for i, s in enumerate(live):
            s.accept_audio(_speechy(1.2 + 0.7 * i, i))
            s.input_done()
        engine.step()
        if graphs:  # a second step, counted (k and v have the same shape: two fields)
            mode = StateCopies(tuple(engine.states.rows.k.shape[1:]))
            flag_the_parts(monkeypatch, mode)
            with torch.inference_mode(), mode:
                assert engine.step()
            assert sorted(mode.ops) == ["index_put_"] * 2 + ["index_select"] * 2, mode.ops
        engine.run()
        results.append([(r.text, r.frames, r.top_frames) for r in (s.finish() for s in live)])
    assert results[0] == results[1] and any(text for text, _, _ in results[0])
    assert any(0 < top < n for _, n, top in results[0])


def test_a_refused_capture_leaves_the_steps_eager(tiny_ckpt_dir, monkeypatch, caplog):
    """A graph the GPU or torch refuses to capture turns the graphs off, with one warning; the steps
    go on eagerly with the same results."""
    from asr_engine.model.graphs import StepGraphs
    from asr_engine.model.runtime import TorchModel

    def refuse(*a, **k):
        raise RuntimeError("operation not permitted when stream is capturing")

    audio = _speechy(2.1, 0)
    ref = Engine(TorchModel(load_checkpoint(tiny_ckpt_dir)), DecodeOptions(skip_threshold=0.5))
    model = TorchModel(load_checkpoint(tiny_ckpt_dir), graphs=True)
    monkeypatch.setattr(StepGraphs, "step", refuse)
    with caplog.at_level("WARNING"):
        got = Engine(model, DecodeOptions(skip_threshold=0.5)).transcribe_arrays([audio], ["a"], streaming=True)
    assert model.graphs is None and "CUDA graphs off" in caplog.text
    want = ref.transcribe_arrays([audio], ["a"], streaming=True)
    assert (got[0].text, got[0].top_frames) == (want[0].text, want[0].top_frames)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_the_state_pool_gives_each_stream_its_own_row(kind):
    """Slots are distinct, start at zero (a released one too), survive the pool's growth, and a step's
    states gathered and put back land in their own rows."""
    from asr_engine.model.streaming import StatePool, StreamState

    cfg = tiny_config(right_context=2)

    def zeros(n):
        return StreamState.zeros_numpy(cfg, n) if kind == "numpy" else StreamState.zeros(cfg, n)

    def filled(state, values):  # each row j of every field set to values[j]
        for t in state.fields():
            for j, v in enumerate(values):
                t[j] = v % 2 if t.dtype in (np.bool_, torch.bool) else v
        return state

    pool = StatePool(zeros, capacity=2)
    slots = [pool.take() for _ in range(5)]  # grows 2 -> 4 -> 8
    assert sorted(slots) == list(range(5)) and pool.capacity == 8
    pool.put(slots, filled(zeros(5), [1, 2, 3, 4, 5]))
    assert [int(v) for v in pool.gather(slots).offset] == [1, 2, 3, 4, 5]
    extra = pool.take()  # a growth after the puts keeps them
    pool.put([extra], filled(zeros(1), [7]))
    pool.put([slots[1], slots[3]], filled(zeros(2), [8, 9]))
    got = pool.gather(slots + [extra])
    for t in got.fields():
        want = [1, 8, 3, 9, 5, 7]
        assert [int(v) for v in np.asarray(t).reshape(6, -1)[:, 0]] == [w % 2 if t.dtype in (np.bool_, torch.bool)
                                                                         else w for w in want]
    pool.release(slots[2])
    again = pool.take()
    assert again == slots[2] and not any(np.asarray(t[again]).any() for t in pool.rows.fields())
    for slot in slots + [extra]:  # everyone gone: the next stream finds the pool at its first size
        pool.release(slot)
    assert pool.capacity == 8 and pool.take() == 0 and pool.capacity == 2


def test_a_step_moves_its_states_in_a_few_ops_whatever_the_batch(tiny_ckpt_dir):
    """The states of a step's sessions are gathered and written back with one op a field each way,
    not one a session (on a GPU each op is a launch)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from asr_engine.model.runtime import TorchModel

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += not func.is_view
            return func(*args, **(kwargs or {}))

    counts = []
    for batch in (2, 12):
        model = TorchModel(load_checkpoint(tiny_ckpt_dir))
        inside = []
        step = model.forward_chunk

        def counted(*a, **k):
            n = ops.n
            out = step(*a, **k)
            inside.append(ops.n - n)
            return out

        model.forward_chunk = counted
        engine = Engine(model, DecodeOptions(skip_threshold=0.5))
        sessions = [engine.session() for _ in range(batch)]
        for i, s in enumerate(sessions):
            s.accept_audio(_speechy(1.5, i))
        with torch.inference_mode(), Ops() as ops:
            engine.step()
        assert len(inside) == 1
        counts.append(ops.n - inside[0])
    assert counts[0] == counts[1] <= 16, counts
    engine.close(sessions[0])  # a closed session steps no more, and its state is gone
    assert engine.step(sessions[:2]) == sessions[1:2]
    with pytest.raises(ValueError, match="closed"):
        sessions[0].state


def test_a_session_closed_during_a_step_harms_no_other(tiny_ckpt_dir):
    """A server closes sessions on its event loop while its compute thread steps them: the step goes on,
    the others' results are those they get alone, and the next session takes the closed one's row zeroed."""
    audios = [_speechy(s, i) for i, s in enumerate([2.1, 3.7, 1.9])]
    alone = Engine.load(tiny_ckpt_dir, DecodeOptions(skip_threshold=0.5))
    want = [alone.transcribe_arrays([a], ["x"], streaming=True)[0].text for a in audios]
    engine = Engine.load(tiny_ckpt_dir, DecodeOptions(skip_threshold=0.5))
    sessions = [engine.session() for _ in audios[:2]]
    for s, a in zip(sessions, audios):
        s.accept_audio(a)
    step = engine.model.forward_chunk

    def closing(*args, **kw):  # as the event loop would, mid-step
        engine.close(sessions[0])
        return step(*args, **kw)

    engine.model.forward_chunk = closing
    engine.step()
    engine.model.forward_chunk = step
    late = engine.session()  # the closed session's row, after the step wrote to it
    assert late.slot == 0 and sessions[0].slot is None
    late.accept_audio(audios[2])
    for s in (sessions[1], late):
        s.input_done()
    engine.run()
    assert [sessions[1].final().text, late.final().text] == want[1:]


def test_a_batch_of_whole_utterances_encodes_each_as_alone(tiny_ckpt_dir):
    """TorchModel.encode runs the front end once for the batch (rows zero-padded): each utterance's
    log-probs and skipped frames are those it gets alone; too short ones come back None."""
    from asr_engine.model.runtime import TorchModel

    model = TorchModel(load_checkpoint(tiny_ckpt_dir))
    audios = [_speechy(s, i) for i, s in enumerate([2.1, 0.004, 3.7, 0.9])]
    skip = SkipOptions(0.5, 1)
    together = model.encode(audios, skip)
    assert together[1] is None
    for a, got in zip(audios, together):
        if got is None:
            continue
        (want,) = model.encode([a], skip)
        assert got[0].shape == want[0].shape and got[1] == want[1]
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)


def test_a_recording_of_another_shape_is_refused_by_its_own_shape():
    """A stereo array handed to transcribe() is named as it was given: the engine used to feed it to a
    session in pieces first and name the first piece's shape ((10240, 2) for any length)."""
    import asr_engine

    for engine in (asr_engine.load(beam=1), asr_engine.load(beam=1, for_files=True)):
        for shape in ((200_000, 2), (2, 200_000)):
            with pytest.raises(AudioError, match=re.escape(f"got shape {shape}")):
                engine.transcribe(np.zeros(shape, np.float32))


def test_a_cpu_decodes_whole_files_a_few_pieces_at_a_time():
    """Full context on a CPU steps at most 4 recordings (or pieces of one) together, whatever max_batch says: 64
    pieces of 10.24 s at once took 5.1 GB for an 11-minute recording and ran 2x slower. Streaming layouts and GPUs
    batch as asked, and what a recording reads as does not depend on it."""
    import asr_engine
    from asr_engine.backend import bundled_model_dir
    from asr_engine.engine import files_batch

    full = asr_engine.load(bundled_model_dir(), beam=1, for_files=True, max_batch=64)
    assert full.full_context and full.files_batch == 4
    assert files_batch(full.model.cfg, full.chunk, 64, "cuda:0") == 64
    assert files_batch(full.model.cfg, full.chunk, 2, "cpu") == 2
    live = asr_engine.load(bundled_model_dir(), beam=1, max_batch=64)
    assert not live.full_context and live.files_batch == 64
    sizes = []
    step = full.model.forward_chunk
    full.model.forward_chunk = lambda wins, *a, **k: (sizes.append(len(wins)), step(wins, *a, **k))[1]
    audios = [load_audio(f"asr_engine/samples/sample{i}.wav") for i in (1, 2, 3)] * 3
    texts = [r.text for r in full.transcribe_arrays(audios, [str(i) for i in range(9)])]
    assert sizes == [4, 4, 1]
    alone = asr_engine.load(bundled_model_dir(), beam=1, for_files=True, max_batch=1)
    assert texts == [r.text for r in alone.transcribe_arrays(audios, [str(i) for i in range(9)])] and all(texts)


def test_a_long_list_of_files_is_read_a_group_at_a_time(tiny_ckpt_dir, tmp_path):
    """transcribe_files reads max_batch files, decodes them, then reads the next: a folder of thousands was read
    into memory whole before its first file was decoded. Results keep the list's order, an unreadable file in
    the middle included, and progress counts on across the groups."""
    from asr_engine.engine import DecodeOptions

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not audio")
    paths = [f"asr_engine/samples/sample{i}.wav" for i in (1, 2, 3)] + [str(bad)] + ["asr_engine/samples/sample2.wav"]
    engine = Engine.load(tiny_ckpt_dir, DecodeOptions(max_batch=2))
    groups, seen = [], []
    decode = engine.transcribe_arrays
    engine.transcribe_arrays = lambda audios, *a, **k: (groups.append(len(audios)), decode(audios, *a, **k))[1]
    results = engine.transcribe_files(paths, progress=lambda done, total: seen.append((done, total)))
    assert groups == [2, 1, 1]  # sample1+2; sample3 (bad.wav failed to read); sample2 again
    together = Engine.load(tiny_ckpt_dir, DecodeOptions(max_batch=8)).transcribe_files(paths)
    assert [(r.path, r.text, r.error is None) for r in results] == [(r.path, r.text, r.error is None) for r in together]
    assert results[3].error and "bad.wav" in results[3].error and results[4].text == results[1].text
    total = sum(r.duration for r in results if not r.error)
    assert seen and seen[-1] == pytest.approx((total, total)) and all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))


def test_transcribe_from_several_threads_gives_each_its_own_transcripts():
    """One engine shared by a threaded web app: concurrent transcribe calls take turns. Unguarded, the threads
    shared the state pool's rows (one grew it away under another's write) and 63 of 144 transcripts came out
    wrong, silently."""
    import threading

    import asr_engine
    from asr_engine.backend import bundled_model_dir

    engine = asr_engine.load(bundled_model_dir(), beam=1)
    audios = [load_audio(f"asr_engine/samples/sample{i}.wav") for i in (1, 2, 3)]
    alone = [r.text for r in engine.transcribe_arrays(audios, ["1", "2", "3"])]
    got, failures = [], []

    def work():
        try:
            for _ in range(4):
                got.append([r.text for r in engine.transcribe_arrays(audios, ["1", "2", "3"])])
        except Exception as e:  # noqa: BLE001 - any failure in a thread is this test's failure
            failures.append(e)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures and len(got) == 24 and all(texts == alone for texts in got) and all(alone)
    assert not engine.sessions and engine.states.capacity <= 4  # every session closed, its row given back


def test_a_finished_session_gives_its_row_back(tiny_ckpt_dir):
    """The README's loop (session, accept_audio, step, finish) a request at a time: finish() closes the session,
    so the engine holds none and its pool stays at its first size (it held every session and 4 MB of state for
    each of the bundled model's, for good). reset() starts a finished session over; closing twice frees once."""
    engine = Engine.load(tiny_ckpt_dir)
    pcm = (_speechy(1.5, 3) * 32767).astype(np.int16)
    texts = []
    for _ in range(20):
        s = engine.session()
        s.accept_audio(pcm)
        engine.step()
        texts.append(s.finish().text)
        assert s.slot is None and not engine.sessions
    assert len(set(texts)) == 1 and engine.states.capacity == 4
    s.reset()  # the same session, a new stream
    assert engine.sessions == [s] and s.slot is not None
    s.accept_audio(pcm)
    assert s.finish().text == texts[0]
    engine.close(s)
    engine.close(s)
    slots = {engine.session().slot for _ in range(4)}
    assert len(slots) == 4  # no row handed to two sessions


@pytest.mark.parametrize("name, level", [("long.wav", 1.0), ("long.wav", 0.003), ("long.m4a", 1.0)])
def test_a_long_file_is_read_a_piece_at_a_time_with_the_whole_files_result(tmp_path, monkeypatch, name, level):
    """In full context a file over LONG_FILE_S is read and decoded a few pieces at a time (an hour was 230 MB of
    samples held whole, 460 MB more for a quiet one's gained copy): the same cuts at pauses, the same words and
    times as the whole recording decoded at once, a quiet one brought up by the same gain; 44.1 kHz stereo, so
    the reading resamples as it goes; an M4A's length comes from its container (FFmpeg)."""
    import soundfile

    import asr_engine
    import asr_engine.engine as engine_module
    from asr_engine.audio import resample
    from asr_engine.backend import bundled_model_dir

    x = np.concatenate([load_audio(f"asr_engine/samples/sample{i}.wav") for i in (1, 2, 3)] + [np.zeros(8000)])
    y = resample(np.tile(x, 6).astype(np.float32) * np.float32(level), 16000, 44100)  # 51 s
    path = tmp_path / name
    if name.endswith(".m4a"):
        pytest.importorskip("av")
        from test_audio import write_with_ffmpeg

        write_with_ffmpeg(path, "mp4", "aac", np.stack([y, y], 1), 44100)
    else:
        soundfile.write(path, np.stack([y, y], 1), 44100, subtype="FLOAT")
    engine = asr_engine.load(bundled_model_dir(), beam=1, for_files=True, max_batch=2)
    whole = engine.transcribe_arrays([load_audio(path)], [str(path)])[0]
    monkeypatch.setattr(engine_module, "LONG_FILE_S", 30.0)
    steps, decode = [], engine._sorted
    engine._sorted = lambda pieces, *a, **k: (steps.append(len(pieces)), decode(pieces, *a, **k))[1]
    seen = []
    got = engine.transcribe_files([str(path)], progress=lambda done, total: seen.append((done, total)))[0]
    assert engine.reads_long(path) and len(steps) >= 3 and max(steps) <= engine.files_batch
    assert got.error is None and got.text == whole.text and got.text.count("matter") == 6
    assert [(w.word, w.start, w.end) for w in got.words] == [(w.word, w.start, w.end) for w in whole.words]
    assert got.duration == pytest.approx(whole.duration) and got.frames == whole.frames
    assert seen[-1][0] == pytest.approx(whole.duration) and all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
