"""detweights.py - deterministic "random" weights that C tests can rebuild
bit-for-bit without committing them (tests/detweights.h is the C twin).

value(name, i) = u * scale (+ 1 for norm weights), with
u = (top 24 bits of splitmix64(fnv1a64(name) + i) - 2^23) * 2^-23 in [-1, 1)
and scale a power of two, so every value is exact in float32 on both sides.
"""
import numpy as np

FORMAT = "detw-splitmix64-v1"
_M64 = (1 << 64) - 1


def fnv1a64(name: str) -> int:
    h = 0xCBF29CE484222325
    for b in name.encode():
        h ^= b
        h = (h * 0x100000001B3) & _M64
    return h


def uniform(name: str, n: int) -> np.ndarray:
    """float32 u in [-1, 1) for elements 0..n-1 of tensor `name`."""
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64(fnv1a64(name))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    top = (z >> np.uint64(40)).astype(np.int64) - (1 << 23)
    return (top.astype(np.float32) * np.float32(2.0 ** -23)).astype(np.float32)


def scale_for(name: str):
    """(scale, offset) by tensor role: norms near 1, biases small."""
    is_norm = "norm" in name
    if name.endswith(".weight") and is_norm:
        return 2.0 ** -4, 1.0
    if name.endswith(".bias"):
        return 2.0 ** -5, 0.0
    return 2.0 ** -5, 0.0


def tensor(name: str, shape) -> np.ndarray:
    n = int(np.prod(shape))
    s, off = scale_for(name)
    v = uniform(name, n) * np.float32(s)
    if off:
        v = v + np.float32(off)
    return v.astype(np.float32).reshape(shape)


def fill_module(module, prefix: str = "") -> None:
    """Overwrites every parameter of a torch module with detweights values."""
    import torch
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.from_numpy(tensor(prefix + name, tuple(p.shape))))
