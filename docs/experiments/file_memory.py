"""Peak memory and RTF of transcribing one long recording, per pieces a step (docs/onnx.md "Whole files in batches").

    python docs/experiments/file_memory.py make /tmp/long11.wav 660    # the samples looped: 660 s, 44.1 kHz stereo
    python docs/experiments/file_memory.py run /tmp/long11.wav 4 1 onnx  # pieces a step, beam (or 'default'), backend

Each `run` is its own process (ONNX Runtime's arena keeps a process's largest step). The batch is forced by
patching `files_batch`, so the numbers before the cap can be taken again.
"""

import sys
import threading
import time


def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20


def make(path: str, seconds: float) -> None:
    import numpy as np
    import soundfile as sf

    from asr_engine.audio import load_audio, resample

    x = np.concatenate([load_audio(f"asr_engine/samples/sample{i}.wav") for i in (1, 2, 3)] + [np.zeros(8000)])
    y = resample(x.astype(np.float32), 16000, 44100)
    n = int(seconds * 44100)
    with sf.SoundFile(path, "w", 44100, 2, subtype="PCM_16") as f:
        while n > 0:
            f.write(np.stack([y[:n], y[:n]], 1))
            n -= len(y)


def run(path: str, batch: int, beam: str, backend: str) -> None:
    import asr_engine
    import asr_engine.engine
    from asr_engine.audio import load_audio
    from asr_engine.backend import bundled_model_dir

    asr_engine.engine.files_batch = lambda cfg, chunk, max_batch, device: max_batch
    kw = {} if beam == "default" else {"beam": int(beam)}
    engine = asr_engine.load(bundled_model_dir(), for_files=True, max_batch=batch, threads=2, backend=backend, **kw)
    audio = load_audio(path)
    peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    base, t0 = rss_mb(), time.perf_counter()
    text = engine.transcribe(audio).text
    wall = time.perf_counter() - t0
    done.set()
    print(f"{batch} a step, beam {beam}, {backend}: {len(audio) / 16000:.0f} s, RTF {wall / (len(audio) / 16000):.4f}, "
          f"model {base:.0f} MB, peak {peak[0]:.0f} MB, after {rss_mb():.0f} MB, {len(text.split())} words")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], float(sys.argv[3]))
    else:
        run(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else "onnx")
