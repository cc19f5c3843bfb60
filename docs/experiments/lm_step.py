"""One LM training step on the CPU with the blocked scan and with the loop that has its own backward
(bench/README.md, "lm"): the shipped LM's shape (width 512, 2 layers), 4,096-token batches of TEXT's
sentences, AdamW; the median of 12 steps, twice each, alternated. Both scans give the same values
(tests/test_scan.py); only the time differs.

python docs/experiments/lm_step.py TEXT   (TEXT: one sentence per line, e.g. from `asr-engine data text`)
"""

import random
import sys
import time

import torch

import asr_engine.lm.scan as scan
from asr_engine.checkpoint import load_checkpoint
from asr_engine.lm.model import GILRLanguageModel, LMConfig
from asr_engine.lm.train import _batches, _encode, _tensor


def main(text: str) -> None:
    torch.set_num_threads(2)
    tok = load_checkpoint("asr_engine/models/default").tokenizer
    sentences = open(text).read().splitlines()
    random.Random(0).shuffle(sentences)
    batches = _batches(_encode(sentences[:20000], tok), 4096, random.Random(0))[:12]
    loop = scan.scan_loop
    for name, fn in (("blocked", scan.scan_blocked), ("loop", loop)) * 2:
        torch.manual_seed(0)
        model = GILRLanguageModel(LMConfig(vocab_size=len(tok.vocab), d_model=512, n_layers=2)).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scan.scan_loop = fn  # linear_scan trains with whatever scan_loop is
        times = []
        for batch in batches:
            t0 = time.perf_counter()
            nll, n = model.sentence_loss(*_tensor(batch, "cpu"))
            opt.zero_grad()
            (nll / n).backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        scan.scan_loop = loop
        print(f"{name}: median step {sorted(times)[len(times) // 2]:.3f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
