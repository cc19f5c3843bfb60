"""argparse types that refuse impossible values when the options are read: the CLI's and the benchmarks'."""

from __future__ import annotations

import argparse
import math

__all__ = ["FINITE", "PROBABILITY", "at_least", "dims", "listed", "one_of", "within"]


def at_least(least: int):
    """argparse type: a whole number >= least (a negative thread count, a batch of 0, ... is refused when
    the options are read, not met later as a traceback or a server that never steps)."""
    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value}: must be at least {least}")
        return value

    return whole


def within(low: float, high: float):
    """argparse type: a finite number in [low, high]; NaN and inf are refused
    (a NaN weight or threshold compares false with everything and silently changes what decoding does)."""
    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):
            span = (f" within [{low:g}, {high:g}]" if math.isfinite(high) else
                    f" of at least {low:g}" if math.isfinite(low) else "")
            raise argparse.ArgumentTypeError(f"{text}: must be a finite number{span}")
        return value

    return number


FINITE = within(-math.inf, math.inf)
PROBABILITY = within(0.0, 1.0)  # a skip threshold: 1 skips nothing, 0 every frame


def listed(one):
    """argparse type: comma-separated values, each read by the type `one` ("1,16,64": batch sizes to measure)."""
    def values(text: str) -> list:
        out = [one(part.strip()) for part in text.split(",") if part.strip()]
        if not out:
            raise argparse.ArgumentTypeError(f"{text!r}: give at least one value")
        return out

    return values


def one_of(*names: str):
    """argparse type for a part of a `listed` option: one of these names."""
    def name(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(f"{text!r}: one of {', '.join(names)}")
        return text

    return name


def dims(n: int):
    """argparse type: n positive whole numbers joined by x ("16x1500x256x512": a shape)."""
    def shape(text: str) -> list[int]:
        parts = text.lower().split("x")
        try:
            values = [int(v) for v in parts]
        except ValueError:
            values = []
        if len(values) != n or min(values) < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: {n} positive whole numbers joined by x")
        return values

    return shape
