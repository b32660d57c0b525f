from .tokenizer import BertTokenizer
