"""The websocket server on a real port (127.0.0.1, port 0) with the bundled model."""

import asyncio
import json
import re
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

from asr_engine.audio import load_audio  # noqa: E402
from asr_engine.backend import load_model  # noqa: E402
from asr_engine.engine import DecodeOptions, Engine  # noqa: E402
from asr_engine.manifest import read_manifest  # noqa: E402
from asr_engine.server.client import stream_file  # noqa: E402
from servers import Running  # noqa: E402

SAMPLES = [f"asr_engine/samples/sample{i}.wav" for i in (1, 2, 3)]


@pytest.fixture(scope="module")
def engine():
    return Engine(load_model(None, "auto"), DecodeOptions(beam=4, nbest=2))


@pytest.fixture(scope="module")
def offline(engine):
    return {p: r.text for p, r in zip(SAMPLES, engine.transcribe_files(SAMPLES))}


@pytest.fixture(scope="module")
def srv(engine):
    r = Running(engine, idle_timeout=5.0)
    yield r
    r.stop()


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def finals(msgs):
    return [m for m in msgs if m["type"] == "final"]


def test_end_to_end_equals_offline_and_concurrent_clients(srv, offline):
    async def many():
        return await asyncio.gather(*[stream_file(srv.url + "/", SAMPLES[i % 3], chunk_ms=80,
                                                  start={"nbest": 2}) for i in range(9)])

    for i, msgs in enumerate(run(many())):
        (f,) = finals(msgs)
        assert f["text"] == offline[SAMPLES[i % 3]] and len(f["nbest"]) == 2 and f["nbest"][0] == f["text"]
        assert f["words"] and 0 <= f["words"][0]["start"] < f["words"][-1]["end"] <= f["end"] + 0.05
        assert 0 < f["skipped_fraction"] < 1
        assert all(m["type"] in ("partial", "final") for m in msgs)


def test_partials_in_real_time_and_continuous_mode(srv):
    audio = np.concatenate([load_audio(SAMPLES[1]), np.zeros(32000, np.float32), load_audio(SAMPLES[0])])
    import soundfile as sf
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        sf.write(f.name, audio, 16000)
        msgs = run(stream_file(srv.url + "/", f.name, realtime=True, chunk_ms=160, start={"endpoint": True}))
    parts = [m for m in msgs if m["type"] == "partial"]
    assert len(parts) >= 3 and all(p["text"].startswith(p["stable"]) for p in parts)
    fs = finals(msgs)
    assert len(fs) == 2 and fs[0]["end"] <= fs[1]["start"] + 0.05
    # in the order spoken: each final shares most of its words with its own sentence, few with the other's
    refs = {str(u.audio): u.text for u in read_manifest("asr_engine/samples/manifest.jsonl")}
    first, second = refs[SAMPLES[1]], refs[SAMPLES[0]]
    assert shared(first, fs[0]["text"]) >= 0.6 > shared(second, fs[0]["text"])
    assert shared(second, fs[1]["text"]) >= 0.6 > shared(first, fs[1]["text"])


def shared(ref: str, hyp: str) -> float:
    """The share of the reference's distinct words that the hypothesis has."""
    words = set(ref.split())
    return len(words & set(hyp.split())) / len(words)


async def _exchange(url, *messages, expect=1):
    async with connect(url) as ws:
        out = []
        for m in messages:
            await ws.send(m)
        for _ in range(expect):
            out.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        return out


