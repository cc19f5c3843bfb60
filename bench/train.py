"""train: training throughput of the encoder (forward, losses, backward, optimizer step) on random
features, per model size, with and without skip-aware steps, in audio seconds per wall second.

This is `asr-engine train`'s step without the data: the same `Encoder`, `total_loss`, AdamW, bf16
autocast on the device, fixed-size batches (B utterances of S seconds, 10 ms feature frames) and
random token targets. It measures what the device can do for a model size, not what a corpus feeds
it. The skip-aware step runs the top layers on the frames that the gating head keeps (its blank
logit is biased so that about `--keep` of the frames are kept), with the unskipped teacher, as
training does.
"""

from __future__ import annotations

import time

from asr_engine.argtypes import at_least, listed, one_of, within
from bench.common import append_results, table

# model sizes: the bundled Conformer's layout, Whisper-base's encoder layout, and a large Conformer
SIZES = {
    "default": dict(d_model=144, n_heads=4, n_layers=8, subsampling=4, subsampling_norm=True, chunk_size=8,
                    intermediate_layers=(4,), skip_layer=4),
    "whisper-base": dict(d_model=512, n_heads=8, n_layers=6, subsampling=2, stem="whisper", block="whisper",
                         positions="absolute", position_period=1500, chunk_size=16, intermediate_layers=(3,),
                         skip_layer=3),
    "large": dict(d_model=768, n_heads=12, n_layers=12, subsampling=4, chunk_size=8, intermediate_layers=(6,),
                  skip_layer=6),
}


def measure(size: str, device: str, batch: int, seconds: float, steps: int, skip: bool, keep: float) -> dict:
    import torch

    from asr_engine.losses import LossWeights, total_loss
    from asr_engine.model.config import ModelConfig
    from asr_engine.model.encoder import Encoder, HeadOutput, SkipOptions

    class FixedGate(torch.nn.Module):
        """A gating head whose blank logit is a fixed (B, T) pattern; its token logits stay the head's."""

        def __init__(self, head, z):
            super().__init__()
            self.head = head
            self.register_buffer("z", z)

        def forward(self, h):
            raw = self.head(h).raw
            return HeadOutput(torch.cat([self.z[..., None].to(raw.dtype) + 0 * raw[..., :1], raw[..., 1:]], -1))

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=257, dropout=0.1, **SIZES[size])
    model = Encoder(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    frames = int(seconds * 100)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, frames, cfg.feat_dim, generator=g).to(device)
    xl = torch.full((batch,), frames, device=device)
    n_tok = max(1, int(seconds * 4))  # ~4 tokens a second, as BPE-256 on speech
    y = torch.randint(1, cfg.vocab_size, (batch, n_tok), generator=g).to(device)
    yl = torch.full((batch,), n_tok, device=device)
    if skip:  # an untrained gate keeps all frames or none: fix its blank logits so that ~keep are kept
        with torch.no_grad():
            t_enc = int(model(x[:1], xl[:1]).lengths[0])
        kept = torch.rand(batch, t_enc, generator=g) < keep
        z = torch.where(kept, 3.0, -3.0).to(device)  # P(blank) = sigmoid(-z): 0.05 kept, 0.95 skipped
        model.heads[str(cfg.skip_layer)] = FixedGate(model.heads[str(cfg.skip_layer)], z)
    opts = SkipOptions(0.5, 0) if skip else None
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step() -> float:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            out = model(x, xl, opts, teacher=skip)
        loss, _ = total_loss(out, y, yl, LossWeights(skip_distill=1.0 if skip else 0.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(out.top_fraction().mean())

    step()  # warm-up: allocations, autotuning
    sync()
    t0 = time.perf_counter()
    tops = [step() for _ in range(steps)]
    sync()
    elapsed = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    return {"size": size, "params_m": params / 1e6, "skip": "on" if skip else "off", "batch": batch,
            "seconds": seconds, "ms_per_step": elapsed / steps * 1000,
            "x_realtime": batch * seconds * steps / elapsed, "top_fraction": sum(tops) / len(tops)}


def main(args) -> None:
    import torch

    from asr_engine.train import resolve_device

    device = str(resolve_device(args.device))
    cuda = device.startswith("cuda")
    batch = args.batch or (64 if cuda else 2)
    seconds = args.seconds or (15.0 if cuda else 4.0)
    steps = args.steps or (10 if cuda else 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes.split(","):
        if size not in SIZES:
            raise SystemExit(f"train: unknown size {size!r} (one of {', '.join(SIZES)})")
        for skip in [s == "on" for s in args.skip]:
            rows.append(measure(size, device, batch, seconds, steps, skip, args.keep))
            print(f"{size} skip {'on' if skip else 'off'}: {rows[-1]['x_realtime']:.0f}x real time", flush=True)
    print(table(rows, [("size", "size", "s"), ("M params", "params_m", ".1f"), ("skip", "skip", "s"),
                       ("batch", "batch", "d"), ("s/utt", "seconds", ".0f"), ("ms/step", "ms_per_step", ".0f"),
                       ("x real time", "x_realtime", ".0f"), ("top frames", "top_fraction", ".2f")]))
    gpu = torch.cuda.get_device_name(0) if cuda else None
    append_results(args.results, "train", rows, {"device": device, "gpu": gpu, "steps": steps})


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="training throughput per model size, skip-aware steps on/off")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: the GPU when there is one)")
    p.add_argument("--sizes", default=",".join(SIZES), help=f"model sizes (default {','.join(SIZES)})")
    p.add_argument("--skip", type=listed(one_of("off", "on")), default=["off", "on"],
                   help="skip-aware steps: off, on or both (default off,on)")
    p.add_argument("--keep", type=within(0.01, 1.0), default=0.4,
                   help="share of frames the gate keeps in skip steps (0.4)")
    p.add_argument("--batch", type=at_least(0), default=0,
                   help="utterances per batch (default 64 on a GPU, 2 on a CPU)")
    p.add_argument("--seconds", type=within(0, 3600), default=0.0, help="seconds per utterance (default 15 GPU, 4 CPU)")
    p.add_argument("--steps", type=at_least(0), default=0, help="timed steps after one warm-up (default 10 GPU, 2 CPU)")
    p.add_argument("--threads", type=at_least(0), default=0, help="torch threads on the CPU (default: torch's choice)")
    p.add_argument("--results", default="bench/results.jsonl", help="append JSON lines here ('' for none)")
    p.set_defaults(func=main)
