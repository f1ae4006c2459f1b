"""Argument types shared by the benchmark scripts: a bad count stops argparse with a message
that names the option and the value (exit status 2), before anything is compiled."""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    """An int >= 1: counts of rounds, repeats, examples, epochs, devices; batch sizes."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def non_negative(text: str) -> int:
    """An int >= 0: seeds (keys), shifts in pixels."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {value}")
    return value
