"""Quiet input brought up to the level the model trained at (asr_engine.level): whole recordings by their peak,
live streams as they go; input at usual levels untouched."""

import json
from pathlib import Path

import numpy as np
import pytest

from asr_engine.audio import SAMPLE_RATE, load_audio
from asr_engine.engine import DecodeOptions, Engine, SessionOptions
from asr_engine.level import HOLD_S, MAX_GAIN, QUIET_PEAK, RISE_DB_PER_S, StreamGain, brought_up, recording_gain
from asr_engine.text import word_error_counts

SAMPLES = "asr_engine/samples"


def _tone(seconds: float, peak: float, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (peak * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _samples() -> tuple[list[np.ndarray], list[str]]:
    rows = [json.loads(line) for line in Path(f"{SAMPLES}/manifest.jsonl").read_text().splitlines()]
    return [load_audio(f"{SAMPLES}/{r['audio']}") for r in rows], [r["text"] for r in rows]


def test_a_quiet_recording_comes_up_to_the_quiet_peak_and_a_louder_one_is_left_as_it_is():
    loud = _tone(1.0, 0.3)
    assert recording_gain(loud) == 1.0 and brought_up(loud) is loud
    assert recording_gain(_tone(1.0, QUIET_PEAK)) == 1.0
    quiet = _tone(1.0, 0.004)
    assert recording_gain(quiet) == pytest.approx(QUIET_PEAK / 0.004)
    assert np.abs(brought_up(quiet)).max() == pytest.approx(QUIET_PEAK) and brought_up(quiet).dtype == np.float32
    assert recording_gain(_tone(1.0, 1e-5)) == MAX_GAIN  # 16-bit dither's level: capped, not blown up to speech
    assert recording_gain(np.zeros(1000, np.float32)) == MAX_GAIN and not brought_up(np.zeros(10, np.float32)).any()
    assert recording_gain(np.zeros(0, np.float32)) == 1.0


def test_a_stream_gets_the_same_gains_however_it_is_cut_into_messages():
    rng = np.random.default_rng(0)
    x = np.concatenate([_tone(9.0, 0.002), _tone(2.0, 0.02), _tone(1.0, 0.3)])
    x += (1e-4 * rng.standard_normal(len(x))).astype(np.float32)
    whole = StreamGain()(x)
    for seed in range(3):
        cuts = np.sort(np.random.default_rng(seed).integers(0, len(x), 40))
        g = StreamGain()
        parts = [g(p) for p in np.split(x, cuts)]  # empty pieces included
        assert np.array_equal(np.concatenate(parts), whole)


def test_a_quiet_stream_is_held_then_brought_up_never_past_the_quiet_peak_and_louder_speech_stops_it():
    peak = 0.002
    x = np.concatenate([_tone(12.0, peak), _tone(1.0, 0.5), _tone(1.0, 0.002)])
    g = StreamGain()
    y = g(x)
    gain = np.abs(y) / np.maximum(np.abs(x), 1e-12)
    at = lambda s: float(np.max(gain[int(s * SAMPLE_RATE): int((s + 0.02) * SAMPLE_RATE)]))
    assert at(0.5) == pytest.approx(1.0) and at(HOLD_S - 0.05) == pytest.approx(1.0)  # held
    assert at(HOLD_S + 1.0) == pytest.approx(10 ** (RISE_DB_PER_S / 20), rel=0.02)  # then rising
    assert at(11.0) == pytest.approx(QUIET_PEAK / peak, rel=1e-3)  # up to the quiet peak, and no further
    assert np.abs(y[: 12 * SAMPLE_RATE]).max() <= QUIET_PEAK * (1 + 1e-6)
    loud = y[12 * SAMPLE_RATE + 100:]  # from the loud tone's first peaks on: as it came
    assert np.array_equal(loud, x[12 * SAMPLE_RATE + 100:]) and g.settled and g.gain == 1.0


def test_a_stream_at_a_usual_level_is_not_touched_even_after_a_quiet_start():
    audios, _ = _samples()
    x = np.concatenate([np.zeros(int(1.5 * SAMPLE_RATE), np.float32), *audios])  # silence shorter than the hold
    assert np.array_equal(StreamGain()(x), x)


def test_quiet_files_read_as_they_do_at_their_recorded_level():
    """The bundled model on the samples scaled to -50 dB (peaks about 0.002): without the gain it reads them
    as noise; with it, as it reads them at the level they were recorded at, give or take a spelling."""
    import asr_engine
    from asr_engine.backend import bundled_model_dir

    audios, refs = _samples()
    quiet = [a * np.float32(10 ** (-50 / 20)) for a in audios]
    engine = asr_engine.load(bundled_model_dir(), beam=1, for_files=True)
    errors = lambda rs: sum(word_error_counts(t, r.text)[0] for t, r in zip(refs, rs))
    recorded = errors(engine.transcribe_arrays(audios, ["1", "2", "3"]))
    on = engine.transcribe_arrays(quiet, ["1", "2", "3"])
    off = engine.transcribe_arrays(quiet, ["1", "2", "3"], SessionOptions(auto_gain=False))
    assert errors(off) >= recorded + 8 and errors(on) <= recorded + 2
    by_hand = engine.transcribe_arrays([brought_up(a) for a in quiet], ["1", "2", "3"], SessionOptions(auto_gain=False))
    assert [r.text for r in on] == [r.text for r in by_hand]
    plain = asr_engine.load(bundled_model_dir(), beam=1, for_files=True, auto_gain=False)  # the engine's default
    assert [r.text for r in plain.transcribe_arrays(quiet, ["1", "2", "3"])] == [r.text for r in off]


@pytest.mark.parametrize("rate", [16000, 8000])
def test_a_live_session_brings_its_stream_up_as_it_arrives(tiny_ckpt_dir, rate):
    """A session fed in messages hears its stream through StreamGain at 16 kHz (after resampling): the same
    features as the gained stream handed to a session without it; a loud stream's features are unchanged."""
    from asr_engine.audio import resample

    engine = Engine.load(tiny_ckpt_dir, DecodeOptions())
    rng = np.random.default_rng(1)
    n = 8 * rate
    env = np.repeat(rng.random(n // (rate // 10) + 1) > 0.4, rate // 10)[:n]
    loud = (0.2 * rng.standard_normal(n) * env).astype(np.float32)

    def heard(x, options, sample_rate):
        """The fbank frames the session decoded, and its result."""
        s = engine.session(sample_rate, options)
        frames, add = [], s._add_frames
        s._add_frames = lambda new: (frames.append(new), add(new))
        for i in range(0, len(x), 3000):
            s.accept_audio(x[i: i + 3000])
            engine.step([s])
        r = s.finish()
        return np.concatenate(frames), (r.text, r.frames, r.top_frames, s.samples)

    quiet = loud * np.float32(0.004)
    feats, result = heard(quiet, SessionOptions(), rate)
    by_hand, result_by_hand = heard(StreamGain()(resample(quiet, rate)), SessionOptions(auto_gain=False), SAMPLE_RATE)
    assert np.array_equal(feats, by_hand) and result == result_by_hand
    plain = heard(quiet, SessionOptions(auto_gain=False), rate)[0]
    late = int((HOLD_S + 1) * 100)  # past the hold, the gained frames are louder (log-mel, 10 ms frames)
    assert np.array_equal(feats[:int(HOLD_S * 100) - 3], plain[:int(HOLD_S * 100) - 3])
    assert (feats[late:].mean() - plain[late:].mean()) > 0.5
    assert np.array_equal(heard(loud, SessionOptions(), rate)[0], heard(loud, SessionOptions(auto_gain=False), rate)[0])


def test_transcribe_brings_a_quiet_file_up_unless_told_not_to(tmp_path, capsys):
    """The command line end to end: a 16-bit file of sample1 recorded 50 dB quieter (peak about 0.002) reads as
    the recording does at its own level; `--no-auto-gain` reads it as it comes (noise, for this model)."""
    import soundfile

    from asr_engine.backend import bundled_model_dir
    from asr_engine.cli import main

    audios, refs = _samples()
    path = tmp_path / "quiet.wav"
    soundfile.write(path, audios[0] * np.float32(10 ** (-50 / 20)), SAMPLE_RATE, subtype="PCM_16")
    base = ["transcribe", "--model", str(bundled_model_dir()), "--beam", "1", "-q"]
    assert main([*base, str(path)]) == 0
    brought = capsys.readouterr().out.strip()
    assert main([*base, "--no-auto-gain", str(path)]) == 0
    plain = capsys.readouterr().out.strip()
    assert main([*base, f"{SAMPLES}/sample1.wav"]) == 0
    recorded = capsys.readouterr().out.strip()
    assert word_error_counts(refs[0], brought)[0] <= word_error_counts(refs[0], recorded)[0] + 1
    assert word_error_counts(refs[0], plain)[0] >= word_error_counts(refs[0], recorded)[0] + 3
