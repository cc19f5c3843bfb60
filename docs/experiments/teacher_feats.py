"""Scratch: the frozen full-context Whisper encoder's hidden states (final LN output, and layer-3
output) for a corpus, fp16, saved for head probing. Usage: teacher_feats.py CORPUS OUT [N]"""
import sys, time, torch
from asr_engine.checkpoint import load_checkpoint
from asr_engine.features import Fbank
from asr_engine.data.loader import load_features, bucket_batches, collate
from asr_engine.manifest import read_corpus
from asr_engine.train import _teacher

torch.set_num_threads(2)
corpus, out = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else None
ck = load_checkpoint("runs/whisper-import")
teacher = _teacher(ck.model)
utts = read_corpus(corpus)[:n]
t0 = time.time()
fs = load_features(utts, ck.tokenizer, Fbank(ck.features), 30.0)
print("features", len(fs), f"{time.time()-t0:.0f}s", flush=True)
hid = [None] * len(fs)
t0 = time.time()
lengths = [f.shape[0] for f in fs.feats]
done = 0
with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
    for idx in bucket_batches(lengths, 12000, 0, shuffle=False):
        x, xl, _, _ = collate(fs, idx)
        o = teacher(x, xl, hidden=True)
        for j, i in enumerate(idx):
            hid[i] = o.hidden[j, : o.lengths[j]].half().clone()
        done += len(idx)
        if done % 500 < len(idx):
            print(done, f"{time.time()-t0:.0f}s", flush=True)
print("teacher", f"{time.time()-t0:.0f}s", "audio h", sum(lengths) / 360000, flush=True)
torch.save({"hidden": hid, "tokens": fs.tokens, "texts": fs.texts}, out)
