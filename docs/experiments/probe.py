"""Scratch: train a CTC output layer on frozen teacher hidden states; greedy WER on dev_real/heldout."""
import sys, time, random, torch
from torch import nn
from asr_engine.checkpoint import load_checkpoint
from asr_engine.model.encoder import HeadOutput
from asr_engine.losses import ctc_loss
from asr_engine.decoding import greedy_search
from asr_engine.text import word_error_counts

torch.set_num_threads(2)
torch.manual_seed(0)
random.seed(0)
ck = load_checkpoint("runs/whisper-import")
tok = ck.tokenizer
PFX = sys.argv[3] if len(sys.argv) > 3 else ""
LAYER = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else None
KIND = sys.argv[5] if len(sys.argv) > 5 else "linear"
POOL = int(__import__("os").environ.get("POOL", "1"))  # POOL=2: average frame pairs (40 ms frames)
def sel(d):
    if LAYER is not None:
        d["hidden"] = [h[LAYER] for h in d["hidden"]]
    if POOL > 1:
        d["hidden"] = [torch.nn.functional.avg_pool1d(h.float().T[None], POOL, POOL, ceil_mode=True)[0].T
                       for h in d["hidden"]]
    return d
TRAIN = __import__("os").environ.get("TRAIN", "mixed")  # the training dump: {PFX}{TRAIN}.pt
train = sel(torch.load(f"/work/data/exp/{PFX}{TRAIN}.pt"))
evals = {k: sel(torch.load(f"/work/data/exp/{PFX}{k}.pt")) for k in ["dev_real", "heldout"]}
V = len(tok.vocab)
class Tr(nn.Module):
    def forward(self, x): return x.transpose(1, 2)
head = {"linear": nn.Sequential(nn.LayerNorm(512), nn.Linear(512, V)),
        "mlp": nn.Sequential(nn.LayerNorm(512), nn.Linear(512, 1024), nn.GELU(), nn.Linear(1024, V)),
        "conv": nn.Sequential(nn.LayerNorm(512), Tr(), nn.Conv1d(512, 512, 5, padding=2), nn.GELU(), Tr(),
                              nn.LayerNorm(512), nn.Linear(512, V))}[KIND]
opt = torch.optim.AdamW(head.parameters(), lr=float(sys.argv[1]) if len(sys.argv) > 1 else 2e-3, weight_decay=0.01)
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 5

def batches(d, maxf, shuffle):
    order = sorted(range(len(d["hidden"])), key=lambda i: d["hidden"][i].shape[0])
    bs, cur = [], []
    for i in order:
        if cur and d["hidden"][i].shape[0] * (len(cur) + 1) > maxf:
            bs.append(cur); cur = []
        cur.append(i)
    bs.append(cur)
    if shuffle: random.shuffle(bs)
    return bs

def pad(d, idx):
    h = nn.utils.rnn.pad_sequence([d["hidden"][i].float() for i in idx], batch_first=True)
    hl = torch.tensor([d["hidden"][i].shape[0] for i in idx])
    y = nn.utils.rnn.pad_sequence([torch.tensor(d["tokens"][i]) for i in idx], batch_first=True)
    yl = torch.tensor([len(d["tokens"][i]) for i in idx])
    return h, hl, y, yl

def wer(d):
    e = n = 0
    with torch.no_grad():
        for idx in batches(d, 20000, False):
            h, hl, _, _ = pad(d, idx)
            lp = HeadOutput(head(h)).log_probs()
            for j, i in enumerate(idx):
                hyp = tok.decode(list(greedy_search(lp[j, : hl[j]]).tokens))
                a, b = word_error_counts(d["texts"][i], hyp); e += a; n += b
    return e / n

t0 = time.time()
total = epochs * len(batches(train, 8000, False))
step = 0
for ep in range(epochs):
    for idx in batches(train, 8000, True):
        for g in opt.param_groups:
            g["lr"] = opt.defaults["lr"] * min(1.0, (step + 1) / 100) * (1 - step / total)
        h, hl, y, yl = pad(train, idx)
        loss = ctc_loss(HeadOutput(head(h)), hl, y, yl)
        opt.zero_grad(); loss.backward(); opt.step(); step += 1
    print(ep, f"loss {loss.item():.1f}", {k: round(wer(v), 4) for k, v in evals.items()},
          f"{time.time()-t0:.0f}s", flush=True)
torch.save(head.state_dict(), "/work/data/exp/head.pt")
