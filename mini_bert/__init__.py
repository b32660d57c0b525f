from .tokenizer import BertTokenizer
from .checkpoint import CheckpointError, default_model_dir, read_weights  # noqa: E402,F401
from .config import BertConfig, ConfigError  # noqa: E402,F401
from .model import (BaseModelOutput, BertForMaskedLM, BertForSequenceClassification,  # noqa: E402,F401
                    BertModel, HeadOutput, l2_normalize, mean_pooling)
