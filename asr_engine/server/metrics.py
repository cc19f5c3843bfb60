"""Prometheus metrics of the server, through prometheus-client (one registry per server, so that
several servers in one process, as in the tests, keep their own counts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]


class Metrics:
    """Updated from the event loop and the compute thread (prometheus-client's metrics are thread-safe)."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.sessions = Gauge("asr_sessions", "Open websocket sessions", registry=r)
        self.queue_depth = Gauge("asr_queue_depth", "Sessions with audio waiting for the compute loop", registry=r)
        self.backlog = Gauge("asr_backlog_seconds", "Audio received and not yet decoded, all sessions", registry=r)
        self.sessions_total = Counter("asr_sessions_accepted", "Sessions accepted", registry=r)
        self.rejected_total = Counter("asr_rejected", "Connections refused (busy, auth)", registry=r)
        self.errors_total = Counter("asr_errors", "Error messages sent", registry=r)
        self.quiet_total = Counter("asr_quiet_sessions", "Sessions that ended brought up: their audio peaked under "
                                   "-20 dBFS (a microphone's gain set low)", registry=r)
        self.audio_seconds = Counter("asr_audio_seconds", "Audio received", registry=r)
        self.compute_seconds = Counter("asr_compute_seconds", "Compute time of the engine", registry=r)
        self.frames = Counter("asr_encoder_frames", "Encoder frames computed", registry=r)
        self.top_frames = Counter("asr_top_frames", "Encoder frames that ran the top layers", registry=r)
        Gauge("asr_rtf", "Compute time over audio time since start", registry=r).set_function(
            lambda: _ratio(self.compute_seconds, self.audio_seconds))
        Gauge("asr_skipped_fraction", "Encoder frames that skipped the top layers", registry=r).set_function(
            lambda: 1.0 - _ratio(self.top_frames, self.frames, empty=1.0))
        self.batch = Histogram("asr_batch_size", "Sessions per encoder step", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.latency = Histogram("asr_partial_latency_seconds",
                                 "From an audio message's arrival to the result that covers it", registry=r,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
        self.second_pass = Histogram("asr_second_pass_seconds",
                                     "Time of each utterance's second pass (--two-pass, --rescore) and "
                                     "punctuation (--punctuate)",
                                     registry=r, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))

    def step(self, seconds: float, batch_sizes: list[int], frames: int, top_frames: int) -> None:
        """One pass of the compute loop: its time, its encoder batches, the frames it computed."""
        self.compute_seconds.inc(seconds)
        for n in batch_sizes:
            self.batch.observe(n)
        self.frames.inc(frames)
        self.top_frames.inc(top_frames)

    def render(self, sessions: int, queue: int, backlog_seconds: float = 0.0) -> str:
        self.sessions.set(sessions)
        self.queue_depth.set(queue)
        self.backlog.set(backlog_seconds)
        return generate_latest(self.registry).decode()


def _ratio(num: Counter, den: Counter, empty: float = 0.0) -> float:
    d = den._value.get()  # prometheus-client has no public read of a counter's value
    return num._value.get() / d if d else empty
