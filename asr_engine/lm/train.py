"""`asr-engine lm train`: fit a GILR language model to text, over the acoustic model's vocabulary.

Text comes from plain files (a sentence per line) or JSONL manifests (their `text`). Sentences
are normalised and tokenized by the acoustic model's tokenizer; a share of them, chosen by a hash
of the sentence, is held out for perplexity. Training batches sentences of similar length up to a
token budget, with AdamW, warmup then cosine decay, and gradient clipping; the model is written
(safetensors + lm.json) at every evaluation and at the end, with the training state beside it
(train_state.pt, as `asr-engine train` writes its own), from which `resume` continues a run that was
stopped exactly as it would have gone on: the same batches, dropout masks and updates.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch

from asr_engine.data.text_sources import is_held_out
from asr_engine.lm.model import GILRLanguageModel, LMConfig, save_lm, vocab_fingerprint
from asr_engine.text import normalize

__all__ = ["STATE_FILE", "perplexity", "read_sentences", "split_heldout", "train_lm"]

MAX_TOKENS = 200  # longer sentences are cut (the recurrence has no limit; batches stay bounded)
STATE_FILE = "train_state.pt"  # beside lm.safetensors: what `resume` continues from


def read_sentences(paths: list[str | Path]) -> list[str]:
    """Lines of text files, or the `text` of JSONL manifests (by the .jsonl suffix)."""
    out = []
    for p in map(Path, paths):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: text file not found")
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
        if p.suffix == ".jsonl":
            out += [json.loads(line).get("text", "") for line in lines if line.strip()]
        else:
            out += lines
    return [s.strip() for s in out if s.strip()]


def split_heldout(sentences: list[str], percent: float) -> tuple[list[str], list[str]]:
    """(train, held out) by the hash `data synth` uses for its held-out sentences, so duplicates stay
    together and the sentences of a synthesized held-out set never train the LM. (The training part
    of a synthesized corpus therefore has none to hold out: give such text its own held-out set.)"""
    train, held = [], []
    for s in sentences:
        (held if is_held_out(normalize(s), percent) else train).append(s)
    return train, held


def _encode(sentences: list[str], tokenizer) -> list[list[int]]:
    ids = [tokenizer.encode(s)[:MAX_TOKENS] for s in sentences]
    return [x for x in ids if x]


def _batches(seqs: list[list[int]], batch_tokens: int, rng: random.Random) -> list[list[list[int]]]:
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i]), rng.random()))
    batches, cur, longest = [], [], 0
    for i in order:
        n = len(seqs[i]) + 1
        if cur and max(longest, n) * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(seqs[i])
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def _tensor(batch: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(s) for s in batch)
    tokens = torch.zeros(len(batch), T, dtype=torch.long)
    for k, s in enumerate(batch):
        tokens[k, : len(s)] = torch.tensor(s)
    return tokens.to(device), torch.tensor([len(s) for s in batch], device=device)


@torch.no_grad()
def perplexity(model: GILRLanguageModel, seqs: list[list[int]], batch_tokens: int = 8192, device="cpu") -> float:
    """exp(mean NLL per predicted token, end of sentence included)."""
    was = model.training
    model.eval()
    nll, n = 0.0, 0
    for batch in _batches(seqs, batch_tokens, random.Random(0)):
        s, k = model.sentence_loss(*_tensor(batch, device))
        nll, n = nll + float(s), n + k
    model.train(was)
    return math.exp(nll / max(1, n))


def _run_key(cfg: LMConfig, steps: int, batch_tokens: int, lr: float, warmup: int, seed: int,
             train_ids: list[list[int]], held_ids: list[list[int]]) -> dict:
    """What a resumed run must share with the run that wrote the state: the model, the schedule and the data
    (a fingerprint of the token ids), so that it goes on as that run would have."""
    import hashlib

    h = hashlib.sha256()
    for part in (train_ids, held_ids):
        h.update(json.dumps(part, separators=(",", ":")).encode())
    return {"model": cfg.to_dict(), "steps": steps, "batch_tokens": batch_tokens, "lr": lr, "warmup": warmup,
            "seed": seed, "data": h.hexdigest()[:16]}


def _save_state(out: Path, state: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(out / STATE_FILE)  # whole or not at all: a run stopped while writing keeps the previous state


def train_lm(sentences: list[str], tokenizer, out_dir: str | Path, cfg: LMConfig | None = None, steps: int = 2000,
             batch_tokens: int = 4096, lr: float = 2e-3, warmup: int = 100, heldout_percent: float = 2.0,
             heldout: list[str] | None = None, eval_every: int = 500, seed: int = 0, device: str = "cpu",
             progress: bool = True, resume: bool = False) -> dict:
    """Train, evaluate held-out perplexity, save; returns the report (also in lm.json's info).
    Held out: `heldout` when given (and then every hash-held-out sentence is dropped from training
    too), else the hash-held-out share of `sentences`. resume: continue from out_dir's train_state.pt
    (written at every evaluation) when it has one, which must come from a run of the same model, schedule
    and text (else a ValueError); a finished run is returned as it is."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    train, held = split_heldout(sentences, heldout_percent)
    if heldout is not None:
        held = heldout
    train_ids, held_ids = _encode(train, tokenizer), _encode(held, tokenizer)
    if not train_ids:
        raise ValueError("no training sentences left (empty text, or everything held out)")
    if not held_ids:
        raise ValueError("no held-out sentences for perplexity: this text has none in the held-out hash bucket "
                         "(a synthesized training corpus never does); give held-out text of its own")
    vocab = len(tokenizer.vocab)
    cfg = LMConfig(vocab_size=vocab, vocab_hash=vocab_fingerprint(tokenizer), **(
        {} if cfg is None else {k: v for k, v in cfg.to_dict().items() if k not in ("vocab_size", "vocab_hash")}))
    model = GILRLanguageModel(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))
    report = {"train_sentences": len(train_ids), "heldout_sentences": len(held_ids),
              "train_tokens": sum(len(s) + 1 for s in train_ids), "params": sum(p.numel() for p in model.parameters()),
              "steps": 0, "history": []}
    out, key = Path(out_dir), _run_key(cfg, steps, batch_tokens, lr, warmup, seed, train_ids, held_ids)
    batches: list = []
    start, loss_avg, prior_seconds, epoch_rng, used = 0, None, 0.0, rng.getstate(), 0
    if resume and (out / STATE_FILE).exists():
        state = torch.load(out / STATE_FILE, weights_only=True, map_location=device)
        if state["run"] != key:
            differs = sorted(k for k in key if state["run"].get(k) != key[k])
            raise ValueError(f"{out / STATE_FILE}: written by a run with another {', '.join(differs)}; resume it "
                             f"with the same options and text, or train into another folder")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.device(device).type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        start, loss_avg, prior_seconds, report = state["step"], state["loss_avg"], state["seconds"], state["report"]
        epoch_rng, used = state["epoch_rng"], state["batches_used"]
        if used:  # the epoch's batches again, as drawn, less those already trained on
            rng.setstate(epoch_rng)
            batches = _batches(train_ids, batch_tokens, rng)[: -used]
    bar = tqdm(range(start, steps), desc="lm train", unit="step", disable=not progress, initial=start, total=steps)
    t0 = time.time()
    for step in bar:
        if not batches:
            epoch_rng, used = rng.getstate(), 0
            batches = _batches(train_ids, batch_tokens, rng)
        tokens, lengths = _tensor(batches.pop(), device)
        used += 1
        nll, n = model.sentence_loss(tokens, lengths)
        loss = nll / n
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        value = loss.item()
        loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
        bar.set_postfix(loss=f"{loss_avg:.3f}", ppl=f"{math.exp(loss_avg):.1f}")
        report["steps"] = step + 1
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            ppl = perplexity(model, held_ids, device=device)
            report["history"].append({"step": step + 1, "train_loss": loss_avg, "heldout_ppl": ppl})
            report["heldout_ppl"], report["train_ppl_smoothed"] = ppl, math.exp(loss_avg)
            report["seconds"] = round(prior_seconds + time.time() - t0, 1)
            _save_state(out, {"run": key, "model": model.state_dict(), "optimizer": opt.state_dict(),
                              "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(), "step": step + 1,
                              "loss_avg": loss_avg, "seconds": report["seconds"], "report": report,
                              "epoch_rng": epoch_rng, "batches_used": used,
                              **({"cuda_rng": torch.cuda.get_rng_state(device)}
                                 if torch.device(device).type == "cuda" else {})})
            save_lm(model, out_dir, report)
    return report
