"""minigrad's ops: each a ``Function`` with its forward, backward and the math in its docstring."""
