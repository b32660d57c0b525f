"""``minigrad.optim``: SGD, Adam, AdamW and learning-rate schedules, with torch's formulas."""
from . import lr_scheduler  # noqa: F401
from .adam import Adam, AdamW  # noqa: F401
from .lr_scheduler import LambdaLR, LinearLR, StepLR, get_linear_schedule_with_warmup  # noqa: F401
from .optimizer import Optimizer  # noqa: F401
from .sgd import SGD  # noqa: F401
