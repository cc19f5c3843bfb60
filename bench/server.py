"""server: N concurrent clients replaying files in real time against a server on localhost; the
largest N that stays real time with p95 partial latency under a bound, and the server's CPU and
memory.

Each client speaks Vosk's protocol at `/vosk`, where the server answers every audio message with
exactly one message once that audio has gone through the compute loop. The time from sending a
message to receiving its answer is the partial latency a client sees: queueing, batching and
compute. The model's chunk (the audio one encoder step waits for) comes on top of it.

Clients send one encoder step of audio per message (`--chunk-ms`, by default the model's chunk),
paced in real time, starting at staggered times. Each replays utterances one after another, with
a new connection for each, until it has sent `--seconds` of audio. After `eof`, the final result's
delay is measured too. N "keeps up" when the p95 latency is under `--bound-ms` and no message
failed. N doubles from 1 until it fails, then the gap is bisected.

Without `--url` the bench starts `asr-engine serve` on a free port and samples the server
process: CPU time (100% = one core busy) and resident memory (idle, peak per level, and per
session at the largest N that keeps up). With `--url`, pass `--pid` for the same.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from asr_engine.argtypes import at_least, listed, within
from bench.common import append_results, load_manifest, percentiles, table

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


async def _client(url: str, pcms: list[np.ndarray], first: int, seconds: float, chunk: int, delay: float,
                  lat: list, finals: list, failures: list, tls=None) -> None:
    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    await asyncio.sleep(delay)
    sent, i = 0.0, first
    while sent < seconds:
        pcm = pcms[i % len(pcms)]
        i += 1
        try:
            async with connect(url, max_size=1 << 22, open_timeout=30, **_ssl(tls)) as ws:
                await ws.send(json.dumps({"config": {"sample_rate": 16000}}))
                pending: collections.deque = collections.deque()  # send times, answered in order

                async def answers() -> None:
                    async for raw in ws:
                        t = loop.time()
                        m = json.loads(raw)
                        if "error" in m:
                            failures.append(m["error"])
                        if pending:
                            lat.append(t - pending.popleft())

                reader = asyncio.create_task(answers())
                t0 = loop.time()
                for k in range(0, len(pcm), chunk):
                    pending.append(loop.time())
                    await ws.send(pcm[k: k + chunk].tobytes())
                    await asyncio.sleep(max(0.0, t0 + (k + chunk) / 16000 - loop.time()))
                t_eof = loop.time()
                await ws.send('{"eof" : 1}')
                await asyncio.wait_for(reader, 60)  # the server closes after the final result
                finals.append(loop.time() - t_eof)
        except Exception as e:  # a refused or broken connection fails the level, it does not stop the bench
            failures.append(f"{type(e).__name__}: {e}")
            return
        sent += len(pcm) / 16000


async def _flooder(url: str, pcms: list[np.ndarray], seconds: float, out: dict, tls=None) -> None:
    """One native client that sends `seconds` of audio as fast as the server reads it (1 MiB messages)."""
    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    pcm = np.concatenate(pcms)
    pcm = np.tile(pcm, int(np.ceil(seconds * 16000 / len(pcm))))[: int(seconds * 16000)].tobytes()
    t0 = loop.time()
    async with connect(url, max_size=None, open_timeout=30, **_ssl(tls)) as ws:
        await ws.send(json.dumps({"type": "start", "partials": False}))
        await ws.recv()
        for k in range(0, len(pcm), 1 << 20):
            await ws.send(pcm[k: k + (1 << 20)])
        out["flood_sent_s"] = loop.time() - t0  # as long as the server's flow control made it
        await ws.send('{"type": "end"}')
        async for raw in ws:
            if json.loads(raw).get("type") == "error":
                out["flood_error"] = raw
    out["flood_done_s"] = loop.time() - t0


def _ssl(tls) -> dict:
    """websockets' connect() arguments for a TLS context of --ca-file (none: its default)."""
    return {"ssl": tls} if tls is not None else {}


async def _level(url: str, pcms: list[np.ndarray], n: int, seconds: float, chunk: int, pid: int | None,
                 flood: float = 0.0, tls=None) -> dict:
    lat, finals, failures = [], [], []
    flooded: dict = {}
    peak = [0.0]

    async def sample_memory() -> None:
        while True:
            peak[0] = max(peak[0], _rss_mb(pid))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample_memory()) if pid else None
    cpu0, t0 = (_cpu_seconds(pid) if pid else 0.0), time.perf_counter()
    step_s = chunk / 16000
    flooder = [_flooder(url.rsplit("/vosk", 1)[0] + "/", pcms, flood, flooded, tls)] if flood else []
    await asyncio.gather(*[_client(url, pcms, k, seconds, chunk, step_s * k / n, lat, finals, failures, tls)
                           for k in range(n)], *flooder)
    wall = time.perf_counter() - t0
    row = {"clients": n, "messages": len(lat), "failures": len(failures),
           **{f"latency_{k}_ms": v * 1000 for k, v in percentiles(lat).items()},
           **{f"final_{k}_ms": v * 1000 for k, v in percentiles(finals, (50, 95)).items()}}
    if pid:
        sampler.cancel()
        row["cpu_percent"] = 100 * (_cpu_seconds(pid) - cpu0) / wall
        row["rss_peak_mb"] = peak[0]
        row["rss_after_mb"] = _rss_mb(pid)
    row.update(flooded)
    row["first_failure"] = failures[0] if failures else ""
    return row


