"""The streaming engine on the bundled model and real (synthetic) speech: continuous mode over a
several-minute stream, timestamps with leading silence, hotwords, sample rates, `transcribe --streaming`."""

import json
from difflib import SequenceMatcher

import numpy as np
import pytest
import soxr

from asr_engine.audio import load_audio
from asr_engine.checkpoint import load_checkpoint
from asr_engine.cli import main
from asr_engine.engine import DecodeOptions, EndpointConfig, Engine, SessionOptions

SAMPLES = [f"asr_engine/samples/sample{i}.wav" for i in (1, 2, 3)]


@pytest.fixture(scope="module")
def ckpt():
    return load_checkpoint(None)


@pytest.fixture(scope="module")
def speech():
    return [load_audio(p) for p in SAMPLES]


def _stream(engine: Engine, session, audio: np.ndarray, piece: int = 5120):
    """Feed in pieces, stepping as a server would; returns the utterances closed on the way and the
    session's cache sizes seen after each step."""
    finals, sizes = [], set()
    for i in range(0, len(audio), piece):
        session.accept_audio(audio[i: i + piece])
        engine.run([session])
        finals += session.pop_finals()
        sizes.add(session.state.nbytes())
    return finals, sizes


def test_long_stream_constant_cache_and_absolute_timestamps(ckpt, speech):
    rng = np.random.default_rng(0)
    parts, spans, n = [], [], 0
    while n < 200 * 16000:  # over three minutes: utterances between pauses of 1.6..4 s
        gap = np.zeros(int(rng.uniform(1.6, 4.0) * 16000), np.float32)
        a = speech[len(spans) % 3]
        spans.append(((n + len(gap)) / 16000, (n + len(gap) + len(a)) / 16000))
        parts += [gap, a]
        n += len(gap) + len(a)
    parts.append(np.zeros(32000, np.float32))
    audio = np.concatenate(parts)
    audio += 1e-4 * rng.standard_normal(len(audio)).astype(np.float32)
    engine = Engine(ckpt)
    s = engine.session(options=SessionOptions(endpoint=EndpointConfig()))
    finals, sizes = _stream(engine, s, audio)
    last = s.finish()
    assert last.text == "" and last.start >= spans[-1][1]  # the trailing silence holds no words
    assert len(sizes) == 1  # the caches do not grow with the stream
    assert len(finals) == len(spans)  # one utterance per spoken sentence
    for (a, b), f in zip(spans, finals):
        assert f.text and f.words
        assert a - 0.3 <= f.words[0].start and f.words[-1].end <= b + 0.3
        assert f.start <= f.words[0].start and f.words[-1].end <= f.start + f.duration
    for f, g in zip(finals, finals[1:] + [last]):
        assert f.start + f.duration <= g.start + 1e-6  # in order, not overlapping


def test_word_times_shift_with_leading_silence(ckpt, speech):
    engine = Engine(ckpt)
    plain = engine.transcribe_arrays([speech[1]], ["a"])[0]
    lead = 3.2
    shifted = engine.transcribe_arrays([np.concatenate([np.zeros(int(lead * 16000), np.float32), speech[1]])],
                                       ["b"])[0]
    # the silence in the attention's left context may change a word, not where the words are
    blocks = SequenceMatcher(a=[w.word for w in plain.words], b=[w.word for w in shifted.words]).get_matching_blocks()
    same = [(plain.words[m.a + k], shifted.words[m.b + k]) for m in blocks for k in range(m.size)]
    assert len(same) >= 4
    for w, v in same:
        assert v.start - w.start == pytest.approx(lead, abs=0.1)
        assert v.end - w.end == pytest.approx(lead, abs=0.1)


def test_hotwords_change_the_result_offline_and_streaming(ckpt, speech):
    # the model hears "feel free to stay as long as you wish" as "feel fre to stay as long as you wish"
    engine = Engine(ckpt, DecodeOptions(beam=8))
    plain = engine.transcribe_arrays([speech[1]], ["a"])[0].text
    assert "free" not in plain.split()
    options = SessionOptions(hotwords=("feel free to stay",))
    streamed = engine.transcribe_arrays([speech[1]], ["a"], options)[0]
    offline = Engine(ckpt, DecodeOptions(beam=8, hotwords=options.hotwords)).transcribe_arrays(
        [speech[1]], ["a"])[0]
    assert streamed.text == offline.text
    assert [w.word for w in streamed.words][:4] == ["feel", "free", "to", "stay"]
    assert streamed.text.split()[4:] == plain.split()[-5:]  # the rest of the sentence is unchanged
    with pytest.raises(ValueError, match="beam search"):
        Engine(ckpt).session(options=options)


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_sample_rates(ckpt, speech, rate):
    """A session at any rate hears what the offline path hears after resampling the whole file."""
    pcm = (soxr.resample(speech[1], 16000, rate, quality="VHQ") * 32767).astype(np.int16)
    ref = Engine(ckpt).transcribe_arrays([soxr.resample(pcm.astype(np.float32) / 32768, rate, 16000,
                                                             quality="VHQ")], ["a"])[0]
    engine = Engine(ckpt)
    s = engine.session(sample_rate=rate)
    _stream(engine, s, pcm, piece=rate // 10)
    res = s.finish()
    assert res.duration == pytest.approx(len(pcm) / rate, abs=0.01)
    assert res.text == ref.text and res.frames == ref.frames


def test_cli_streaming_equals_offline(tmp_path, capsys):
    outs = {}
    for name, extra in [("offline", []), ("streaming", ["--streaming"]),
                        ("endpoint", ["--streaming", "--endpoint", "--chunk-frames", "16"])]:
        assert main(["transcribe", *SAMPLES, "--format", "jsonl", "-q", "--threads", "1", "--backend", "torch",
                     *extra]) == 0
        outs[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for name in ("streaming", "endpoint"):
        assert [r["text"] for r in outs[name]] == [r["text"] for r in outs["offline"]]
        assert [r["words"] for r in outs[name]] == [r["words"] for r in outs["offline"]]
    assert main(["transcribe", SAMPLES[0], "--endpoint", "--backend", "torch"]) == 2
    assert "need --streaming" in capsys.readouterr().err
    assert main(["transcribe", SAMPLES[0], "--hotwords", "free"]) == 2
    assert "beam search" in capsys.readouterr().err