@pytest.mark.parametrize("messages,code", [
    (["{not json"], "bad_json"),
    (["[1, 2]"], "bad_message"),
    ([b"\x00\x01"], "bad_state"),  # audio before start
    (['{"type": "start", "colour": "red"}'], "unknown_field"),
    (['{"type": "start", "sample_rate": "16000"}'], "bad_field"),
    (['{"type": "start", "sample_rate": 12345}'], "bad_sample_rate"),
    (['{"type": "start", "nbest": 9}'], "bad_field"),
    (['{"type": "start", "version": 7}'], "bad_version"),
    (['{"type": "start", "partials": 1}'], "bad_field"),
    (['{"type": "end"}'], "bad_state"),
    (['{"type": "pause"}'], "bad_message"),
    (['{"type": "start"}', b"\x00\x01\x02"], "bad_audio"),  # odd byte count for int16
    (['{"type": "start", "encoding": "float32"}', np.array([np.nan], "<f4").tobytes()], "bad_audio"),
    (['{"type": "start", "encoding": "float32"}', np.full(800, 20000.0, "<f4").tobytes()], "bad_audio"),  # int16 scale
    (['{"type": "start", "endpoint": {"max_utterance": -1}}'], "bad_field"),
    # once crashes of the handler (a close with no error message)
    (['{"type": "start", "endpoint": {"max_utterance": 1e400}}'], "bad_json"),
    (['{"type": "start", "endpoint": {"max_utterance": Infinity}}'], "bad_json"),
    (['{"type": "start", "endpoint": {"max_utterance": 1e300}}'], "bad_field"),
    (['{"type": "start", "sample_rate": ' + "9" * 5000 + "}"], "bad_json"),
    (["[" * 100_000], "bad_json"),
    (['{"type": "start", "hotwords": ["' + "a" * 101 + '"]}'], "bad_field"),  # 1,000 such took 1.1 s to compile
])
def test_bad_messages_get_errors_and_the_session_survives(srv, offline, messages, code):
    async def go():
        async with connect(srv.url + "/") as ws:
            for m in messages:
                await ws.send(m)
            while (msg := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "error":
                assert msg["type"] == "ready"
            assert msg["code"] == code and msg["message"]
            started = code == "bad_audio"  # those cases started a valid session first
            if not started:
                await ws.send('{"type": "start"}')
                assert json.loads(await ws.recv())["type"] == "ready"
            x = load_audio(SAMPLES[1])
            as_float = started and "float32" in messages[0]
            pcm = x.astype("<f4").tobytes() if as_float else (x * 32767).astype("<i2").tobytes()
            await ws.send(pcm)
            await ws.send('{"type": "end"}')
            msgs = [json.loads(m) async for m in ws]
            return msgs

    assert finals(run(go()))[-1]["text"] == offline[SAMPLES[1]]


def test_hotwords_are_compiled_beside_the_compute_loop(srv, engine, monkeypatch):
    """A session's hotword graph is built off the compute thread (which steps every session): 1,000 long
    phrases took 1.1 s there, a stall of everyone's partials; and the session decodes with the graph."""
    import threading

    threads = []
    build = engine.hotword_context

    def spy(options):
        threads.append(threading.current_thread().name)
        return build(options)

    monkeypatch.setattr(engine, "hotword_context", spy)

    async def go():
        async with connect(srv.url + "/") as ws:
            await ws.send(json.dumps({"type": "start", "hotwords": ["disputed authorship"], "hotword_boost": 3}))
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send((load_audio(SAMPLES[0]) * 32767).astype("<i2").tobytes())
            await ws.send('{"type": "end"}')
            return [json.loads(m) async for m in ws]

    msgs = run(go())
    assert threads and not any(name.startswith("asr-compute") for name in threads), threads
    assert "disputed authorship" in finals(msgs)[-1]["text"]


def test_oversized_message_closes_only_that_connection(srv, offline):
    async def go():
        good = asyncio.create_task(stream_file(srv.url + "/", SAMPLES[2], realtime=True, chunk_ms=200))
        async with connect(srv.url + "/", max_size=None) as ws:
            await ws.send('{"type": "start"}')
            await ws.recv()
            await ws.send(b"\x00" * (2 << 20))
            with pytest.raises(ConnectionClosed) as e:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert e.value.rcvd.code == 1009
        return await good

    assert finals(run(go()))[0]["text"] == offline[SAMPLES[2]]


def test_vosk_client_unchanged(srv, offline):
    """Written the way Vosk's examples are: config, 8000-byte chunks each answered once, eof."""
    async def go():
        async with connect(srv.url + "/vosk") as ws:
            await ws.send('{ "config" : { "sample_rate" : 16000, "words": true } }')
            pcm = (load_audio(SAMPLES[0]) * 32767).astype("<i2").tobytes()
            answers = []
            for i in range(0, len(pcm), 8000):
                await ws.send(pcm[i: i + 8000])
                answers.append(json.loads(await ws.recv()))
            await ws.send('{"eof" : 1}')
            final = json.loads(await ws.recv())
            return answers, final, -(-len(pcm) // 8000)

    answers, final, n = run(go())
    assert len(answers) == n and all("partial" in a or "text" in a for a in answers)
    assert final["text"] == offline[SAMPLES[0]]
    assert [w["word"] for w in final["result"]] == final["text"].split()
    assert all({"conf", "start", "end", "word"} == set(w) for w in final["result"])


def test_a_client_waiting_on_its_source_ends_when_the_server_ends_the_session(srv, offline):
    """The session's end comes from the server (here its idle limit) while the client's source waits for
    its next chunk (a quiet microphone, real-time pacing): the client returns what the server said then,
    it does not wait for the source first. And a file sent in real time in pieces longer than itself is
    paced by its own length, not the pieces' (it waited out 100 s for 2.3 s of audio, and the server had
    closed the session for idling long before)."""
    from asr_engine.server.client import stream_chunks

    async def quiet():
        yield np.zeros(3200, np.int16)  # 0.2 s, then nothing for a minute: under the 5 s window's 10%
        await asyncio.sleep(60)
        yield np.zeros(3200, np.int16)

    t0 = time.monotonic()
    msgs = run(stream_chunks(srv.url + "/", quiet()), timeout=30)
    assert [m["code"] for m in msgs if m["type"] == "error"] == ["idle_timeout"] and time.monotonic() - t0 < 30
    msgs = run(stream_file(srv.url + "/", SAMPLES[0], realtime=True, chunk_ms=100_000), timeout=30)
    assert finals(msgs)[0]["text"] == offline[SAMPLES[0]]


def test_http_endpoints_auth_and_busy(engine, offline):
    r = Running(engine, max_sessions=1, idle_timeout=1.0, token="s3cret")
    try:
        base = r.url.replace("ws://", "http://")
        assert urllib.request.urlopen(base + "/healthz", timeout=10).read() == b"ok\n"
        page = urllib.request.urlopen(base + "/", timeout=10)
        assert page.headers["Server"] == "asr-engine" and page.headers["X-Content-Type-Options"] == "nosniff"
        assert page.headers["X-Frame-Options"] == "DENY"
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        with pytest.raises(urllib.error.HTTPError) as e:  # the token guards the metrics too
            urllib.request.urlopen(base + "/metrics", timeout=10)
        assert e.value.code == 401
        with pytest.raises(InvalidStatus) as e:
            run(stream_file(r.url + "/", SAMPLES[0]))
        assert e.value.response.status_code == 401
        msgs = run(stream_file(r.url + "/?token=s3cret", SAMPLES[0]))
        assert finals(msgs)[0]["text"] == offline[SAMPLES[0]]

        async def busy():
            async with connect(r.url + "/", additional_headers={"Authorization": "Bearer s3cret"}) as ws:
                with pytest.raises(InvalidStatus) as e:
                    async with connect(r.url + "/", additional_headers={"Authorization": "Bearer s3cret"}):
                        pass
                assert e.value.response.status_code == 503
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))  # idle: no start within 1 s
                assert msg["code"] == "idle_timeout"

        run(busy())
        from prometheus_client.parser import text_string_to_metric_families

        scrape = urllib.request.Request(base + "/metrics", headers={"Authorization": "Bearer s3cret"})
        metrics = urllib.request.urlopen(scrape, timeout=10).read().decode()
        samples = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
        for name in ("asr_sessions", "asr_queue_depth", "asr_batch_size_bucket", "asr_rtf",
                     "asr_partial_latency_seconds_bucket", "asr_skipped_fraction", "asr_sessions_accepted_total"):
            assert name in samples, name
        assert samples["asr_rejected_total"] == 2 and samples["asr_sessions"] == 0
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/nothing", timeout=10)
    finally:
        r.stop()


