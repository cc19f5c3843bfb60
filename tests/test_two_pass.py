"""Two passes (Engine(..., final_model=...), `--two-pass`): a stream's partials come from the streaming layout,
and each utterance's final is its audio decoded again in full context, as files are. Checked on the tests'
trained tiny model on both backends: finals equal the file mode's results, partials equal one pass's, each
endpointed utterance is decoded from its own audio, the audio kept for it is bounded, the server sends the
second pass's finals, and the CLI and API refuse what cannot work."""

import asyncio
import json
import urllib.request

import numpy as np
import pytest

import asr_engine
import asr_engine.engine as engine_module
from asr_engine.audio import load_audio
from asr_engine.backend import load_model
from asr_engine.checkpoint import Checkpoint
from asr_engine.cli import main
from asr_engine.engine import DecodeOptions, EndpointConfig, Engine, SessionOptions
from asr_engine.model.encoder import Encoder
from asr_engine.model.runtime import TorchModel
from asr_engine.tokenizer import CharTokenizer

from conftest import tiny_config

PATHS = [f"asr_engine/samples/sample{i}.wav" for i in (1, 2, 3)]
NAMES = ["a", "b", "c"]
PIECE = 1600  # samples fed at a time (100 ms)


@pytest.fixture(scope="module")
def audios():
    return [load_audio(p) for p in PATHS]


@pytest.fixture(scope="module", params=["torch", "onnx"])
def models(request):
    """(streaming, full context) of the tests' default model on one backend."""
    if request.param == "onnx":
        pytest.importorskip("onnxruntime")
    return load_model(None, request.param), load_model(None, request.param, context="full")


def _words(r):
    return [(w.word, round(w.start, 3), round(w.end, 3)) for w in r.words]


def test_finals_are_the_files_results_in_full_context_and_partials_stay_streaming(models, audios):
    first, full = models
    o = DecodeOptions(beam=4, nbest=2)
    files = Engine(full, o).transcribe_arrays(audios, NAMES)
    one = Engine(first, o)
    assert [r.text for r in one.transcribe_arrays(audios, NAMES, streaming=True)] != [r.text for r in files]
    two = Engine(first, o, final_model=full)
    for a, name, f in zip(audios, NAMES, files):
        s, s1 = two.session(), one.session()
        for i in range(0, len(a), PIECE):
            s.accept_audio(a[i: i + PIECE])
            s1.accept_audio(a[i: i + PIECE])
            two.step([s])
            one.step([s1])
            assert s.result() == s1.result()  # the partials are the first pass's
        r = s.finish(name)
        s1.finish(name)  # the first pass alone ends too (its final is not this test's)
        assert (r.text, r.nbest, _words(r), r.start) == (f.text, f.nbest, _words(f), 0.0)
        assert r.duration == pytest.approx(len(a) / 16000)
        two.close(s)
        one.close(s1)
    assert [r.text for r in two.transcribe_arrays(audios, NAMES, streaming=True)] == [r.text for r in files]


def test_each_endpointed_utterance_is_decoded_again_from_its_own_audio(models, audios):
    first, full = models
    o = DecodeOptions(beam=4)
    gap = np.zeros(24000, np.float32)
    stream = np.concatenate([audios[0], gap, audios[1], gap, audios[2]])

    def finals(engine):
        s = engine.session(options=SessionOptions(endpoint=EndpointConfig()))
        out = []
        for i in range(0, len(stream), PIECE):
            s.accept_audio(stream[i: i + PIECE])
            engine.step([s])
            out += s.pop_finals()
        last = s.finish("x")
        assert len(s._audio) <= len(stream) / PIECE and s._audio_kept <= s.samples
        return out + s.pop_finals() + ([last] if last.text else [])

    two, one = finals(Engine(first, o, final_model=full)), finals(Engine(first, o))
    assert len(two) == len(one) == 3
    assert [r.start for r in two] == [r.start for r in one]  # the first pass's endpoints cut the utterances
    files = Engine(full, o)
    for r in two:
        a = stream[round(r.start * 16000): round((r.start + r.duration) * 16000)]
        ref = files.transcribe_arrays([a], ["x"])[0]
        assert r.text == ref.text and r.text
        assert [w for w, *_ in _words(r)] == [w for w, *_ in _words(ref)]
        assert [w.start for w in r.words] == pytest.approx([r.start + w.start for w in ref.words])
    assert [r.text for r in two] != [r.text for r in one]


def test_an_utterance_longer_than_the_bound_keeps_its_first_pass_and_memory_stays_bounded(models, audios,
                                                                                          monkeypatch):
    first, full = models
    monkeypatch.setattr(engine_module, "FINAL_PASS_SECONDS", 2.5)
    long, short = np.concatenate(audios), min(audios, key=len)
    assert len(short) < 2.5 * 16000 < len(long)
    o = DecodeOptions(beam=4)
    two, one = Engine(first, o, final_model=full), Engine(first, o)
    s = two.session()
    for i in range(0, len(long), PIECE):
        s.accept_audio(long[i: i + PIECE])
        two.step([s])
        assert s._audio_kept <= 2.5 * 16000 + PIECE
    assert s.finish().text == one.transcribe_arrays([long], ["x"], streaming=True)[0].text
    assert two.transcribe_arrays([short], ["x"], streaming=True)[0].text == \
        Engine(full, o).transcribe_arrays([short], ["x"])[0].text  # a short one is still decoded again


def test_the_second_pass_needs_the_same_model_in_full_context(models):
    first, full = models
    with pytest.raises(ValueError, match="full context"):
        Engine(first, final_model=first)
    other = Encoder(tiny_config().with_context("full")).eval()
    with pytest.raises(ValueError, match="same model"):
        Engine(first, final_model=TorchModel(Checkpoint(other, CharTokenizer())))


