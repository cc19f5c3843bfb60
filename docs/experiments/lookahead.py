"""Lab: what right context (lookahead) would buy. Frozen imported Whisper encoder, 640 ms chunks with 4
left chunks; the head trained on cached-chunk features (head.pt) reads the final LayerNorm's output.

MODE=window (default): each chunk is computed over a window of 4 left chunks + the chunk + R lookahead
frames, all recomputed, full attention inside the window (an upper bound).
MODE=model: the model's own right context (ModelConfig.right_context = R: lookahead copies computed
with each chunk, left context cached), i.e. what streaming computes.

    python docs/experiments/lookahead.py MANIFEST 0,16,32"""
import os, sys, torch
from dataclasses import replace
from torch import nn
from asr_engine.checkpoint import load_checkpoint
from asr_engine.data.loader import load_features
from asr_engine.model.fbank import Fbank
from asr_engine.manifest import read_corpus
from asr_engine.model.encoder import Encoder, HeadOutput
from asr_engine.model.layers import Frames, make_plan
from asr_engine.train import _teacher
from asr_engine.decoding import greedy_search
from asr_engine.text import word_error_counts
torch.set_num_threads(int(os.environ.get("THREADS", 2)))
ck = load_checkpoint("runs/whisper-import"); tok = ck.tokenizer
m = _teacher(ck.model).eval()
V = len(tok.vocab)
head = nn.Sequential(nn.LayerNorm(512), nn.Linear(512, 1024), nn.GELU(), nn.Linear(1024, V))
head.load_state_dict(torch.load("/work/data/exp/head.pt"))
C, LEFT = 32, 4
MODE = os.environ.get("MODE", "window")
Rs = [int(r) for r in sys.argv[2].split(",")]
models = {}
for R in Rs:
    models[R] = Encoder(replace(ck.model.cfg, chunk_size=C, left_chunks=LEFT, right_context=R, dropout=0.0))
    models[R].load_state_dict(ck.model.state_dict())
    models[R].eval()
utts = read_corpus(sys.argv[1])
fs = load_features(utts, tok, Fbank(ck.features), 30.0)
err = {r: [0, 0] for r in Rs}
with torch.no_grad():
    for i in range(len(fs)):
        x = fs.feats[i][None].float()
        xl = torch.tensor([x.shape[1]])
        h0, l = m.subsampling(m.normalize(x), xl)
        T = h0.shape[1]
        pos0 = torch.arange(T)[None]
        h0 = m.embed_positions(h0, pos0)
        for R in Rs:
            if MODE == "model":
                out = models[R](x, xl, hidden=True).hidden
            else:
                out = torch.zeros(1, T, 512)
                for c in range(0, T, C):
                    a, b = max(0, c - LEFT * C), min(T, c + C + R)
                    y = h0[:, a:b]; pos = pos0[:, a:b]; valid = torch.ones_like(pos, dtype=torch.bool)
                    plan = make_plan(m.cfg, Frames(pos, valid, y.shape[1]))
                    for layer in m.layers:
                        y = layer(y, plan)
                    out[:, c:min(T, c + C)] = m.final_head.norm(y[:, c - a: c - a + C])
            lp = HeadOutput(head(out)).log_probs()[0]
            hyp = tok.decode(list(greedy_search(lp).tokens))
            e, n = word_error_counts(fs.texts[i], hyp); err[R][0] += e; err[R][1] += n
print(sys.argv[1].split("/")[-2], MODE, {R: round(e / n, 4) for R, (e, n) in err.items()}, flush=True)
