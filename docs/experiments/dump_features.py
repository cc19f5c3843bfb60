"""Lab script (not part of the package): the imported Whisper encoder's hidden states for a corpus,
fp16, saved for head probing with probe.py.

    python docs/experiments/dump_features.py CORPUS OUT.pt [N]

Full context (Whisper's own attention over the whole utterance) by default; CHUNK=32 LEFT=4 in the
environment gives the streaming layout with those chunks instead. The saved "hidden" is the final
LayerNorm's output, or with LAYERS=3,4,5 a {layer: output} dict of those blocks' outputs. CKPT=DIR reads
another checkpoint than the imported Whisper encoder, ASIS=1 runs it in its own layout (e.g. a
fine-tuned student's chunks)."""
import os
import sys
import time
from dataclasses import replace

import torch

from asr_engine.checkpoint import load_checkpoint
from asr_engine.data.loader import bucket_batches, collate, load_features
from asr_engine.model.fbank import Fbank
from asr_engine.manifest import read_corpus
from asr_engine.model.encoder import Encoder
from asr_engine.model.layers import Frames, make_plan
from asr_engine.train import _teacher

torch.set_num_threads(2)
corpus, out = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else None
layers = tuple(int(v) for v in os.environ["LAYERS"].split(",")) if os.environ.get("LAYERS") else ()
ck = load_checkpoint(os.environ.get("CKPT", "runs/whisper-import"))
if "CHUNK" in os.environ:
    model = Encoder(replace(ck.model.cfg, chunk_size=int(os.environ["CHUNK"]), left_chunks=int(os.environ["LEFT"])))
    model.load_state_dict(ck.model.state_dict())
    model.eval()
else:
    model = ck.model.eval() if os.environ.get("ASIS") else _teacher(ck.model)
t0 = time.time()
fs = load_features(read_corpus(corpus)[:n], ck.tokenizer, Fbank(ck.features), 30.0)
print("features", len(fs), f"{time.time() - t0:.0f}s", flush=True)


def block_outputs(x, xl):
    """{layer: (B, T, D)} after the given blocks, and the lengths."""
    h, lengths = model.subsampling(model.normalize(x), xl)
    pos = torch.arange(h.shape[1]).expand(h.shape[0], -1)
    valid = pos < lengths[:, None]
    h = model.embed_positions(h, pos).masked_fill(~valid[:, :, None], 0.0)
    outs = {}
    plan = make_plan(model.cfg, Frames(pos, valid, h.shape[1]))
    for i, layer in enumerate(model.layers, start=1):
        h = layer(h, plan)
        if i in layers:
            outs[i] = h
    return outs, lengths


hid = [None] * len(fs)
t0 = time.time()
lengths = [f.shape[0] for f in fs.feats]
with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
    for idx in bucket_batches(lengths, 12000, 0, shuffle=False):
        x, xl, _, _ = collate(fs, idx)
        if layers:
            outs, ol = block_outputs(x, xl)
            for j, i in enumerate(idx):
                hid[i] = {k: o[j, : ol[j]].half().clone() for k, o in outs.items()}
        else:
            o = model(x, xl, hidden=True)
            for j, i in enumerate(idx):
                hid[i] = o.hidden[j, : o.lengths[j]].half().clone()
print("encoder", f"{time.time() - t0:.0f}s", "audio h", sum(lengths) / 360000, flush=True)
torch.save({"hidden": hid, "tokens": fs.tokens, "texts": fs.texts}, out)