def _noted(log: str, most: int = 10) -> list[str]:
    """What a server the bench started said of trouble while it ran (errors, tracebacks, CUDA graphs turned
    off for eager steps): a run can keep up and still have taken another path than the one it measures."""
    lines = [line.strip() for line in log.splitlines()
             if re.search(r"CUDA graphs off|Traceback|[Ee]rror|[Ww]arning", line)]
    return lines[:most] + ([f"... and {len(lines) - most} more"] if len(lines) > most else [])


def _start_server(args) -> tuple[subprocess.Popen, str, Path, str]:
    log = Path(tempfile.mkstemp(prefix="bench-server-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "asr_engine.cli", "serve", "--port", "0", "--max-sessions", "4096",
           "--max-sessions-per-peer", "4096", "--backend", args.backend]  # every client is 127.0.0.1
    if args.model:
        cmd += ["--model", args.model]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.device:
        cmd += ["--device", args.device]
    if args.beam is not None:
        cmd += ["--beam", str(args.beam)]
    if args.lm is not None:
        cmd += ["--lm", args.lm]
    if args.rescore:
        cmd += ["--rescore", args.rescore]
    if args.two_pass:
        cmd += ["--two-pass"]
    if args.cuda_graphs:
        cmd += ["--cuda-graphs"]
    if args.precision:
        cmd += ["--precision", args.precision]
    if args.lm_precision:
        cmd += ["--lm-precision", args.lm_precision]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.time() + 600  # the first start may export the model to ONNX
    while time.time() < deadline and proc.poll() is None:
        if m := re.search(r"serving on (ws://[\d.]+:\d+/).*decoding: (.*)", log.read_text()):
            return proc, m.group(1), log, m.group(2)
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()[-2000:]}")


