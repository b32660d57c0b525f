"""How a state dict fits a module: one report for every loader.

``Module.load_state_dict``, ``mini_bert``'s checkpoint loader and its LoRA adapter loader all
find the same three kinds of problem (keys the module has and the file lacks, keys the file has
and the module does not, arrays of the wrong shape) and report them here, in one format:

    <source>: the state dict does not fit <Module>:
      missing keys (2): a.weight, a.bias
      unexpected keys (1): b.weight
      shape mismatches (1): c.weight: checkpoint (3, 4) vs model (4, 4)
"""
from __future__ import annotations

from dataclasses import dataclass, field


def shape_mismatch(key: str, checkpoint_shape, model_shape) -> str:
    return f"{key}: checkpoint {tuple(checkpoint_shape)} vs model {tuple(model_shape)}"


@dataclass
class StateDictFit:
    """The keys a state dict lacks, the keys it has in excess, and its wrongly shaped arrays."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # shape_mismatch() lines

    @classmethod
    def of(cls, model_shapes: dict[str, tuple], given_shapes: dict[str, tuple]) -> "StateDictFit":
        """Compare {key: shape} of the module with {key: shape} of the state dict."""
        return cls(missing=[k for k in model_shapes if k not in given_shapes],
                   unexpected=[k for k in given_shapes if k not in model_shapes],
                   mismatched=[shape_mismatch(k, s, model_shapes[k]) for k, s in given_shapes.items()
                               if k in model_shapes and tuple(s) != tuple(model_shapes[k])])

    def fits(self, strict: bool = True) -> bool:
        """Shapes must always agree; missing and unexpected keys only matter when strict."""
        return not self.mismatched and not (strict and (self.missing or self.unexpected))

    def report(self, source: str, module_name: str, strict: bool = True, limit: int = 20) -> str:
        """The multi-line report above (only the parts that count under ``strict``)."""
        parts = [("shape mismatches", self.mismatched)]
        if strict:
            parts = [("missing keys", self.missing), ("unexpected keys", self.unexpected)] + parts
        lines = [f"{source}: the state dict does not fit {module_name}:"]
        for title, items in parts:
            if items:
                more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
                lines.append(f"  {title} ({len(items)}): {', '.join(items[:limit])}{more}")
        return "\n".join(lines)

    def check(self, source: str, module_name: str, error: type[Exception] = RuntimeError,
              strict: bool = True) -> None:
        """Raise ``error`` with the report unless the state dict fits."""
        if not self.fits(strict):
            raise error(self.report(source, module_name, strict))
