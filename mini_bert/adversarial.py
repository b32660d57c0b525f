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

Where g comes from (``grad_wrt``):
- ``"weight"`` (the default, the usual torch recipe): read ``E.grad`` after a backward.
- ``"output"``: take the gradient with respect to the lookup's output X = E[ids] (a Tensor, not a
  parameter) with ``mg.autograd.grad``, and map it to E's rows by the lookup's transpose,
  g[i] = Σ_{t: id_t = i} ∂L/∂X_t (none for the padding row): the same g as E.grad, so the same
  perturbation. No ``.grad`` is read or cleared on the way, and PGD's inner steps ask for ∂L/∂X
  only (torch's engine then skips the weight gradients; minigrad's runs only the nodes on the way
  to X, but each still computes every gradient its forward marked as needed). If E is also used
  elsewhere, e.g. by a tied MLM decoder, "weight" follows that use too and "output" does not.
"""
from __future__ import annotations

import math
from typing import Callable

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F

LossFn = Callable[[], mg.Tensor]
GRAD_WRT = ("weight", "output")


class _OutputRecorder:
    """A forward hook on an embedding module that keeps its latest ids and output X: the tensor the
    ``"output"`` path differentiates with respect to."""

    def __init__(self, module: nn.Embedding):
        self.module = module
        self.ids = self.out = None
        self.handle = module.register_forward_hook(self)

    def __call__(self, module: nn.Embedding, args: tuple, out: mg.Tensor) -> None:
        self.ids, self.out = args[0], out

    def take(self, who: str) -> mg.Tensor:
        """The recorded output, released here so that its graph does not outlive the step."""
        if self.out is None:
            raise RuntimeError(f"{who}(grad_wrt='output'): the embeddings have not run since the "
                               "last attack; compute the loss with the model after creating the attack")
        out, self.out = self.out, None
        return out

    def table_grad(self, out_grad: mg.Tensor) -> mg.Tensor:
        """g_E from ∂L/∂X: the lookup's own backward (scatter-add by id, padding row left at 0),
        run on a fresh leaf copy of E so that it needs no graph of the model."""
        leaf = self.module.weight.detach().requires_grad_()
        x = F.embedding(self.ids, leaf, self.module.padding_idx)
        return mg.autograd.grad([x], [leaf], grad_outputs=[out_grad])[0]


class _EmbeddingAttack:
    """What FGM and PGD share: finding E, perturbing and restoring it, and the grads bookkeeping."""

    def __init__(self, model: nn.Module, eps: float, emb_name: str = "word_embeddings",
                 grad_wrt: str = "weight"):
        if not eps > 0:
            raise ValueError(f"{type(self).__name__}: eps must be positive, got {eps}")
        if grad_wrt not in GRAD_WRT:
            raise ValueError(f"{type(self).__name__}: grad_wrt must be one of {GRAD_WRT}, got {grad_wrt!r}")
        self.model, self.eps, self.grad_wrt = model, eps, grad_wrt
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
        self.recorders = {}
        if grad_wrt == "output":
            for name, _ in self.targets:
                module = model.get_submodule(name.rpartition(".")[0])
                if not isinstance(module, nn.Embedding):
                    raise ValueError(f"{type(self).__name__}(grad_wrt='output'): {name} is not an "
                                     f"nn.Embedding's weight but {type(module).__name__}'s")
                self.recorders[name] = _OutputRecorder(module)

    @staticmethod
    def _norm(t: mg.Tensor) -> float:
        return math.sqrt(float(t._xp.sum(t._data * t._data)))

    def _step(self, p: nn.Parameter, g: mg.Tensor | None, size: float) -> None:
        """E ← E + size · g/‖g‖ (skipped where g is absent, zero or not finite)."""
        if g is None:
            return
        norm = self._norm(g)
        if norm > 0 and math.isfinite(norm):
            # A new array, never an in-place add: the backup must stay the original bits.
            p._data = p._data + (size / norm) * g._data

    def _directions(self, grads: list | None) -> list:
        """The gradient of each target E: ``grads`` (the "output" path's) or else E.grad."""
        return [p.grad for _, p in self.targets] if grads is None else grads

    def _output_grads(self, loss: mg.Tensor, params: list) -> tuple[list, list]:
        """One backward pass for g_E (through ∂loss/∂X, see the module docstring) and for
        ∂loss/∂p of every p in ``params``; no .grad is touched."""
        who = type(self).__name__
        outs = [self.recorders[name].take(who) for name, _ in self.targets]
        grads = mg.autograd.grad(loss, outs + params, allow_unused=True)
        if any(g is None for g in grads[:len(outs)]):
            raise RuntimeError(f"{who}(grad_wrt='output'): the loss does not depend on the latest "
                               "embedding output; pass the loss of the model's most recent forward")
        tables = [self.recorders[name].table_grad(g) for (name, _), g in zip(self.targets, grads)]
        return tables, list(grads[len(outs):])

    def restore(self) -> None:
        """Put the original embedding arrays back (the same objects: bit-for-bit)."""
        for name, p in self.targets:
            if name in self.backup:
                p._data = self.backup[name]
        self.backup = {}
        for recorder in self.recorders.values():
            recorder.out = None  # the adversarial forward's graph is not needed any more

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
        if self.grad_wrt == "output":
            # The clean gradients come back from autograd.grad, not through .grad: they are added
            # last, onto the earlier micro-batches' and the adversarial pass's.
            directions, clean = self._output_grads(loss, self._trainable())
            self._adversarial_backward(loss_fn, directions)
            self._add_grads(clean)
            return
        earlier = self._take_grads()  # so the attack sees this batch's gradient only
        loss.backward()
        self._adversarial_backward(loss_fn, None)
        self._add_grads(earlier)

    def _adversarial_backward(self, loss_fn: LossFn, directions: list | None) -> None:
        """The adversarial pass(es), adding onto .grad; ``directions``: see ``_directions``."""
        raise NotImplementedError


class FGM(_EmbeddingAttack):
    """Fast gradient method: one step r = ε g/‖g‖₂ (default ε = 1, as commonly used for BERT)."""

    def __init__(self, model: nn.Module, eps: float = 1.0, emb_name: str = "word_embeddings",
                 grad_wrt: str = "weight"):
        super().__init__(model, eps, emb_name, grad_wrt)

    def attack(self, grads: list | None = None) -> None:
        """E ← E + ε g/‖g‖ with g the current gradient of E (call after a backward), or ``grads``."""
        for (name, p), g in zip(self.targets, self._directions(grads)):
            self.backup[name] = p._data
            self._step(p, g, self.eps)

    def _adversarial_backward(self, loss_fn: LossFn, directions: list | None) -> None:
        self.attack(directions)
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
                 emb_name: str = "word_embeddings", grad_wrt: str = "weight"):
        super().__init__(model, eps, emb_name, grad_wrt)
        if not alpha > 0 or steps < 1:
            raise ValueError(f"PGD: alpha must be positive and steps >= 1, got {alpha}, {steps}")
        self.alpha, self.steps = alpha, steps

    def attack(self, first: bool = False, grads: list | None = None) -> None:
        """E ← Π_ε(E + α g/‖g‖) around the embeddings saved at the ``first`` step; g is E.grad,
        or ``grads``."""
        for (name, p), g in zip(self.targets, self._directions(grads)):
            if first:
                self.backup[name] = p._data
            self._step(p, g, self.alpha)
            self.project(name, p)

    def project(self, name: str, p: nn.Parameter) -> None:
        """Pull E back onto the ball ‖E - E₀‖₂ <= ε (radially, the nearest point of the ball)."""
        r = p._data - self.backup[name]
        norm = math.sqrt(float(p._xp.sum(r * r)))
        if norm > self.eps:
            p._data = self.backup[name] + (self.eps / norm) * r

    def _adversarial_backward(self, loss_fn: LossFn, directions: list | None) -> None:
        if directions is not None:
            self._output_steps(loss_fn, directions)
            return
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

    def _output_steps(self, loss_fn: LossFn, directions: list) -> None:
        """The K steps of the "output" path: each inner step asks for ∂L/∂X alone (no parameter
        gradient, no .grad cleared); only the last adversarial loss is backpropagated into .grad."""
        try:
            for t in range(self.steps):
                self.attack(first=t == 0, grads=directions)
                adversarial = loss_fn()
                if t < self.steps - 1:
                    directions, _ = self._output_grads(adversarial, [])
                else:
                    adversarial.backward()
        finally:
            self.restore()
