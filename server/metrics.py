"""Prometheus metrics of the server, in the text exposition format (no client library)."""

from __future__ import annotations

import bisect
import threading

__all__ = ["Histogram", "Metrics"]


class Histogram:
    def __init__(self, name: str, help_: str, buckets: tuple[float, ...]):
        self.name, self.help, self.buckets = name, help_, buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        acc = 0
        for b, c in zip(self.buckets, self.counts):
            acc += c
            out.append(f'{self.name}_bucket{{le="{b:g}"}} {acc}')
        out += [f'{self.name}_bucket{{le="+Inf"}} {self.n}', f"{self.name}_sum {self.total:.6f}",
                f"{self.name}_count {self.n}"]
        return out


class Metrics:
    """Counters and histograms updated by the compute thread and the event loop (under a lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sessions_total = 0
        self.rejected_total = 0
        self.errors_total = 0
        self.audio_seconds = 0.0
        self.compute_seconds = 0.0
        self.frames = 0
        self.top_frames = 0
        self.batch = Histogram("asr_batch_size", "Sessions per encoder step", (1, 2, 4, 8, 16, 32, 64, 128))
        self.latency = Histogram("asr_partial_latency_seconds", "From an audio message's arrival to the result "
                                 "that covers it", (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))

    def render(self, sessions: int, queue: int) -> str:
        with self.lock:
            rtf = self.compute_seconds / self.audio_seconds if self.audio_seconds else 0.0
            skipped = 1.0 - self.top_frames / self.frames if self.frames else 0.0
            lines = [
                "# HELP asr_sessions Open websocket sessions", "# TYPE asr_sessions gauge", f"asr_sessions {sessions}",
                "# HELP asr_queue_depth Sessions with audio waiting for the compute loop",
                "# TYPE asr_queue_depth gauge", f"asr_queue_depth {queue}",
                "# HELP asr_sessions_total Sessions accepted", "# TYPE asr_sessions_total counter",
                f"asr_sessions_total {self.sessions_total}",
                "# HELP asr_rejected_total Connections refused (busy, auth)", "# TYPE asr_rejected_total counter",
                f"asr_rejected_total {self.rejected_total}",
                "# HELP asr_errors_total Error messages sent", "# TYPE asr_errors_total counter",
                f"asr_errors_total {self.errors_total}",
                "# HELP asr_audio_seconds_total Audio received", "# TYPE asr_audio_seconds_total counter",
                f"asr_audio_seconds_total {self.audio_seconds:.3f}",
                "# HELP asr_compute_seconds_total Compute time of the engine",
                "# TYPE asr_compute_seconds_total counter", f"asr_compute_seconds_total {self.compute_seconds:.3f}",
                "# HELP asr_rtf Compute time over audio time since start", "# TYPE asr_rtf gauge", f"asr_rtf {rtf:.5f}",
                "# HELP asr_skipped_fraction Encoder frames that skipped the top layers",
                "# TYPE asr_skipped_fraction gauge", f"asr_skipped_fraction {skipped:.4f}",
                *self.batch.render(), *self.latency.render()]
        return "\n".join(lines) + "\n"
