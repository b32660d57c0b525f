"""Seeded random generators, one per device, so that dropout masks are drawn where the data lives."""
from __future__ import annotations

from .backend import resolve

_seed = 0
_generators: dict[str, object] = {}


def manual_seed(seed: int) -> None:
    """Reseed every device's default generator (created lazily from this seed)."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def default_generator(device: str = "cpu"):
    xp, dev = resolve(device)
    gen = _generators.get(dev)
    if gen is None:
        gen = _generators[dev] = xp.generator(_seed, dev)
    return gen


def get_rng_state() -> dict:
    """Every device generator's state, for resumable training."""
    return {"seed": _seed,
            "states": {dev: resolve(dev)[0].generator_state(g) for dev, g in _generators.items()}}


def set_rng_state(state: dict) -> None:
    manual_seed(state["seed"])
    for dev, s in state["states"].items():
        resolve(dev)[0].set_generator_state(default_generator(dev), s)
