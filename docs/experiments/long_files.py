"""Long files in full context: fixed 10.24 s chunks vs cut at pauses (energy minimum) into <= 10.24 s pieces."""
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

def cut_at_pauses(a, max_s=10.24, search_s=3.0, win=20):
    hop = 160
    n = len(a) // hop
    e = np.log((a[: n * hop].reshape(n, hop) ** 2).mean(1) + 1e-10)
    sm = np.convolve(e, np.ones(win) / win, mode="same")
    cuts, start, L, S = [0], 0, int(max_s * 100), int(search_s * 100)
    while n - start > L:
        lo, hi = start + L - S, start + L - win // 2
        c = lo + int(np.argmin(sm[lo:hi]))
        cuts.append(c); start = c
    cuts.append(n)
    return [a[x * hop: y * hop] for x, y in zip(cuts[:-1], cuts[1:])]

eng = asr_engine.load(for_files=True, threads=2)
def wer(hyps):
    e = n = 0
    for r, h in zip(refs, hyps):
        a, b = word_error_counts(r, h); e += a; n += b
    return e / n
t = time.time(); fixed = [r.text for r in eng.transcribe_arrays(files, [str(i) for i in range(len(files))])]
t1 = time.time() - t
pieces = [cut_at_pauses(a) for a in files]
flat = [p for ps in pieces for p in ps]
t = time.time(); res = eng.transcribe_arrays(flat, [str(i) for i in range(len(flat))]); t2 = time.time() - t
out, i = [], 0
for ps in pieces:
    out.append(" ".join(r.text for r in res[i:i + len(ps)] if r.text)); i += len(ps)
print(f"fixed chunks {wer(fixed):.2%} ({t1:.0f} s); cut at pauses {wer(out):.2%} ({t2:.0f} s), {len(flat)} pieces")
s_eng = asr_engine.load(threads=2, context="streaming", for_files=True)
t = time.time(); st = [r.text for r in s_eng.transcribe_arrays(files, [str(i) for i in range(len(files))])]
print(f"streaming {wer(st):.2%} ({time.time() - t:.0f} s)")
