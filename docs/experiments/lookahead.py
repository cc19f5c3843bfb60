"""Lab: what right context (lookahead) would buy. Frozen imported Whisper encoder; each 640 ms chunk is
computed over a window of 4 left chunks + the chunk + R lookahead frames (all recomputed, full attention
inside the window); the head trained on cached-chunk features (head.pt) reads the result."""
import sys, torch
from torch import nn
from asr_engine.checkpoint import load_checkpoint
from asr_engine.data.loader import load_features
from asr_engine.model.fbank import Fbank
from asr_engine.manifest import read_corpus
from asr_engine.model.encoder import HeadOutput
from asr_engine.train import _teacher
from asr_engine.decoding import greedy_search
from asr_engine.text import word_error_counts
torch.set_num_threads(2)
ck = load_checkpoint("runs/whisper-import"); tok = ck.tokenizer
m = _teacher(ck.model).eval()
V = len(tok.vocab)
head = nn.Sequential(nn.LayerNorm(512), nn.Linear(512, 1024), nn.GELU(), nn.Linear(1024, V))
head.load_state_dict(torch.load("/work/data/exp/head.pt"))
C, LEFT = 32, 4
Rs = [int(r) for r in sys.argv[2].split(",")]
utts = read_corpus(sys.argv[1])
fs = load_features(utts, tok, Fbank(ck.features), 30.0)
err = {r: [0, 0] for r in Rs}
with torch.no_grad():
    for i in range(len(fs)):
        x = fs.feats[i][None].float()
        h0, l = m.subsampling(m.normalize(x), torch.tensor([x.shape[1]]))
        T = h0.shape[1]
        pos0 = torch.arange(T)[None]
        h0 = m.embed_positions(h0, pos0)
        for R in Rs:
            out = torch.zeros(1, T, 512)
            for c in range(0, T, C):
                a, b = max(0, c - LEFT * C), min(T, c + C + R)
                y = h0[:, a:b]; pos = pos0[:, a:b]; valid = torch.ones_like(pos, dtype=torch.bool)
                for layer in m.layers:
                    y = layer(y, pos, valid)
                out[:, c:min(T, c + C)] = m.final_head.norm(y[:, c - a: c - a + C])
            lp = HeadOutput(head(out)).log_probs()[0]
            hyp = tok.decode(list(greedy_search(lp).tokens))
            e, n = word_error_counts(fs.texts[i], hyp); err[R][0] += e; err[R][1] += n
print(sys.argv[1].split("/")[-2], {R: round(e / n, 4) for R, (e, n) in err.items()}, flush=True)
