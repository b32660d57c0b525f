"""``python -m minigrad.demo``: minigrad end to end in a few seconds.

1. Make the two-moons toy problem with numpy (two interleaved half circles, plus noise).
2. Train a small MLP on it with minigrad (Adam, full batch) and print the loss going down, then
   where the time went (``minigrad.profile``).
3. Draw the learned decision boundary in the terminal.
4. Check the gradient of the first layer's weights against central finite differences (float64),
   and every parameter's gradient against PyTorch on the same weights, if torch is installed.
Everything is seeded, so two runs print the same numbers.
"""
from __future__ import annotations

import time

import numpy as np

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import nn

SEED = 0


def two_moons(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n points on two interleaved half circles: class 0 on the upper arc around (0, 0), class 1 on
    the lower arc around (1, 0.5); Gaussian noise of std ``noise`` added to both coordinates."""
    angle = rng.uniform(0, np.pi, n)
    label = rng.integers(0, 2, n)
    x = np.where(label == 0, np.cos(angle), 1 - np.cos(angle))
    y = np.where(label == 0, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x, y], axis=1) + noise * rng.standard_normal((n, 2))
    return points.astype(np.float32), label


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))


def train(model: nn.Module, x: mg.Tensor, y: mg.Tensor, steps: int) -> list[float]:
    opt = mg.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for step in range(steps + 1):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % (steps // 8) == 0:
            print(f"  step {step:4d}  loss {losses[-1]:.4f}")
    return losses


def accuracy(model: nn.Module, x: mg.Tensor, y: np.ndarray) -> float:
    with mg.no_grad():
        return float((model(x).argmax(dim=1).numpy() == y).mean())


def ascii_boundary(model: nn.Module, points: np.ndarray, labels: np.ndarray,
                   width: int = 64, height: int = 20) -> str:
    """The plane as characters: '.' / ' ' where the model predicts class 0 / 1; 'o' / 'x' for the
    data points of class 0 / 1 (upper-case where the model gets that point wrong)."""
    lo, hi = points.min(axis=0) - 0.2, points.max(axis=0) + 0.2
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], width), np.linspace(hi[1], lo[1], height))
    grid = mg.tensor(np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32))
    with mg.no_grad():
        pred = model(grid).argmax(dim=1).numpy().reshape(height, width)
        point_pred = model(mg.tensor(points)).argmax(dim=1).numpy()
    canvas = np.where(pred == 0, ".", " ").astype(object)
    # Each point's cell: x grows to the right, y grows upwards (row 0 is the top line).
    frac = (points - lo) / (hi - lo)
    cols = (frac[:, 0] * (width - 1)).round().astype(int)
    rows = ((1 - frac[:, 1]) * (height - 1)).round().astype(int)
    for r, c, label, p in zip(rows, cols, labels, point_pred):
        mark = "o" if label == 0 else "x"
        canvas[r, c] = mark if p == label else mark.upper()
    return "\n".join("  |" + "".join(row) + "|" for row in canvas)


def finite_difference_check(model: nn.Module, x: np.ndarray, y: np.ndarray,
                            eps: float = 1e-6) -> float:
    """Max |analytic - numerical| over the first layer's weights, in a float64 copy of the model.

    numerical dL/dw = (L(w + eps) - L(w - eps)) / (2 eps), one weight at a time; float64 because in
    float32 the rounding error of L (~1e-7 relative) divided by eps would swamp the difference.
    """
    model64 = make_model().to(dtype=mg.float64)
    model64.load_state_dict(model.state_dict())  # loading keeps the float64 dtype
    xs, ys = mg.tensor(x, dtype=mg.float64), mg.tensor(y)
    w = model64[0].weight
    F.cross_entropy(model64(xs), ys).backward()
    analytic = w.grad.numpy().copy()
    numerical = np.zeros_like(analytic)
    with mg.no_grad():
        for idx in np.ndindex(*w.shape):
            orig = w._data[idx]
            w._data[idx] = orig + eps
            plus = F.cross_entropy(model64(xs), ys).item()
            w._data[idx] = orig - eps
            minus = F.cross_entropy(model64(xs), ys).item()
            w._data[idx] = orig
            numerical[idx] = (plus - minus) / (2 * eps)
    return float(np.abs(analytic - numerical).max())


def torch_check(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float | None:
    """Max |minigrad grad - torch grad| over every parameter, same float32 weights and batch."""
    try:
        import torch
    except ImportError:
        return None
    ref = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32),
                              torch.nn.Tanh(), torch.nn.Linear(32, 2))
    ref.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in model.state_dict().items()})
    torch.nn.functional.cross_entropy(ref(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    model.zero_grad()
    F.cross_entropy(model(mg.tensor(x)), mg.tensor(y)).backward()
    ours = dict(model.named_parameters())
    return max(float(np.abs(ours[k].grad.numpy() - p.grad.numpy()).max())
               for k, p in ref.named_parameters())


def main() -> None:
    start = time.perf_counter()
    mg.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    points, labels = two_moons(400, noise=0.2, rng=rng)
    x, y = mg.tensor(points), mg.tensor(labels)
    model = make_model()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"minigrad demo: two moons, {len(points)} points; MLP 2-32-32-2 (tanh), {n_params} "
          "parameters; Adam, full batch")
    print(f"accuracy before training: {accuracy(model, x, labels):.1%}")
    with mg.profile() as prof:
        losses = train(model, x, y, steps=400)
    acc = accuracy(model, x, labels)
    print(f"\nwhere the training time went (slowest ops first):\n{prof.table(limit=6)}\n")
    print(f"accuracy after training: {acc:.1%}\nlearned decision boundary ('.' = class 0, "
          "'o'/'x' = data, upper case = misclassified):")
    print(ascii_boundary(model, points, labels))

    batch = slice(0, 64)
    fd = finite_difference_check(model, points[batch], labels[batch])
    print(f"\ngradient check, first-layer weights vs central finite differences (float64): "
          f"max |diff| = {fd:.2e}")
    th = torch_check(model, points[batch], labels[batch])
    print("gradient check vs PyTorch: torch not installed" if th is None else
          f"gradient check vs PyTorch (float32, every parameter): max |diff| = {th:.2e}")
    print(f"\nsummary: loss {losses[0]:.4f} -> {losses[-1]:.4f}, accuracy {acc:.1%}, "
          f"gradients {'OK' if fd < 1e-6 and (th is None or th < 1e-5) else 'MISMATCH'}, "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
