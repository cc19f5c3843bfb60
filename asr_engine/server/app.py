"""The websocket streaming server: one Session per connection, one compute loop for all.

Connections only parse and queue audio on the event loop. A single compute task waits
until some connection has audio (no polling), gives others a short deadline to join
(or goes at once when `batch_size` are ready), then feeds and steps every ready session
as one batch on a worker thread, and hands each connection its partials and finals.

Paths: `/` native protocol (and, for a plain GET, the web page in `web/index.html`), `/vosk`
Vosk's protocol, plain HTTP `/healthz`, `/readyz`, `/info` and `/metrics`; HEAD answers GET's headers, any other
method 405.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hmac
import itertools
import json
import logging
import math
import os
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from asr_engine.audio import AudioError
from asr_engine.engine import Engine, SessionOptions
from asr_engine.endpoint import EndpointConfig
from asr_engine.server.metrics import CONTENT_TYPE_LATEST, Metrics
from asr_engine.server.protocol import (PROTOCOL_VERSION, ProtocolError, Start, VoskConfig, decode_audio,
                                        final_message, parse_json, parse_start, parse_vosk_config, vosk_result)
from asr_engine.results import Result

__all__ = ["Server", "ServerConfig"]

log = logging.getLogger("asr_engine.server")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 2700
    max_sessions: int = 64  # more: HTTP 503 before the upgrade
    max_message_bytes: int = 1 << 20  # a larger message closes the connection (1009)
    idle_timeout: float = 30.0  # the window of the slot check: less audio than min_audio_fraction of it closes
    min_audio_fraction: float = 0.1  # seconds of audio per second of wall time, over each idle_timeout window
    max_session_wall_seconds: float = 7200.0  # a session's whole life, however much audio it sends
    max_sessions_per_peer: int = 16  # open sessions from one client address
    max_session_seconds: float = 3600.0  # of audio per connection
    batch_size: int = 32  # sessions that make the compute loop go at once
    batch_deadline_ms: float = 10.0  # how long a ready session waits for others to join its batch
    token: str | None = None  # bearer token required of clients (header, or ?token= for browsers)
    origins: tuple[str, ...] | None = None  # allowed Origin headers (None: any)
    shutdown_grace: float = 10.0  # seconds to send the finals of sessions ended by a shutdown
    drain_seconds: float = 30.0  # a drain (SIGTERM) waits this long for open sessions to end on their own
    # fairness and memory: a compute pass feeds each session at most step_audio_seconds of its
    # backlog (round robin: a client that sends faster than real time waits its turn, it does not
    # take the others' turns), and a session with more than max_backlog_seconds of audio waiting
    # is not read from until half of it is decoded (TCP backpressure on the fast sender)
    step_audio_seconds: float = 1.0
    max_backlog_seconds: float = 30.0
    # the server-wide bound: all sessions' waiting audio together (16 kHz float32: 600 s = 38 MB);
    # over it, every session that sends more is paused until the total is half of it
    max_total_backlog_seconds: float = 600.0
    # TLS: wss:// and https:// on the same port (browsers give a page its microphone only on https or
    # localhost); a PEM certificate chain, and its private key unless the certificate file holds it
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self):
        """A limit that cannot work is refused here, not met later: a batch of 0 sessions never steps, a
        port past 65535 fails inside the socket layer, a NaN bound compares false with everything."""
        if not (isinstance(self.port, int) and 0 <= self.port <= 65535):
            raise ValueError(f"port {self.port!r}: must be 0..65535 (0: any free port)")
        for name in ("max_sessions", "max_message_bytes", "max_sessions_per_peer", "batch_size"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} {getattr(self, name)!r}: must be a whole number, at least 1")
        positive = ("idle_timeout", "max_session_wall_seconds", "max_session_seconds", "step_audio_seconds",
                    "max_backlog_seconds", "max_total_backlog_seconds")
        for name in (*positive, "batch_deadline_ms", "shutdown_grace", "drain_seconds", "min_audio_fraction"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 if name in positive else v >= 0)):
                raise ValueError(f"{name} {v!r}: must be a number {'above 0' if name in positive else 'of at least 0'}")
        if self.min_audio_fraction > 1:
            raise ValueError(f"min_audio_fraction {self.min_audio_fraction!r}: must be at most 1")
        self.ssl_context()  # a certificate that cannot be read, or a key that is not its own, is said now

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context, or None for plain ws:// and http://."""
        if self.tls_cert is None:
            if self.tls_key is not None:
                raise ValueError(f"tls_key {self.tls_key}: goes with a certificate, tls_cert")
            return None
        for name, path in (("tls_cert", self.tls_cert), ("tls_key", self.tls_key)):
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{name} {path}: {'not a file' if os.path.exists(path) else 'no such file'}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # TLS 1.2 and up, Python's default ciphers

        def no_passphrase() -> bytes:  # OpenSSL would otherwise ask for it on the terminal, and wait
            raise _EncryptedKey

        try:
            context.load_cert_chain(self.tls_cert, self.tls_key, password=no_passphrase)
        except _EncryptedKey:
            raise ValueError(f"{'tls_key ' + self.tls_key if self.tls_key else 'tls_cert ' + self.tls_cert}: the "
                             "private key is encrypted; give it unencrypted (openssl pkey -in KEY -out KEY2)") from None
        except (ssl.SSLError, OSError) as e:
            if getattr(e, "reason", None) == "KEY_VALUES_MISMATCH":
                raise ValueError(f"tls_key {self.tls_key}: not the private key of {self.tls_cert}") from None
            if self.tls_key is None:
                raise ValueError(f"tls_cert {self.tls_cert}: not a PEM certificate with its private key in the same "
                                 "file (a key in a file of its own is tls_key)") from None
            raise ValueError(f"tls_cert {self.tls_cert}: not a PEM certificate, or {self.tls_key} not a PEM "
                             f"private key ({e})") from None
        return context


