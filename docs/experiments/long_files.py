"""Long files: utterances of a manifest joined with 0.2-0.8 s of silence into N files of K utterances, decoded
with the default decoding in full context cut at pauses (the engine's file mode), in full context with fixed
10.24 s chunks, and in the streaming layout.

    python docs/experiments/long_files.py MANIFEST K N
"""
import json, sys, numpy as np, time
import asr_engine
from asr_engine.audio import load_audio
from asr_engine.text import word_error_counts
man, n_utts, n_files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
root = man.rsplit("/", 1)[0]
rows = [json.loads(l) for l in open(man)]
rng = np.random.default_rng(0)
files, refs = [], []
for f in range(n_files):
    pick = rows[f * n_utts:(f + 1) * n_utts]
    parts = []
    for r in pick:
        p = r["audio"] if r["audio"].startswith("/") else root + "/" + r["audio"]
        parts += [load_audio(p), np.zeros(int(rng.uniform(0.2, 0.8) * 16000), np.float32)]
    files.append(np.concatenate(parts)); refs.append(" ".join(r["text"] for r in pick))
print(f"{n_files} files, {sum(len(a) for a in files) / 16000 / n_files:.0f} s each")

eng = asr_engine.load(for_files=True, threads=2)
def wer(hyps):
    e = n = 0
    for r, h in zip(refs, hyps):
        a, b = word_error_counts(r, h); e += a; n += b
    return e / n
def run(engine):
    t = time.time()
    hyps = [r.text for r in engine.transcribe_arrays(files, [str(i) for i in range(len(files))])]
    return wer(hyps), time.time() - t


pauses = run(eng)  # the engine's file mode in full context: cut at pauses
eng.full_context = False  # the same layout in fixed 10.24 s chunks
fixed = run(eng)
streaming = run(asr_engine.load(threads=2, context="streaming", for_files=True))
for name, (w, s) in (("cut at pauses", pauses), ("fixed chunks", fixed), ("streaming", streaming)):
    print(f"{name}: {w:.2%} ({s:.0f} s)")