def test_metrics_count_the_sessions_that_were_brought_up(engine, tmp_path):
    """A stream peaking under -20 dBFS is brought up as it goes (asr_engine.level), and /metrics counts the sessions
    that ended so (an operator's sign of microphones set too low); a stream at a usual level is not counted."""
    import soundfile
    from prometheus_client.parser import text_string_to_metric_families

    quiet = tmp_path / "quiet.wav"
    soundfile.write(quiet, np.tile(load_audio(SAMPLES[0]), 3) * np.float32(0.003), 16000, subtype="PCM_16")
    r = Running(engine)
    try:
        for path in (SAMPLES[0], str(quiet), SAMPLES[1]):
            assert finals(run(stream_file(r.url + "/", path)))
        plain = run(stream_file(r.url + "/", str(quiet), start={"auto_gain": False}))  # this session: as it comes
        text = urllib.request.urlopen(r.url.replace("ws://", "http://") + "/metrics", timeout=10).read().decode()
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples["asr_quiet_sessions_total"] == 1 and samples["asr_sessions_accepted_total"] == 4
        assert finals(plain)
        with pytest.raises(RuntimeError, match="'auto_gain' must be bool"):  # the session is refused
            run(stream_file(r.url + "/", SAMPLES[0], start={"auto_gain": "yes"}))
    finally:
        r.stop()


