"""Scale-out: readiness apart from liveness, graceful drain with two local replicas on 127.0.0.1,
and the deployment files (Dockerfile, Kubernetes manifest) checked against the real server."""

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("websockets")
yaml = pytest.importorskip("yaml")

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import InvalidStatus  # noqa: E402

from asr_engine.audio import load_audio  # noqa: E402
from asr_engine.backend import load_model  # noqa: E402
from asr_engine.engine import Engine  # noqa: E402
from servers import Running  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = str(ROOT / "asr_engine" / "samples" / "sample2.wav")


def _get(url: str) -> tuple[int, str]:
    try:
        r = urllib.request.urlopen(url, timeout=10)
        return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _http(srv: Running) -> str:
    return srv.url.replace("ws://", "http://")


@pytest.fixture(scope="module")
def offline():
    return Engine(load_model(None, "onnx")).transcribe_files([SAMPLE])[0].text


@pytest.fixture()
def replicas():
    """Two replicas as an orchestrator runs them: each its own process state (engine, server)."""
    rs = [Running(Engine(load_model(None, "onnx")), idle_timeout=30.0, max_sessions=2) for _ in range(2)]
    yield rs
    for r in rs:
        if not r.server._closing:
            r.stop()


async def _session(url: str, pcm: bytes, pause: asyncio.Event | None = None) -> str:
    """One session: start, the audio in 100 ms messages (waiting at the middle for `pause` to be set),
    end; returns the final text."""
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "start"}))
        await ws.recv()
        half = len(pcm) // 2 // 3200 * 3200
        for i in range(0, len(pcm), 3200):
            if pause is not None and i == half:
                await pause.wait()
            await ws.send(pcm[i: i + 3200])
        await ws.send(json.dumps({"type": "end"}))
        async for raw in ws:
            m = json.loads(raw)
            if m["type"] == "final":
                return m["text"]
    raise AssertionError("no final")


def test_readiness_is_apart_from_liveness_and_tracks_capacity(replicas, offline):
    a, _ = replicas
    assert _get(_http(a) + "/healthz") == (200, "ok\n")
    assert _get(_http(a) + "/readyz") == (200, "ready\n")
    pcm = (load_audio(SAMPLE) * 32767).astype("<i2").tobytes()

    async def go():
        gates = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(_session(a.url + "/", pcm, g)) for g in gates]
        for _ in range(200):  # both sessions open: the replica is full
            if len(a.server.conns) == 2:
                break
            await asyncio.sleep(0.05)
        status = await asyncio.to_thread(_get, _http(a) + "/readyz")
        live = await asyncio.to_thread(_get, _http(a) + "/healthz")
        for g in gates:
            g.set()
        texts = await asyncio.gather(*tasks)
        return status, live, texts

    status, live, texts = asyncio.run(go())
    assert status == (503, "at capacity\n") and live == (200, "ok\n")
    assert texts == [offline, offline]
    for _ in range(100):
        if not a.server.conns:
            break
        time.sleep(0.05)
    assert _get(_http(a) + "/readyz") == (200, "ready\n")


def test_drain_finishes_open_sessions_refuses_new_ones_and_the_other_replica_serves(replicas, offline):
    a, b = replicas
    pcm = (load_audio(SAMPLE) * 32767).astype("<i2").tobytes()

    async def go():
        gate = asyncio.Event()
        open_on_a = asyncio.create_task(_session(a.url + "/", pcm, gate))
        for _ in range(200):
            if a.server.conns:
                break
            await asyncio.sleep(0.05)
        drained = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(a.server.drain(30.0), a.loop))
        for _ in range(100):
            if a.server._draining:
                break
            await asyncio.sleep(0.02)
        ready_a = await asyncio.to_thread(_get, _http(a) + "/readyz")
        ready_b = await asyncio.to_thread(_get, _http(b) + "/readyz")
        with pytest.raises(InvalidStatus) as refused:
            async with connect(a.url + "/"):
                pass
        on_b = await _session(b.url + "/", pcm)  # the load balancer's next choice
        assert not drained.done()  # the open session keeps the draining replica up
        gate.set()
        text_a = await open_on_a
        await asyncio.wait_for(drained, 30)
        return ready_a, ready_b, refused.value.response.status_code, on_b, text_a

    ready_a, ready_b, code, on_b, text_a = asyncio.run(go())
    assert ready_a == (503, "draining\n") and ready_b == (200, "ready\n")
    assert code == 503
    assert text_a == offline and on_b == offline  # nothing lost on the draining replica
    with pytest.raises(OSError):  # drained and stopped: the port is closed
        urllib.request.urlopen(_http(a) + "/healthz", timeout=5)
    assert _get(_http(b) + "/readyz") == (200, "ready\n")


