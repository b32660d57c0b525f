from .tokenizer import BertTokenizer  # noqa: F401 (the package's public API)
from .checkpoint import CheckpointError, default_model_dir, read_weights  # noqa: E402,F401
from .config import BertConfig, ConfigError  # noqa: E402,F401
from .model import (BaseModelOutput, BertForMaskedLM, BertForSequenceClassification,  # noqa: E402,F401
                    BertModel, HeadOutput, l2_normalize, mean_pooling)
from .adversarial import FGM, PGD  # noqa: E402,F401
from .mlm import fill_mask, mask_tokens, mlm_loss  # noqa: E402,F401
from .peft import (LoRALinear, apply_lora, count_trainable, load_adapter,  # noqa: E402,F401
                   merge_and_unload, save_adapter)