def test_methods_other_than_get_get_an_answer(srv, offline):
    """HEAD (a monitor's check, curl -I) gets GET's status and headers without the body; any other method,
    also one with a body (websockets' parser takes none and closed such a connection without a word), a
    405 that says what is served; and the server goes on serving sessions."""
    import http.client

    port = int(srv.url.rsplit(":", 1)[1])

    def ask(method, path, body=None, headers=()):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=dict(headers))
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        finally:
            conn.close()

    answer = raw(port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # everything until the server closes
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n")  # headers, no body
    assert b"Content-Length: 3\r\n" in answer and answer.count(b"Server: asr-engine") == 1  # it was twice
    status, headers, body = ask("HEAD", "/")
    assert status == 200 and body == b"" and headers["Content-Type"].startswith("text/html")
    assert int(headers["Content-Length"]) == len(ask("GET", "/")[2]) > 1000
    assert ask("HEAD", "/nothing")[:3:2] == (404, b"")
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    assert ask("HEAD", "/", headers=upgrade)[0] == 400
    for method, body in (("POST", b'{"type": "start"}'), ("PUT", b"x" * 100_000), ("DELETE", None),
                         ("OPTIONS", None)):
        status, headers, text = ask(method, "/", body)
        assert status == 405 and headers["Allow"] == "GET, HEAD", method
        assert text.decode().startswith(f"{method} is not served here"), text
    # a method spelt in lower case reaches websockets' parser, then the same answer
    assert raw(port, b"get / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405")
    msgs = run(stream_file(srv.url + "/", SAMPLES[0]))
    assert finals(msgs)[0]["text"] == offline[SAMPLES[0]]


def raw(port: int, request: bytes) -> bytes:
    """What the server sends back to `request` until it closes the connection."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        return b"".join(iter(lambda: s.recv(65536), b""))


def test_tls_serves_wss_and_https_on_one_port(engine, offline, tls_files, capsys):
    """With a certificate the server speaks wss:// and https:// (the page, health, metrics); a client that does
    not trust it, or speaks plain ws:// to it, fails in one line and the server goes on serving."""
    import ssl

    from asr_engine.cli import main

    r = Running(engine, tls_cert=tls_files.cert, tls_key=tls_files.key)
    try:
        url = r.url.replace("ws://", "wss://") + "/"
        msgs = run(stream_file(url, SAMPLES[0], tls=tls_files.client()))
        assert finals(msgs)[0]["text"] == offline[SAMPLES[0]]
        base = url.replace("wss://", "https://")
        assert urllib.request.urlopen(base + "healthz", timeout=10, context=tls_files.client()).read() == b"ok\n"
        with pytest.raises(ssl.SSLCertVerificationError):  # the system's certificates do not hold the test's CA
            run(stream_file(url, SAMPLES[0]))
        with pytest.raises(Exception) as e:  # a plain connection to the TLS port: no upgrade, no hang
            run(stream_file(r.url + "/", SAMPLES[0]), timeout=30)
        assert not isinstance(e.value, TimeoutError)
        assert main(["stream", SAMPLES[1], "--url", r.url + "/", "--fast", "-q"]) == 2
        assert "takes wss://" in capsys.readouterr().err
        assert main(["stream", SAMPLES[1], "--url", url, "--ca-file", tls_files.ca, "--fast", "-q"]) == 0
        assert capsys.readouterr().out.strip() == offline[SAMPLES[1]]
        assert main(["stream", SAMPLES[1], "--url", url, "--fast", "-q"]) == 2
        err = capsys.readouterr().err
        assert "certificate is not trusted" in err and "--ca-file" in err and "Traceback" not in err
        msgs = run(stream_file(url, SAMPLES[0], tls=tls_files.client()))  # still serving
        assert finals(msgs)[0]["text"] == offline[SAMPLES[0]]
    finally:
        r.stop()
    r = Running(engine, tls_cert=tls_files.both)  # the key in the certificate's file
    try:
        page = urllib.request.urlopen(r.url.replace("ws://", "https://") + "/", timeout=10, context=tls_files.client())
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    finally:
        r.stop()


def test_sigterm_style_shutdown_sends_finals(engine):
    r = Running(engine)

    async def go():
        async with connect(r.url + "/") as ws:
            await ws.send('{"type": "start"}')
            await ws.recv()
            await ws.send((load_audio(SAMPLES[1]) * 32767).astype("<i2").tobytes())
            await asyncio.sleep(0.3)
            stopping = asyncio.get_running_loop().run_in_executor(None, r.stop)
            msgs = [json.loads(m) async for m in ws]
            await stopping
            return msgs

    msgs = run(go())
    assert finals(msgs) and finals(msgs)[-1]["text"].startswith("feel")
    assert [m["code"] for m in msgs if m["type"] == "error"] == ["shutting_down"]
    assert msgs.index(finals(msgs)[-1]) > [m["type"] for m in msgs].index("error")


def test_soak_connect_stream_disconnect(srv, engine):
    import resource

    pcm = (load_audio(SAMPLES[0])[:8000] * 32767).astype("<i2").tobytes()

    async def cycles(n):
        for i in range(n):
            async with connect(srv.url + "/") as ws:
                await ws.send('{"type": "start"}')
                await ws.recv()
                await ws.send(pcm)
                if i % 2:  # half end properly, half just hang up
                    await ws.send('{"type": "end"}')
                    _ = [m async for m in ws]

    run(cycles(20))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(cycles(200), timeout=300)
    srv.call(asyncio.sleep(0.5))
    assert not srv.server.conns and not engine.sessions
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 50_000  # KiB


def test_cli_serve_and_stream_then_sigterm(tmp_path, capsys):
    """`asr-engine serve` in its own process; `asr-engine stream` against it; SIGTERM finishes open sessions."""
    import os
    import re
    import signal
    import subprocess
    import sys

    from asr_engine.cli import main

    proc = subprocess.Popen([sys.executable, "-m", "asr_engine.cli", "serve", "--port", "0", "--threads", "1"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        port = None
        for line in proc.stderr:
            if m := re.search(r"serving on ws://127.0.0.1:(\d+)/", line):
                port = int(m.group(1))
                break
        assert port, "the server did not start"
        assert main(["stream", SAMPLES[1], "--url", f"ws://127.0.0.1:{port}/", "--fast", "-q"]) == 0
        assert capsys.readouterr().out.strip().startswith("feel")

        async def cut_off():
            async with connect(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send('{"type": "start"}')
                await ws.recv()
                await ws.send((load_audio(SAMPLES[0]) * 32767).astype("<i2").tobytes())
                await asyncio.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                return [json.loads(m) async for m in ws]

        msgs = run(cut_off())
        assert finals(msgs) and "matter" in finals(msgs)[-1]["text"]
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    assert main(["stream", SAMPLES[1], "--url", f"ws://127.0.0.1:{port}/", "--fast"]) == 2
    assert "cannot connect" in capsys.readouterr().err


def _sounddevice():
    try:
        import sounddevice
    except (ImportError, OSError) as e:
        pytest.skip(f"no sounddevice/PortAudio here ({e})")
    return sounddevice


def test_cli_stream_mic_from_an_alsa_capture_device(srv, offline, tmp_path):
    """`stream --mic` through sounddevice and PortAudio from a real ALSA capture device: ALSA's `file`
    plugin, which records a raw file (sample1, then silence), set up in a private ~/.asoundrc."""
    import os
    import subprocess
    import sys

    sd = _sounddevice()
    if not any(h["name"] == "ALSA" for h in sd.query_hostapis()):
        pytest.skip("PortAudio has no ALSA host API here")
    raw = tmp_path / "mic.raw"
    (load_audio(SAMPLES[0]) * 32767).astype("<i2").tofile(raw)
    (tmp_path / ".asoundrc").write_text(
        f'pcm.!default {{\n type file\n slave.pcm "null"\n file "/dev/null"\n infile "{raw}"\n format "raw"\n}}\n')
    out = subprocess.run([sys.executable, "-m", "asr_engine.cli", "stream", "--mic", "--seconds", "4",
                          "--url", srv.url + "/"], env={**os.environ, "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "listening on default at 16000 Hz" in out.stderr
    assert out.stdout.strip() == offline[SAMPLES[0]]


def test_cli_stream_mic_without_a_device_says_so(capsys):
    from asr_engine.cli import main

    _sounddevice()
    assert main(["stream", "--mic", "--device", "no-such-microphone"]) == 2
    err = capsys.readouterr().err
    assert "no microphone" in err and "no-such-microphone" in err and "python -m sounddevice" in err
    assert main(["stream"]) == 2 and "FILE or --mic" in capsys.readouterr().err
    assert main(["stream", SAMPLES[0], "--seconds", "3"]) == 2 and "--seconds goes with --mic" in \
        capsys.readouterr().err


def test_a_flooding_client_waits_its_turn_and_its_backlog_is_bounded(engine, offline):
    """3 minutes of audio sent at full speed: the server reads it only as fast as it decodes it
    (the backlog stays under its bound), and a real-time client that starts after the flood
    finishes long before it, with its usual transcript."""
    import threading
    import time

    from prometheus_client.parser import text_string_to_metric_families

    r = Running(engine, idle_timeout=60.0, max_backlog_seconds=20.0, step_audio_seconds=1.0)
    base = r.url.replace("ws://", "http://")
    flood_pcm = (np.tile(load_audio(SAMPLES[0]), 80)[: 180 * 16000] * 32767).astype("<i2").tobytes()
    backlogs, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
            backlogs.extend(s.value for f in text_string_to_metric_families(text) for s in f.samples
                            if s.name == "asr_backlog_seconds")
            time.sleep(0.05)

    order = []

    async def flood():
        async with connect(r.url + "/", max_size=None) as ws:
            await ws.send('{"type": "start", "partials": false}')
            await ws.recv()
            for i in range(0, len(flood_pcm), 1 << 20):
                await ws.send(flood_pcm[i:i + (1 << 20)])
            await ws.send('{"type": "end"}')
            async for m in ws:
                if json.loads(m)["type"] == "final":
                    order.append("flood")

    async def realtime():
        await asyncio.sleep(1.0)  # the flood is under way
        msgs = await stream_file(r.url + "/", SAMPLES[1], realtime=True, chunk_ms=160)
        order.append("realtime")
        return msgs

    async def both():
        return await asyncio.gather(flood(), realtime())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        _, msgs = run(both(), timeout=300)
    finally:
        stop.set()
        watcher.join(10)
        r.stop()
    assert finals(msgs)[-1]["text"] == offline[SAMPLES[1]]
    assert order[0] == "realtime" and "flood" in order
    # bound + what is in flight: one message (32 s at most) and the realtime client's audio
    print("backlog max", max(backlogs))
    assert backlogs and max(backlogs) < 20.0 + 33.0 + 5.0


def test_slots_cannot_be_squatted(engine):
    """A client that trickles bytes loses its slot after one idle window; one address holds at most
    max_sessions_per_peer slots; no session outlives max_session_wall_seconds."""
    r = Running(engine, idle_timeout=1.0, max_sessions=3, max_sessions_per_peer=2, max_session_wall_seconds=2.5)

    async def squat():
        async with connect(r.url + "/") as ws:
            await ws.send('{"type": "start"}')
            await ws.recv()
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.send(b"\x00\x00")  # 1 sample every 0.2 s: a slot held, nothing streamed
                    await asyncio.sleep(0.2)
                    try:
                        msg = json.loads(await asyncio.wait_for(ws.recv(), 0.01))
                        if msg["type"] == "error":
                            assert msg["code"] == "idle_timeout"
                            held = asyncio.get_running_loop().time() - t0
                    except TimeoutError:
                        pass
            return held

    async def streams_too_long():
        async with connect(r.url + "/") as ws:
            await ws.send('{"type": "start"}')
            await ws.recv()
            second = np.zeros(16000, "<i2").tobytes()
            codes = []
            with pytest.raises(ConnectionClosed):
                for _ in range(10):  # real time, but longer than the wall-clock cap
                    await ws.send(second[:8000])
                    await asyncio.sleep(0.5)
                    while True:
                        try:
                            msg = json.loads(await asyncio.wait_for(ws.recv(), 0.01))
                        except TimeoutError:
                            break
                        codes.append(msg.get("code"))
            return codes

    async def per_peer():
        async with connect(r.url + "/"), connect(r.url + "/"):
            with pytest.raises(InvalidStatus) as e:
                async with connect(r.url + "/"):
                    pass
            return e.value.response.status_code

    try:
        assert run(squat(), timeout=30) < 2.5
        assert "session_too_long" in run(streams_too_long(), timeout=30)
        assert run(per_peer(), timeout=30) == 429
    finally:
        r.stop()


def test_our_client_with_a_token_passes_allowed_origins_and_refusals_are_one_line(engine, offline, capsys):
    from asr_engine.cli import main

    r = Running(engine, token="s3cret", origins=("http://good.example",))
    try:
        url = r.url + "/"
        assert main(["stream", SAMPLES[0], "--url", url, "--fast", "-q"]) == 2
        err = capsys.readouterr().err
        assert "HTTP 401" in err and "--token" in err and "Traceback" not in err
        # no Origin header (every non-browser client): allowed; the token from the option
        assert main(["stream", SAMPLES[0], "--url", url, "--fast", "-q", "--token", "s3cret"]) == 0
        assert capsys.readouterr().out.strip() == offline[SAMPLES[0]]

        async def from_origin(origin):
            async with connect(url, origin=origin, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
                await ws.send('{"type": "start"}')
                return json.loads(await ws.recv())["type"]

        assert run(from_origin("http://good.example")) == "ready"
        with pytest.raises(InvalidStatus) as e:
            run(from_origin("http://evil.example"))
        assert e.value.response.status_code == 403
    finally:
        r.stop()


def test_the_heap_is_given_back_when_the_last_session_closes(srv, monkeypatch):
    import asr_engine.server.app as app

    calls = []
    monkeypatch.setattr(app, "_release_memory", lambda: calls.append(len(srv.server.conns)))
    msgs = run(stream_file(srv.url + "/", SAMPLES[2], chunk_ms=320))
    assert finals(msgs)
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calls == [0]
    assert app._libc() is None or hasattr(app._libc(), "malloc_trim")


def test_the_server_wide_backlog_bound_pauses_senders_without_deadlock(engine):
    from prometheus_client.parser import text_string_to_metric_families

    r = Running(engine, idle_timeout=60.0, max_backlog_seconds=1e9, max_total_backlog_seconds=10.0)
    base = r.url.replace("ws://", "http://")
    pcm = (np.tile(load_audio(SAMPLES[0]), 30)[: 60 * 16000] * 32767).astype("<i2").tobytes()
    backlogs = []

    async def flood():
        async with connect(r.url + "/", max_size=None) as ws:
            await ws.send('{"type": "start", "partials": false}')
            await ws.recv()
            for i in range(0, len(pcm), 320_000):  # 10 s per message
                await ws.send(pcm[i:i + 320_000])
            await ws.send('{"type": "end"}')
            return [json.loads(m) async for m in ws]

    async def watch(stop):
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            text = await loop.run_in_executor(None, lambda: urllib.request.urlopen(base + "/metrics").read().decode())
            backlogs.extend(s.value for f in text_string_to_metric_families(text) for s in f.samples
                            if s.name == "asr_backlog_seconds")
            await asyncio.sleep(0.05)

    async def go():
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(stop))
        results = await asyncio.gather(flood(), flood(), flood())
        stop.set()
        await watcher
        return results

    try:
        results = run(go(), timeout=300)
    finally:
        r.stop()
    for msgs in results:
        assert len(finals(msgs)) == 1 and not [m for m in msgs if m["type"] == "error"]
    assert backlogs and max(backlogs) <= 10.0 + 3 * 10.0 + 0.5  # the bound, plus one message per sender


def test_the_bundled_model_tells_the_page_what_it_is_and_how_good():
    """/info (what the web page shows) names the bundled model and says how wrong it is on real speech."""
    from asr_engine.backend import bundled_model_dir
    from asr_engine.server.app import Server

    info = Server(Engine(load_model(bundled_model_dir(), "onnx")))._info()
    assert "whisper-base" in info["model"] and info["accuracy"].startswith("weak")
    assert re.search(r"\b\d{1,2}% of words wrong on real recorded speech", info["accuracy"])
