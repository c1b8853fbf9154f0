"""Deterministic pseudo-random data, identical on the host side and in the jail.

The stream for (size, seed) is random.Random(seed).randbytes() in 1 MiB pieces,
so any process can regenerate it (or its sha256) without storing it.
"""
import hashlib
import random

CHUNK = 1 << 20


def chunks(size, seed, chunk=CHUNK):
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


def sha256_of(size, seed):
    h = hashlib.sha256()
    for c in chunks(size, seed):
        h.update(c)
    return h.hexdigest()