def test_drain_gives_up_after_its_time_and_sends_the_finals(replicas):
    a, _ = replicas
    pcm = (load_audio(SAMPLE) * 32767).astype("<i2").tobytes()

    async def go():
        async with connect(a.url + "/") as ws:
            await ws.send(json.dumps({"type": "start"}))
            await ws.recv()
            await ws.send(pcm[: len(pcm) // 2])  # and never ends the stream
            t0 = time.monotonic()
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(a.server.drain(0.5), a.loop))
            msgs = [json.loads(m) async for m in ws]
            return time.monotonic() - t0, msgs

    waited, msgs = asyncio.run(go())
    assert waited < 15
    assert [m["type"] for m in msgs if m["type"] in ("error", "final")] == ["error", "final"]
    assert next(m for m in msgs if m["type"] == "error")["code"] == "shutting_down"


def test_deployment_files_point_at_the_real_server():
    from asr_engine.cli import build_parser

    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Deployment", "Service"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = build_parser().parse_args(c["args"][1:])  # the flags exist and parse
    assert c["args"][0] == "asr-engine" and args.func.__name__ == "cmd_serve"
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["ws"]
    assert args.port == port and args.host == "0.0.0.0"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ws"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ws"}
    assert pod["terminationGracePeriodSeconds"] > args.drain_seconds + 10  # drain, then the finals' grace
    assert kinds["Service"]["spec"]["ports"][0]["targetPort"] == "ws"
    assert kinds["Service"]["spec"]["selector"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert set(c["resources"]["requests"]) == {"cpu", "memory"} and set(c["resources"]["limits"]) == {"cpu", "memory"}

    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    dargs = build_parser().parse_args(cmd[1:])
    assert dargs.func.__name__ == "cmd_serve" and f"EXPOSE {dargs.port}" in dockerfile
    assert "'.[cpu]'" in dockerfile  # the torch-free install
    health = re.search(r"^HEALTHCHECK .*CMD (\[.*\])$", dockerfile, re.M).group(1)
    assert f"127.0.0.1:{dargs.port}/healthz" in health
    # every probe path answers on a running server
    srv = Running(Engine(load_model(None, "onnx")))
    try:
        for probe in (c["readinessProbe"], c["livenessProbe"]):
            assert _get(_http(srv) + probe["httpGet"]["path"])[0] == 200
    finally:
        srv.stop()


def test_sigterm_drains_the_cli_server_and_sigint_stops_it(offline):
    import signal
    import subprocess
    import sys

    def start():
        p = subprocess.Popen([sys.executable, "-m", "asr_engine.cli", "serve", "--host", "127.0.0.1", "--port", "0",
                              "--drain-seconds", "30"], stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(200):
            m = re.search(r"ws://127\.0\.0\.1:(\d+)/", p.stderr.readline())
            if m:
                return p, int(m.group(1))
        p.kill()
        raise AssertionError("the server did not start")

    pcm = (load_audio(SAMPLE) * 32767).astype("<i2").tobytes()
    proc, port = start()
    try:
        async def go():
            gate = asyncio.Event()
            task = asyncio.create_task(_session(f"ws://127.0.0.1:{port}/", pcm, gate))
            await asyncio.sleep(1.0)  # the session is open, half of its audio sent
            proc.send_signal(signal.SIGTERM)
            for _ in range(100):
                ready = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/readyz")
                if ready[0] == 503:
                    break
                await asyncio.sleep(0.05)
            gate.set()
            return ready, await task

        ready, text = asyncio.run(go())
        assert ready == (503, "draining\n") and text == offline
        assert proc.wait(20) == 0  # the last session ended: the drain is over
    finally:
        proc.kill()
    proc, port = start()
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
