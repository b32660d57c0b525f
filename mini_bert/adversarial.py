"""Adversarial training on the word embeddings: FGM (Miyato et al., 2017) and PGD (Madry et al.,
2018), in the form NLP fine-tuning uses them.

Text is discrete, so the perturbation is made where the input first becomes continuous: the
word-embedding matrix E. Training minimises the loss at the worst nearby embeddings too:

    min_θ  L(θ; E) + max_{‖r‖ <= ε} L(θ; E + r)

FGM takes one linearised step to the max: to first order L(E + r) ≈ L(E) + ⟨g, r⟩ with
g = ∂L/∂E, which over the ball ‖r‖₂ <= ε is largest at r = ε g / ‖g‖₂ (‖·‖₂ over the whole
matrix). PGD takes K smaller steps r ← Π_ε(r + α g_r / ‖g_r‖₂), each with the gradient at the
current perturbation, projecting back onto the ball after each (Π_ε(r) = r · min(1, ε / ‖r‖)).

One (micro-)batch then costs 1 + 1 (FGM) or 1 + K (PGD) forward/backward passes, and the
gradients the optimizer sees are ∇θ L(E) + ∇θ L(E + r). E itself is restored bit for bit before
the optimizer steps: the perturbation is a probe, not an update.
"""
from __future__ import annotations

import math
from typing import Callable

import minigrad as mg
from minigrad import nn

LossFn = Callable[[], mg.Tensor]


class _EmbeddingAttack:
    """What FGM and PGD share: finding E, perturbing and restoring it, and the grads bookkeeping."""

    def __init__(self, model: nn.Module, eps: float, emb_name: str = "word_embeddings"):
        if not eps > 0:
            raise ValueError(f"{type(self).__name__}: eps must be positive, got {eps}")
        self.model, self.eps = model, eps
        self.targets = [(n, p) for n, p in model.named_parameters() if emb_name in n]
        if not self.targets:
            raise ValueError(f"{type(self).__name__}: no parameter of {type(model).__name__} has "
                             f"{emb_name!r} in its name")
        frozen = [n for n, p in self.targets if not p.requires_grad]
        if frozen:
            raise ValueError(f"{type(self).__name__} perturbs along the gradient of {frozen}, "
                             "which is frozen (requires_grad=False, e.g. by apply_lora); "
                             "adversarial training needs that gradient")
        self.backup: dict = {}   # name -> the original array of E (the very object, not a copy)

    @staticmethod
    def _norm(t: mg.Tensor) -> float:
        return math.sqrt(float(t._xp.sum(t._data * t._data)))

    def _step(self, p: nn.Parameter, size: float) -> None:
        """E ← E + size · g/‖g‖ (skipped where g is absent, zero or not finite)."""
        if p.grad is None:
            return
        norm = self._norm(p.grad)
        if norm > 0 and math.isfinite(norm):
            # A new array, never an in-place add: the backup must stay the original bits.
            p._data = p._data + (size / norm) * p.grad._data

    def restore(self) -> None:
        """Put the original embedding arrays back (the same objects: bit-for-bit)."""
        for name, p in self.targets:
            if name in self.backup:
                p._data = self.backup[name]
        self.backup = {}

    def _trainable(self) -> list:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _take_grads(self) -> list:
        """Every trainable gradient, set aside (the params' .grad become None)."""
        params = self._trainable()
        grads = [p.grad for p in params]
        for p in params:
            p.grad = None
        return grads

    def _add_grads(self, grads: list) -> None:
        """Add gradients set aside by ``_take_grads`` back onto the current ones."""
        for p, g in zip(self._trainable(), grads):
            if g is not None:
                # A fresh array, not an in-place add: a .grad may be a view shared with another.
                p.grad = g if p.grad is None else mg.Tensor._make(g._data + p.grad._data, g._xp, g.device)

    def backward(self, loss: mg.Tensor, loss_fn: LossFn) -> None:
        """``loss.backward()`` plus the adversarial term: afterwards every trainable .grad holds
        ∇L(E) + ∇L(E + r), added onto whatever it held before (earlier micro-batches), and E is
        exactly as before. ``loss`` is the clean loss already computed; ``loss_fn()`` recomputes
        the same loss (same batch, same scaling) at the current embeddings."""
        earlier = self._take_grads()  # so the attack sees this batch's gradient only
        loss.backward()
        self._adversarial_backward(loss_fn)
        self._add_grads(earlier)

    def _adversarial_backward(self, loss_fn: LossFn) -> None:
        raise NotImplementedError


class FGM(_EmbeddingAttack):
    """Fast gradient method: one step r = ε g/‖g‖₂ (default ε = 1, as commonly used for BERT)."""

    def __init__(self, model: nn.Module, eps: float = 1.0, emb_name: str = "word_embeddings"):
        super().__init__(model, eps, emb_name)

    def attack(self) -> None:
        """E ← E + ε g/‖g‖ with g the current gradient of E (call after a backward)."""
        for name, p in self.targets:
            self.backup[name] = p._data
            self._step(p, self.eps)

    def _adversarial_backward(self, loss_fn: LossFn) -> None:
        self.attack()
        try:
            loss_fn().backward()   # accumulates onto the clean gradients
        finally:
            self.restore()


class PGD(_EmbeddingAttack):
    """Projected gradient descent (ascent, on the loss): K steps of size α inside the ε-ball.

    The usual recipe for NLP: keep the clean gradients aside; for each of the K steps, move E
    along the current gradient and project; every step but the last clears the gradients so the
    next direction is that of the adversarial loss alone; before the last backward the clean
    gradients come back, so the final sum is clean + last-adversarial.
    """

    def __init__(self, model: nn.Module, eps: float = 1.0, alpha: float = 0.3, steps: int = 3,
                 emb_name: str = "word_embeddings"):
        super().__init__(model, eps, emb_name)
        if not alpha > 0 or steps < 1:
            raise ValueError(f"PGD: alpha must be positive and steps >= 1, got {alpha}, {steps}")
        self.alpha, self.steps = alpha, steps

    def attack(self, first: bool = False) -> None:
        """E ← Π_ε(E + α g/‖g‖) around the embeddings saved at the ``first`` step."""
        for name, p in self.targets:
            if first:
                self.backup[name] = p._data
            self._step(p, self.alpha)
            self.project(name, p)

    def project(self, name: str, p: nn.Parameter) -> None:
        """Pull E back onto the ball ‖E - E₀‖₂ <= ε (radially, the nearest point of the ball)."""
        r = p._data - self.backup[name]
        norm = math.sqrt(float(p._xp.sum(r * r)))
        if norm > self.eps:
            p._data = self.backup[name] + (self.eps / norm) * r

    def _adversarial_backward(self, loss_fn: LossFn) -> None:
        params = self._trainable()
        clean = [p.grad for p in params]  # the first step reads these, the last adds onto them
        try:
            for t in range(self.steps):
                self.attack(first=t == 0)
                for p, g in zip(params, clean):
                    # Cleared between steps: the next direction is the adversarial loss's alone.
                    p.grad = g if t == self.steps - 1 else None
                loss_fn().backward()
        finally:
            self.restore()
