"""Batch transcription on Ray Data: the same results as the local CLI, from a pool of actors.

    results = transcribe_ray(paths, address=None, workers=2)   # local Ray (one machine), or a cluster

Ray Data reads the list of paths as a dataset and maps it over `workers` actors; each actor
loads the model once (an Engine on ONNX Runtime, `threads` threads) and decodes batches of
`batch_size` files with the engine's file mode, exactly as `asr-engine transcribe` does in one
process. An unreadable file comes back as a result with its error; the others go on. The
results come back in the order of `paths`. Against a cluster (`address`, e.g. "ray://head:10001"
or "auto"), every node needs asr-engine installed, as the workers import it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from asr_engine.decoding import Word
from asr_engine.results import Result

__all__ = ["transcribe_ray"]


def _to_json(r: Result) -> str:
    return json.dumps(dataclasses.asdict(r))


def _from_json(s: str) -> Result:
    d = json.loads(s)
    d["words"] = [Word(**w) for w in d["words"]]
    return Result(**d)


class _Transcriber:
    """A Ray actor: one engine, loaded once, decoding batches of paths."""

    def __init__(self, model: str | None, backend: str, threads: int, decode: dict, session: dict):
        import asr_engine
        from asr_engine.engine import EndpointConfig, SessionOptions

        self.engine = asr_engine.load(model, backend=backend, threads=threads, for_files=True, **decode)
        endpoint = session.get("endpoint")
        self.options = SessionOptions(endpoint=EndpointConfig(**endpoint) if endpoint is not None else None)
        self.streaming = session.get("streaming")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.engine.transcribe_files([str(p) for p in batch["path"]], self.options, None, self.streaming)
        return {"index": batch["index"], "result": np.array([_to_json(r) for r in results], dtype=object)}


def transcribe_ray(paths: list[str | Path], address: str | None = None, workers: int = 2, model: str | None = None,
                   backend: str = "auto", threads: int = 1, batch_size: int = 8, decode: dict | None = None,
                   endpoint: dict | None = None, streaming: bool | None = None) -> list[Result]:
    """Transcribe files on Ray: `workers` actors of `threads` CPUs each, `batch_size` files per call.
    decode: asr_engine.load's decoding options (beam, nbest, skip_threshold, hotwords, lm, ...);
    endpoint: EndpointConfig fields for continuous mode (None: off)."""
    import logging

    import ray

    if not paths:
        return []
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ds = ray.data.from_items([{"index": i, "path": str(p)} for i, p in enumerate(paths)],
                             override_num_blocks=max(1, min(len(paths), workers * 4)))
    out = ds.map_batches(_Transcriber, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
                         num_cpus=threads,
                         fn_constructor_args=(model, backend, threads, decode or {},
                                              {"endpoint": endpoint, "streaming": streaming}))
    rows = sorted(out.take_all(), key=lambda r: int(r["index"]))
    if len(rows) != len(paths):
        raise RuntimeError(f"Ray returned {len(rows)} results for {len(paths)} files")
    return [_from_json(r["result"]) for r in rows]
