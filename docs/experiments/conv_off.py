"""Do the conv modules of blocks 5 and 6 cause skipping's lost context?

On a compacted sequence a conv kernel (15 frames) spans frames that lie far apart in time. Here the compacted pass
runs with those conv modules left out (their residual branch is zero); the whole pass keeps them. Nothing is trained.

    python docs/experiments/conv_off.py MODEL MANIFEST[+MANIFEST...] 0.99,0.95,0.9 [EVERY]
"""

from __future__ import annotations

import sys

import asr_engine.model.layers as layers
from skip_probe import plain_args, probe

_plain_conv = layers._conv
STATE = {"off": False}


def _conv(conv, x, plan):
    return x if STATE["off"] else _plain_conv(conv, x, plan)


def main() -> None:
    layers._conv = _conv
    model, utts, thresholds = plain_args(sys.argv)
    probe(model, utts, thresholds, [False, True], lambda off: STATE.update(off=off), "conv modules left out")


if __name__ == "__main__":
    main()