def test_server_sends_the_second_pass_finals(audios):
    pytest.importorskip("websockets")
    from asr_engine.server.client import stream_file
    from servers import Running

    first, full = load_model(None, "torch"), load_model(None, "torch", context="full")
    o = DecodeOptions(beam=4)
    # what the client sends: the files as 16-bit PCM
    sent = [(np.clip(a, -1, 1) * 32767).astype(np.int16).astype(np.float32) / 32768 for a in audios]
    want = [r.text for r in Engine(full, o).transcribe_arrays(sent, NAMES)]
    assert want != [r.text for r in Engine(first, o).transcribe_arrays(sent, NAMES, streaming=True)]
    srv = Running(Engine(first, o, final_model=full))
    try:
        async def clients():
            return await asyncio.gather(*(stream_file(srv.url + "/", p, chunk_ms=80) for p in PATHS))

        async def vosk():  # Vosk's protocol: every chunk answered once, the final after eof
            from websockets.asyncio.client import connect

            async with connect(srv.url + "/vosk") as ws:
                await ws.send('{ "config" : { "sample_rate" : 16000 } }')
                pcm = (np.clip(audios[1], -1, 1) * 32767).astype("<i2").tobytes()
                for i in range(0, len(pcm), 8000):
                    await ws.send(pcm[i: i + 8000])
                    await ws.recv()
                await ws.send('{"eof" : 1}')
                return json.loads(await ws.recv())

        got = asyncio.run(asyncio.wait_for(clients(), 120))
        vosk_final = asyncio.run(asyncio.wait_for(vosk(), 60))
        base = srv.url.replace("ws://", "http://")
        metrics = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
        info = json.loads(urllib.request.urlopen(base + "/info", timeout=10).read())
    finally:
        srv.stop()
    assert [[m["text"] for m in msgs if m["type"] == "final"] for msgs in got] == [[t] for t in want]
    assert vosk_final["text"] == want[1]
    assert "asr_second_pass_seconds_count 4.0" in metrics  # on the second-pass thread
    assert info["two_pass"] is True


def test_cli_and_api(capsys):
    args = [*PATHS, "--beam", "4", "--lm", "none", "--format", "jsonl", "-q"]
    assert main(["transcribe", *args, "--context", "full"]) == 0
    files = capsys.readouterr().out
    assert main(["transcribe", *args, "--streaming", "--two-pass"]) == 0
    assert capsys.readouterr().out == files
    assert main(["transcribe", PATHS[0], "--two-pass"]) == 2
    assert "--two-pass" in capsys.readouterr().err
    engine = asr_engine.load(beam=4, two_pass=True, backend="torch")
    assert engine.final_pass is not None and engine.model.cfg.chunk_size != 512
    with pytest.raises(ValueError, match="two_pass"):
        asr_engine.load(two_pass=True, context="full")


def test_with_a_rescorer_the_rescorer_reads_the_second_pass(audios):
    """--two-pass --rescore whisper: the streaming pass keeps no last-layer output, and each final is the
    full-context pass's beam reranked, as a file decoded in full context with the rescorer is."""
    pytest.importorskip("tokenizers")
    from test_rescore import tiny_rescorer

    from asr_engine.features import FbankConfig

    from conftest import tiny_model

    stream = tiny_model("whisper", right_context=2)
    full = Encoder(stream.cfg.with_context("full"))
    full.load_state_dict(stream.state_dict())
    first = TorchModel(Checkpoint(stream, CharTokenizer(), FbankConfig(kind="whisper")))
    second = TorchModel(Checkpoint(full.eval(), CharTokenizer(), FbankConfig(kind="whisper")))
    rng = np.random.default_rng(0)
    noise = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 27000, 9000)]
    o = DecodeOptions(beam=4, nbest=4, rescorer=tiny_rescorer(50.0))
    want = Engine(second, o).transcribe_arrays(noise, NAMES)
    assert [r.nbest for r in want] != [r.nbest for r in Engine(second, DecodeOptions(beam=4, nbest=4)
                                                                 ).transcribe_arrays(noise, NAMES)]
    two = Engine(first, o, final_model=second)
    assert not two.rescores and two.final_pass.rescores
    s = two.session()
    s.accept_audio(noise[1])
    assert s.finish().nbest == want[1].nbest and s._hidden is None
    assert [r.nbest for r in two.transcribe_arrays(noise, NAMES, streaming=True)] == [r.nbest for r in want]


@pytest.mark.parametrize("auto_gain", [True, False])
def test_the_second_pass_hears_a_quiet_utterance_as_the_session_chose(models, audios, auto_gain):
    """A quiet stream's final pass decodes the audio the first pass heard (brought up as it went, or as it came
    with the session's auto_gain=False), and brings it up once more only if the session does."""
    from asr_engine.level import StreamGain

    first, full = models
    two = Engine(first, DecodeOptions(), final_model=full)
    heard = []
    decode = two.final_pass.transcribe_arrays
    two.final_pass.transcribe_arrays = lambda xs, paths, options, *a, **k: (
        heard.append((xs[0], options.auto_gain)), decode(xs, paths, options, *a, **k))[1]
    quiet = np.tile(audios[0], 2) * np.float32(0.004)  # about 4.5 s: past the stream gain's 2 s hold
    s = two.session(options=SessionOptions(auto_gain=auto_gain))
    for i in range(0, len(quiet), PIECE):
        s.accept_audio(quiet[i: i + PIECE])
        two.step([s])
    s.finish()
    (got, gain_option), = heard
    assert gain_option is auto_gain
    assert np.array_equal(got, StreamGain()(quiet)[: len(got)] if auto_gain else quiet[: len(got)])