def main(args) -> None:
    from asr_engine.server.client import client_tls

    if args.ca_file and not args.url:
        raise ValueError("--ca-file goes with --url wss://... (the server the bench starts speaks ws://)")
    tls = client_tls(args.url or "", args.ca_file)  # before the manifest is read
    audios, _ = load_manifest(args.manifest, args.limit)
    pcms = [(np.clip(x, -1, 1) * 32767).astype("<i2") for x in audios]
    chunk_ms = args.chunk_ms
    if chunk_ms is None:
        from asr_engine.checkpoint import load_checkpoint

        cfg = load_checkpoint(args.model).model.cfg
        chunk_ms = cfg.chunk_size * cfg.frame_shift_s * 1000
    chunk = int(round(chunk_ms * 16))
    proc, log, decoding = None, None, None  # a server of the user's (--url) says nothing of its decoding
    if args.url:
        url, pid = args.url.rstrip("/") + "/vosk", args.pid
    else:
        proc, base, log, decoding = _start_server(args)
        url, pid = base + "vosk", proc.pid
    try:
        asyncio.run(_level(url, pcms, 1, min(args.seconds, 3.0), chunk, None, tls=tls))  # warm-up
        idle = _rss_mb(pid) if pid else None
        rows: dict[int, dict] = {}

        def measure(n: int) -> bool:
            row = asyncio.run(_level(url, pcms, n, args.seconds, chunk, pid, args.flood, tls))
            row["keeps_up"] = row["failures"] == 0 and row["latency_p95_ms"] < args.bound_ms
            rows[n] = row
            print(f"{n} clients: latency p50 {row['latency_p50_ms']:.0f} ms, p95 {row['latency_p95_ms']:.0f} ms, "
                  f"{row['failures']} failures" + (f", CPU {row['cpu_percent']:.0f}%, RSS {row['rss_peak_mb']:.0f} MB"
                                                   if pid else "")
                  + (f", flood of {args.flood:g} s decoded in {row.get('flood_done_s', float('nan')):.1f} s"
                     if args.flood else "") + ("" if row["keeps_up"] else "  <- falls behind"),
                  flush=True)
            return row["keeps_up"]

        good = 0
        if args.clients:  # exactly these levels
            for n in args.clients:
                if measure(n):
                    good = max(good, n)
        else:  # 1, 2, 4, ... until one falls behind, then bisect the gap
            n = 1
            while n <= args.max_clients and measure(n):
                good, n = n, n * 2
            bad = n if n <= args.max_clients else None
            while bad is not None and bad - good > max(1, good // 8):
                mid = (good + bad) // 2
                if measure(mid):
                    good = mid
                else:
                    bad = mid
    finally:
        noted = []
        if proc:
            proc.terminate()
            proc.wait(30)
            noted = _noted(log.read_text(errors="replace"))
            log.unlink(missing_ok=True)
    out = [rows[n] for n in sorted(rows)]
    summary = {"largest_realtime_clients": good, "bound_ms": args.bound_ms, "chunk_ms": chunk_ms,
               "server_noted": noted}
    for line in noted:
        print(f"server: {line}")
    if pid and good:
        summary["rss_idle_mb"] = idle
        summary["rss_per_session_mb"] = (rows[good]["rss_peak_mb"] - idle) / good
    columns = [("clients", "clients", "d"), ("latency p50 ms", "latency_p50_ms", ".0f"),
               ("p95", "latency_p95_ms", ".0f"), ("p99", "latency_p99_ms", ".0f"),
               ("final p50 ms", "final_p50_ms", ".0f"), ("final p95 ms", "final_p95_ms", ".0f"),
               ("failures", "failures", "d"), ("keeps up", "keeps_up", "")]
    if pid:
        columns[-1:-1] = [("server CPU %", "cpu_percent", ".0f"), ("RSS MB", "rss_peak_mb", ".0f"),
                          ("RSS after", "rss_after_mb", ".0f")]
    if decoding:
        print(f"decoding: {decoding}")
    print(table(out, columns))
    line = (f"largest N in real time with p95 latency < {args.bound_ms:g} ms: {good} "
            f"(messages of {chunk_ms:.0f} ms)")
    if "rss_per_session_mb" in summary:
        line += f"; RSS idle {idle:.0f} MB, {summary['rss_per_session_mb']:.2f} MB per session at N={good}"
    print(line)
    append_results(args.results, "server", out + [{"summary": True, **summary}],
                   {"model": args.model or "default", "manifest": args.manifest, "backend": args.backend,
                    "device": args.device or "cpu", "cuda_graphs": args.cuda_graphs, "seconds_per_client": args.seconds,
                    "precision": args.precision or "the model's", "lm_precision": args.lm_precision or "the model's",
                    "server": args.url or "started by the bench", "flood_seconds": args.flood,
                    "decoding": decoding})


def add_parser(sub) -> None:
    p = sub.add_parser("server", help="concurrent real-time clients against a server on localhost")
    p.add_argument("--manifest", required=True, help="JSONL manifest (or LibriSpeech-layout folder)")
    p.add_argument("--limit", type=at_least(1), default=40, help="utterances from the manifest (default 40)")
    p.add_argument("--url", default=None, help="a running server (ws://127.0.0.1:PORT/); default: start one")
    p.add_argument("--pid", type=at_least(1), default=None, help="with --url: the server's process, for CPU and memory")
    p.add_argument("--ca-file", default=None, metavar="PEM",
                   help="with --url wss://...: trust this certificate (a self-signed server's, or its CA's)")
    p.add_argument("--model", default=None, help="for the server the bench starts (default: the bundled model)")
    p.add_argument("--backend", default="auto", help="for the server the bench starts (default auto)")
    p.add_argument("--threads", type=at_least(0), default=0, help="for the server the bench starts")
    p.add_argument("--device", default=None, help="for the server the bench starts: cpu or cuda (default: serve's)")
    p.add_argument("--beam", type=at_least(1), default=None,
                   help="for the server the bench starts: its --beam (default: serve's, what the model recommends)")
    p.add_argument("--lm", default=None, help="for the server the bench starts: its --lm (default: serve's)")
    p.add_argument("--rescore", default=None, choices=["whisper"],
                   help="for the server the bench starts: its second pass (default: none)")
    p.add_argument("--two-pass", action="store_true",
                   help="for the server the bench starts: finals decoded again in full context (serve --two-pass)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="for the server the bench starts: encoder steps as captured CUDA graphs (serve --cuda-graphs)")
    p.add_argument("--precision", default=None, choices=["fp32", "int8"],
                   help="for the server the bench starts: its --precision (default: serve's)")
    p.add_argument("--lm-precision", default=None, choices=["fp32", "int8"],
                   help="for the server the bench starts: its --lm-precision (default: serve's)")
    p.add_argument("--seconds", type=within(0.1, math.inf), default=15.0,
                   help="audio each client sends per level (default 15)")
    p.add_argument("--chunk-ms", type=within(1, 30_000), default=None,
                   help="audio per message (default: the model's chunk)")
    p.add_argument("--bound-ms", type=within(1, math.inf), default=500.0, help="p95 latency bound (default 500)")
    p.add_argument("--clients", type=listed(at_least(1)), default=None,
                   help="measure exactly these N (comma-separated) instead of searching")
    p.add_argument("--max-clients", type=at_least(1), default=256, help="the search stops here (default 256)")
    p.add_argument("--flood", type=within(0, math.inf), default=0.0,
                   help="one more client sends this many seconds of audio as fast as it can, at every level")
    p.add_argument("--results", default="bench/results.jsonl", help="append JSON lines here ('' for none)")
    p.set_defaults(func=main)