class _EncryptedKey(Exception):
    pass


@dataclass
class _Conn:
    id: int
    ws: ServerConnection
    vosk: bool
    peer: str | None = None
    start: Start | None = None
    vosk_cfg: VoskConfig = field(default_factory=VoskConfig)
    session: object = None
    pending: collections.deque = field(default_factory=collections.deque)  # (audio, ends a message) not yet fed
    pending_samples: int = 0
    readable: asyncio.Event = field(default_factory=asyncio.Event)  # cleared while the backlog is over its bound
    arrived: float = 0.0  # when the newest pending audio arrived
    end: bool = False  # the client ended the input
    fed_end: bool = False
    audio_seconds: float = 0.0
    last_partial: str = ""
    vosk_finals: list = field(default_factory=list)
    finals_sent: int = 0
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    held: collections.deque = field(default_factory=collections.deque)  # (events, owed) behind a second pass
    second_pass_task: asyncio.Task | None = None

    def has_work(self) -> bool:
        return self.session is not None and not self.done.is_set() and (bool(self.pending) or
                                                                        (self.end and not self.fed_end))


class Server:
    def __init__(self, engine: Engine, config: ServerConfig = ServerConfig()):
        self.engine, self.cfg = engine, config
        self.metrics = Metrics()
        self.conns: dict[int, _Conn] = {}
        self._ids = itertools.count(1)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="asr-compute")  # the engine is single-threaded
        # the second pass (a finished utterance decoded again in full context, or Whisper's decoder over it, and its
        # writing: punctuation, casing, numbers) runs beside the compute loop, so that one session's final never
        # holds up every session's next step
        self._second = (ThreadPoolExecutor(1, thread_name_prefix="asr-second-pass")
                        if engine.options.rescorer is not None or engine.final_pass is not None
                        or engine.writes() else None)
        self._wake = asyncio.Event()
        self._closing = False
        self._draining = False
        self._server = None
        self._loop_task: asyncio.Task | None = None

    # ---- life cycle -------------------------------------------------------------------------
    async def start(self) -> "Server":
        self._server = await serve(self._handle, self.cfg.host, self.cfg.port, process_request=self._http,
                                   create_connection=_Connection, ssl=self.cfg.ssl_context(),
                                   max_size=self.cfg.max_message_bytes,
                                   # browsers always send Origin; other clients (ours, Vosk's) send none
                                   origins=(*self.cfg.origins, None) if self.cfg.origins else None,
                                   ping_interval=20, ping_timeout=20, max_queue=2, server_header="asr-engine",
                                   close_timeout=2)
        self._loop_task = asyncio.create_task(self._compute_loop())
        log.info(json.dumps({"event": "listening", "host": self.cfg.host, "port": self.port}))
        return self

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    def readiness(self) -> tuple[bool, str]:
        """Whether a load balancer should send this replica new sessions, and why not: the model is
        loaded once the server runs; a draining or stopping server, one at its session limit, and one
        over its server-wide backlog bound are not ready (liveness, /healthz, is separate)."""
        if self._closing:
            return False, "stopping"
        if self._draining:
            return False, "draining"
        if len(self.conns) >= self.cfg.max_sessions:
            return False, "at capacity"
        if self._backlog_seconds() >= self.cfg.max_total_backlog_seconds:
            return False, "backlog over its bound"
        return True, "ready"

    async def drain(self, seconds: float | None = None) -> None:
        """Graceful drain: refuse new sessions (and say so on /readyz) while the open ones go on until
        their clients end them, for up to `seconds` (default: the config's drain_seconds); then shut
        down (sessions still open then get their finals)."""
        self._draining = True
        deadline = time.monotonic() + (self.cfg.drain_seconds if seconds is None else seconds)
        log.info(json.dumps({"event": "draining", "sessions": len(self.conns)}))
        while self.conns and time.monotonic() < deadline and not self._closing:
            await asyncio.sleep(0.05)
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting; end every open session's input, send its finals, close it."""
        if self._closing:
            return
        self._closing = True
        for c in list(self.conns.values()):
            if not c.end:  # what the client sends from now on is not read: say so before the finals
                self._error(c, "shutting_down", "the server is stopping: audio sent after this is not decoded")
            self._end(c)
        waits = [c.done.wait() for c in self.conns.values()]
        if waits:
            await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=self.cfg.shutdown_grace)
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        if self._loop_task:
            self._loop_task.cancel()
        self._pool.shutdown(wait=True)
        if self._second is not None:
            self._second.shutdown(wait=True)
        log.info(json.dumps({"event": "stopped"}))

    # ---- plain HTTP before the upgrade ------------------------------------------------------
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.method == "GET":
            return self._get(connection, request)
        if request.method != "HEAD":  # one without a body (one with a body _Connection answered)
            return _not_allowed(request.method)
        # HEAD (a monitor's health check, curl -I): GET's status and headers without its body
        response = self._get(connection, request)
        if response is None:
            return _response(HTTPStatus.BAD_REQUEST, "a websocket handshake is a GET\n", head=True)
        return Response(response.status_code, response.reason_phrase, response.headers, b"")

    def _get(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/healthz":  # liveness: the process answers
            return _response(HTTPStatus.OK, "ok\n")
        if url.path == "/readyz":  # readiness: send new sessions here
            ready, why = self.readiness()
            return _response(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, why + "\n")
        if url.path == "/info":  # what the page shows: the model and what it is good for
            if not self._authorized(request, url):
                return _response(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token\n")
            return _response(HTTPStatus.OK, json.dumps(self._info()), "application/json")
        if url.path == "/metrics":
            if not self._authorized(request, url):
                return _response(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token\n")
            queue = sum(1 for c in self.conns.values() if c.has_work())
            return _response(HTTPStatus.OK, self.metrics.render(len(self.conns), queue, self._backlog_seconds()),
                             CONTENT_TYPE_LATEST)
        if url.path not in ("/", "/vosk"):
            return _response(HTTPStatus.NOT_FOUND, "not found\n")
        if "upgrade" not in request.headers.get("Connection", "").lower():
            if url.path == "/":  # a browser: the page that streams its microphone or a file back here
                return _response(HTTPStatus.OK, _page(), "text/html; charset=utf-8")
            return _response(HTTPStatus.NOT_FOUND, "this path speaks websocket\n")
        if not self._authorized(request, url):
            self.metrics.rejected_total.inc()
            return _response(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token\n")
        if self._closing or self._draining:
            self.metrics.rejected_total.inc()
            return _response(HTTPStatus.SERVICE_UNAVAILABLE, "server draining: connect to another replica\n")
        if len(self.conns) >= self.cfg.max_sessions:
            self.metrics.rejected_total.inc()
            return _response(HTTPStatus.SERVICE_UNAVAILABLE, "server busy: too many sessions\n")
        peer = _peer(connection)
        if sum(1 for c in self.conns.values() if c.peer == peer) >= self.cfg.max_sessions_per_peer:
            self.metrics.rejected_total.inc()
            return _response(HTTPStatus.TOO_MANY_REQUESTS,
                             f"too many sessions from this address (at most {self.cfg.max_sessions_per_peer})\n")
        return None

    @functools.cache
    def _info(self) -> dict:
        info = self.engine.model.info or {}
        return {"model": info.get("name", "asr-engine model"), "accuracy": info.get("accuracy"),
                "trained_on": info.get("trained_on"), "parameters": self.engine.model.n_params,
                "chunk_ms": round(self.engine.hop_samples / 16),
                "beam": self.engine.options.beam, "two_pass": self.engine.final_pass is not None,
                "punctuated": self.engine.options.punctuator is not None,
                "numbers": "digits" if self.engine.figures() else "words",
                "precision": self.engine.model.precision}

    def _authorized(self, request: Request, url) -> bool:
        """The bearer token (header, or ?token= for browsers), compared in constant time."""
        if self.cfg.token is None:
            return True
        token = self.cfg.token.encode()
        header = request.headers.get("Authorization", "").encode()
        query = parse_qs(url.query).get("token", [""])[0].encode()
        return hmac.compare_digest(header, b"Bearer " + token) | hmac.compare_digest(query, token)

    # ---- one connection ---------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        if self._closing or len(self.conns) >= self.cfg.max_sessions:  # a burst got past the HTTP check
            await ws.close(1013, "server busy")
            return
        conn = _Conn(next(self._ids), ws, urlsplit(ws.request.path).path == "/vosk", _peer(ws))
        self.conns[conn.id] = conn
        self.metrics.sessions_total.inc()
        writer = asyncio.create_task(self._writer(conn))
        log.info(json.dumps({"event": "open", "session": conn.id, "vosk": conn.vosk,
                             "peer": conn.peer}))
        try:
            if conn.vosk:
                await self._open_session(conn, VoskConfig())  # Vosk clients may start audio at once
            await self._read(conn)
            await conn.done.wait()
        except ConnectionClosed:
            pass
        finally:
            conn.done.set()
            self.conns.pop(conn.id, None)
            if conn.session is not None:
                self._close_session(conn.session)
            conn.pending.clear()
            conn.pending_samples = 0
            if not self.conns:
                _release_memory()
            conn.outbox.put_nowait(None)
            await writer
            await ws.close()
            log.info(json.dumps({"event": "close", "session": conn.id, "audio_s": round(conn.audio_seconds, 2)}))

    async def _read(self, conn: _Conn) -> None:
        """Read messages until the input ends. A slot is for streaming: in every window of
        idle_timeout seconds the client must send at least min_audio_fraction of it in audio (a
        client that trickles bytes to hold a slot loses it), and no session outlives
        max_session_wall_seconds. Windows in which the server itself is not reading (backpressure)
        do not count."""
        loop = asyncio.get_running_loop()
        opened = window = loop.time()
        window_audio = conn.audio_seconds
        conn.readable.set()
        while not conn.end:
            if not conn.readable.is_set():  # flow control: the socket waits, the client's sends block
                await conn.readable.wait()
                window, window_audio = loop.time(), conn.audio_seconds
                continue
            now = loop.time()
            if now - opened >= self.cfg.max_session_wall_seconds:
                self._error(conn, "session_too_long", f"open for over {self.cfg.max_session_wall_seconds:g} s")
                self._end(conn)
                return
            if now - window >= self.cfg.idle_timeout:
                sent = conn.audio_seconds - window_audio
                if sent < self.cfg.min_audio_fraction * self.cfg.idle_timeout:
                    self._error(conn, "idle_timeout", f"{sent:.2f} s of audio in the last {self.cfg.idle_timeout:g} s "
                                                      f"(a session must stream)")
                    self._end(conn)
                    return
                window, window_audio = now, conn.audio_seconds
            left = min(window + self.cfg.idle_timeout, opened + self.cfg.max_session_wall_seconds) - now
            try:
                msg = await asyncio.wait_for(conn.ws.recv(), max(left, 0.001))
            except TimeoutError:
                continue  # the checks above decide
            except ConnectionClosed:
                conn.done.set()
                return
            try:
                await (self._on_vosk if conn.vosk else self._on_native)(conn, msg)
            except ProtocolError as e:
                self._error(conn, e.code, str(e))
            except Exception as e:  # a message we failed to foresee: answer it, keep the server up
                log.exception("message handling failed")
                self._error(conn, "internal", f"internal error on this message: {type(e).__name__}")

    async def _on_native(self, conn: _Conn, msg) -> None:
        if isinstance(msg, str):
            m = parse_json(msg)
            kind = m.get("type")
            if kind == "start":
                if conn.start is not None:
                    raise ProtocolError("bad_state", "the session has already started")
                start = parse_start(m, self.engine.options.nbest)
                if start.hotwords and self.engine.options.beam == 1:
                    raise ProtocolError("bad_field", "hotwords need beam search: this server runs greedy "
                                                     "(start it with --beam 4)")
                await self._open_session(conn, start)
                conn.outbox.put_nowait({"type": "ready", "version": PROTOCOL_VERSION, "session": conn.id,
                                        "sample_rate": start.sample_rate, "encoding": start.encoding})
            elif kind == "end":
                if conn.start is None:
                    raise ProtocolError("bad_state", "end before start")
                self._end(conn)
            else:
                raise ProtocolError("bad_message", f"unknown message type {kind!r} (expected start or end)")
            return
        if conn.start is None:
            raise ProtocolError("bad_state", "audio before the start message")
        self._add_audio(conn, decode_audio(msg, conn.start.encoding), conn.start.sample_rate)

    async def _on_vosk(self, conn: _Conn, msg) -> None:
        if isinstance(msg, str):
            m = parse_json(msg)
            if "eof" in m:
                self._end(conn)
            elif "config" in m:
                if conn.audio_seconds:
                    raise ProtocolError("bad_state", "config after audio")
                conn.vosk_cfg = parse_vosk_config(m)
                await self._open_session(conn, conn.vosk_cfg)
            else:
                raise ProtocolError("bad_message", "expected {\"config\": {...}} or {\"eof\": 1}")
            return
        x = decode_audio(msg, "int16")
        if x.size == 0:
            conn.outbox.put_nowait({"partial": conn.last_partial})
            return
        self._add_audio(conn, x, conn.vosk_cfg.sample_rate, message=True)

    def _add_audio(self, conn: _Conn, x: np.ndarray, rate: int, message: bool = False) -> None:
        """Queue a message's audio; `message`: a Vosk message, answered once its last sample is fed."""
        if x.size == 0:
            return
        conn.audio_seconds += x.size / rate
        if conn.audio_seconds > self.cfg.max_session_seconds:  # (Vosk: the error answers this message)
            self._error(conn, "session_too_long", f"over {self.cfg.max_session_seconds:g} s of audio")
            self._end(conn)
            return
        conn.pending.append((x, message))
        conn.pending_samples += x.size
        if conn.pending_samples > self.cfg.max_backlog_seconds * rate or \
                self._backlog_seconds() > self.cfg.max_total_backlog_seconds:
            conn.readable.clear()
        conn.arrived = time.perf_counter()
        self.metrics.audio_seconds.inc(x.size / rate)
        self._wake.set()

    async def _open_session(self, conn: _Conn, spec: Start | VoskConfig) -> None:
        if isinstance(spec, Start):
            conn.start = spec
            opts = SessionOptions(spec.hotwords, spec.hotword_boost, spec.endpoint, spec.auto_gain, spec.punctuate)
        else:  # Vosk: endpointing always on; a phrase list becomes hotwords under beam search; Vosk's own
            # lower-case words without punctuation, which its clients match words against
            hot = spec.phrase_list if self.engine.options.beam > 1 else ()
            opts = SessionOptions(hot, 1.5, EndpointConfig(), punctuate=False)
        old = conn.session
        loop = asyncio.get_running_loop()
        try:
            # the phrases' graph is built beside the compute thread (1,000 long phrases took 1.1 s, a stall of
            # every session's steps), then the session is made on it
            context = await loop.run_in_executor(None, self.engine.hotword_context, opts)
            conn.session = await loop.run_in_executor(self._pool, self.engine.session, spec.sample_rate, opts,
                                                      context)
        except (AudioError, ValueError) as e:
            raise ProtocolError("bad_field", str(e)) from None
        conn.session.defer_second_pass = self._second is not None
        if old is not None:
            self._close_session(old)

    def _close_session(self, session) -> None:
        if session.gain > 1.0:
            self.metrics.quiet_total.inc()
        self.engine.close(session)

    def _end(self, conn: _Conn) -> None:
        conn.end = True
        if conn.session is None:  # nothing to finish
            conn.done.set()
        self._wake.set()

    def _error(self, conn: _Conn, code: str, message: str) -> None:
        self.metrics.errors_total.inc()
        if conn.vosk:
            conn.outbox.put_nowait({"error": message, "code": code})
        else:
            conn.outbox.put_nowait({"type": "error", "code": code, "message": message})
        log.info(json.dumps({"event": "error", "session": conn.id, "code": code, "message": message}))

    async def _writer(self, conn: _Conn) -> None:
        """Send the connection's messages in order; after the last final, close the socket."""
        while (msg := await conn.outbox.get()) is not None:
            if msg.get("_last"):
                conn.done.set()
                return
            try:
                await conn.ws.send(json.dumps(msg))
            except ConnectionClosed:
                conn.done.set()
                return

    # ---- the compute loop -------------------------------------------------------------------
    def _ready(self) -> int:
        hop = self.engine.hop_samples  # 16 kHz samples per step
        n = 0
        for c in self.conns.values():
            if c.has_work() and (c.end or c.pending_samples * 16000 >= hop * _rate(c)):
                n += 1
        return n

    async def _compute_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            deadline = loop.time() + self.cfg.batch_deadline_ms / 1000
            while self._ready() < self.cfg.batch_size and (left := deadline - loop.time()) > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    break
            self._wake.clear()
            jobs = []
            for c in self.conns.values():
                if c.has_work():
                    audio, owed = self._take(c)
                    end = c.end and not c.fed_end and not c.pending  # the end is fed after the last audio
                    jobs.append((c, audio, end, c.arrived, owed))
                    c.fed_end = c.fed_end or end
            if not jobs:
                continue
            try:
                results = await loop.run_in_executor(self._pool, self._compute, jobs)
            except Exception as e:  # a bug must not take every other session down
                log.exception("compute failed")
                for c, *_ in jobs:
                    self._error(c, "internal", f"internal error: {e}")
                    c.outbox.put_nowait({"_last": True})
                continue
            now = time.perf_counter()
            for (c, _, _, arrived, owed), events in zip(jobs, results):
                if arrived and not c.pending:
                    self.metrics.latency.observe(now - arrived)
                self._deliver_in_order(c, events, owed)
            total = self._backlog_seconds()
            for c in self.conns.values():  # sessions paused by the server-wide bound, too
                if self._drained(c, total):
                    c.readable.set()
            if any(c.has_work() for c in self.conns.values()):
                self._wake.set()  # backlogs left: another pass, in which the others' new audio joins

    def _take(self, c: _Conn) -> tuple[list[np.ndarray], int]:
        """Up to step_audio_seconds of a connection's backlog (whole messages, the last one split if
        need be), and how many messages it completes; reopens the socket once half the bound is left."""
        rate = _rate(c)
        budget = max(1, int(self.cfg.step_audio_seconds * rate))
        audio, owed = [], 0
        while c.pending and budget > 0:
            x, message = c.pending[0]
            if x.size > budget:
                audio.append(x[:budget])
                c.pending[0] = (x[budget:], message)
                c.pending_samples -= budget
                break
            c.pending.popleft()
            audio.append(x)
            owed += message
            budget -= x.size
            c.pending_samples -= x.size
        if self._drained(c, self._backlog_seconds()):
            c.readable.set()
        return audio, owed

    def _backlog_seconds(self) -> float:
        """All open sessions' audio waiting for the compute loop."""
        return sum(c.pending_samples / _rate(c) for c in self.conns.values())

    def _drained(self, c: _Conn, total: float) -> bool:
        """A paused session may be read again: its own backlog and the server's total (`total`)
        are down to half their bounds."""
        return (c.pending_samples <= self.cfg.max_backlog_seconds * _rate(c) / 2
                and total <= self.cfg.max_total_backlog_seconds / 2)

    def _compute(self, jobs: list) -> list[list]:
        """On the compute thread: feed the audio, step every ready session together, collect results."""
        t0 = time.perf_counter()
        # every connection's audio through one front-end call (on a GPU one transfer back, not one each)
        self.engine.accept_audio([(c.session, np.concatenate(audio)) for c, audio, *_ in jobs if audio])
        for c, _, end, _, _ in jobs:
            if end:
                c.session.input_done()
        sessions = [c.session for c, *_ in jobs]
        frames0 = [(s.frames, s.top_frames) for s in sessions]
        sizes = []
        while stepped := self.engine.step(sessions):
            sizes.append(len(stepped))
        out = []
        for c, _, end, _, _ in jobs:
            s = c.session
            events = [("final", r) for r in s.pop_finals()]
            if s.input_finished and not s.ready:
                events.append(("last", s.final()))
            else:
                events.append(("partial", s.result()))
            out.append(events)
        self.metrics.step(time.perf_counter() - t0, sizes, sum(s.frames - f0 for s, (f0, _) in zip(sessions, frames0)),
                          sum(s.top_frames - t0_ for s, (_, t0_) in zip(sessions, frames0)))
        return out

    def _deliver_in_order(self, c: _Conn, events: list, owed: int) -> None:
        """A compute pass's events for one connection, delivered in the order the passes made them: a result
        whose second pass is still to run waits for it on the second-pass thread, and the connection's later
        events wait behind it (other connections' do not)."""
        if not c.held and not any(getattr(r, "second_pass", None) for _, r in events):
            return self._deliver(c, events, owed)
        c.held.append((events, owed))
        if c.second_pass_task is None:
            c.second_pass_task = asyncio.ensure_future(self._second_passes(c))

    async def _second_passes(self, c: _Conn) -> None:
        loop = asyncio.get_running_loop()
        try:
            while c.held:
                events, owed = c.held[0]
                for i, (kind, r) in enumerate(events):
                    run = getattr(r, "second_pass", None)
                    if run is None:
                        continue
                    t0 = time.perf_counter()
                    try:
                        events[i] = (kind, await loop.run_in_executor(self._second, run))
                    except Exception:  # a bug in the second pass must not lose the first pass's result
                        log.exception("second pass failed")
                        r.second_pass = None
                    self.metrics.second_pass.observe(time.perf_counter() - t0)
                c.held.popleft()
                self._deliver(c, events, owed)
        finally:
            c.second_pass_task = None

    def _deliver(self, c: _Conn, events: list, owed: int) -> None:
        if c.vosk:
            return self._deliver_vosk(c, events, owed)
        nbest = c.start.nbest if c.start else 1
        for kind, r in events:
            if kind == "final":
                c.outbox.put_nowait(final_message(r, nbest))
                c.finals_sent += 1
            elif kind == "last":
                if r.text or not c.finals_sent:
                    c.outbox.put_nowait(final_message(r, nbest))
                c.outbox.put_nowait({"_last": True})
            elif c.start.partials and r.text != c.last_partial:
                c.last_partial = r.text
                c.outbox.put_nowait({"type": "partial", "text": r.text, "stable": r.stable})

    def _deliver_vosk(self, c: _Conn, events: list, owed: int) -> None:
        c.vosk_finals += [r for kind, r in events if kind == "final"]
        last = next((r for kind, r in events if kind == "last"), None)
        partial = next((r for kind, r in events if kind == "partial"), None)
        if partial is not None:
            c.last_partial = partial.text
        for _ in range(owed):  # exactly one answer per audio message
            if c.vosk_finals and last is None:
                c.outbox.put_nowait(vosk_result(c.vosk_finals.pop(0), c.vosk_cfg))
            else:
                c.outbox.put_nowait({"partial": c.last_partial})
        if last is not None:  # the answer to eof: everything not yet sent, as one result
            parts = c.vosk_finals + [last]
            c.vosk_finals = []
            merged = Result("", " ".join(p.text for p in parts if p.text), [w for p in parts for w in p.words],
                            nbest=[" ".join(p.text for p in parts if p.text)])
            c.outbox.put_nowait(vosk_result(merged, c.vosk_cfg))
            c.outbox.put_nowait({"_last": True})


@functools.cache
def _libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _release_memory() -> None:
    """Give the freed heap back to the system once the last session is gone: glibc keeps the
    arenas a flood or a long session grew (numpy's and the decoder's buffers) until asked."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _peer(connection: ServerConnection) -> str | None:
    address = connection.remote_address
    return str(address[0]) if address else None


def _rate(c: _Conn) -> int:
    return c.start.sample_rate if c.start else c.vosk_cfg.sample_rate


@functools.cache
def _page() -> str:
    return resources.files("asr_engine.server").joinpath("web/index.html").read_text(encoding="utf-8")


# the page: its own inline script and style, its worklet from a blob, websockets back to this host only
_PAGE_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline' blob:; style-src 'unsafe-inline'; "
             "connect-src 'self' ws: wss:; media-src 'self' blob:; img-src 'self' data:; frame-ancestors 'none'")


def _response(status: HTTPStatus, body: str, content_type: str = "text/plain; charset=utf-8",
              head: bool = False) -> Response:
    """A plain HTTP answer that closes the connection (`serve`'s server_header adds `Server`); `head`:
    its headers alone, as a HEAD request is answered."""
    data = body.encode()
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(data))),
                       ("Connection", "close"), ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY")])
    if content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = _PAGE_CSP
    return Response(status.value, status.phrase, headers, b"" if head else data)


_ALLOWED = (b"GET", b"HEAD")


def _not_allowed(method: str) -> Response:
    response = _response(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not served here: GET pages, metrics and "
                         "websocket handshakes (HEAD for their headers)\n")
    response.headers["Allow"] = "GET, HEAD"
    return response


class _Connection(ServerConnection):
    """A connection that answers a request with a body (a POST, a PUT) with 405 itself: websockets'
    handshake parser takes no request body and would close such a connection without a word. The
    method is read from the first bytes; everything else goes to websockets as it came."""

    _first = b""
    _sniffed = False

    def data_received(self, data: bytes) -> None:
        if self._sniffed:
            return super().data_received(data)
        self._first += data
        method, space, _ = self._first.partition(b" ")
        if not space and len(self._first) < 24:  # no method is that long: past it, websockets' parser decides
            return
        self._sniffed = True
        data, self._first = self._first, b""
        if space and method.isalpha() and method.isupper() and method not in _ALLOWED:
            response = _not_allowed(method.decode("ascii"))
            response.headers["Server"] = "asr-engine"
            self.transport.write(response.serialize())
            self.transport.close()
            return
        super().data_received(data)
