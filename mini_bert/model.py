"""BERT, hand-built on minigrad, read top to bottom: embeddings -> self-attention -> feed-forward
-> layer -> encoder -> pooler -> BertModel -> task heads.

Every module uses HF's attribute names, so ``state_dict()`` keys equal HF's
(``bert.encoder.layer.0.attention.self.query.weight``) and checkpoints load key for key; loading
and saving live in ``checkpoint.py``. Shapes in comments: B batch, T tokens, H hidden size,
n heads, d = H / n per head.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F

from . import checkpoint
from .config import ACTIVATIONS, BertConfig


# ---- inputs and outputs --------------------------------------------------------------------------
def as_int_array(x: Any, name: str) -> np.ndarray:
    """Token ids / masks / labels from a list, a numpy array or a minigrad Tensor, as int64."""
    arr = np.asarray(x.numpy() if isinstance(x, mg.Tensor) else x)
    if arr.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


@dataclasses.dataclass
class BaseModelOutput:
    last_hidden_state: mg.Tensor                # [B, T, H]
    pooler_output: mg.Tensor | None = None      # [B, H], tanh(dense(h_[CLS]))
    hidden_states: tuple | None = None          # embeddings, then each layer's output
    attentions: tuple | None = None             # per layer, [B, n, T, T] softmax weights


@dataclasses.dataclass
class HeadOutput:
    logits: mg.Tensor
    loss: mg.Tensor | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


def activation(x: mg.Tensor, hidden_act: str) -> mg.Tensor:
    """ "gelu" is exact, x·Φ(x) with Φ from erf; "gelu_new" and "gelu_pytorch_tanh" are the
    tanh fit; "relu" is max(x, 0)."""
    kind = ACTIVATIONS[hidden_act]
    return x.relu() if kind == "relu" else F.gelu(x, approximate=kind)


def additive_attention_mask(mask: Any, batch: int, seq: int, dtype, device) -> mg.Tensor:
    """1/0 mask -> the term added to attention scores: 0 where we attend, finfo(dtype).min if not.

    [B, T] (which keys are real tokens) becomes [B, 1, 1, T], [B, T, T] (query i may see key j)
    becomes [B, 1, T, T]; both broadcast over the heads. Adding the most negative finite number,
    rather than -inf, keeps a fully masked row finite (uniform weights) instead of NaN; after the
    max-subtraction in softmax, exp() of it is exactly 0 for every masked key.
    """
    m = as_int_array(mask, "attention_mask")
    if m.shape not in ((batch, seq), (batch, seq, seq)):
        raise ValueError(f"attention_mask has shape {m.shape}; expected {(batch, seq)} or "
                         f"{(batch, seq, seq)} for input_ids of shape {(batch, seq)}")
    m = m[:, None, None, :] if m.ndim == 2 else m[:, None, :, :]
    additive = (1.0 - m.astype(dtype)) * np.finfo(dtype).min
    return mg.tensor(additive, dtype=dtype, device=device)


# ---- embeddings ----------------------------------------------------------------------------------
class BertEmbeddings(nn.Module):
    """e_t = LayerNorm(W_word[id_t] + W_type[type_t] + W_pos[t]), then dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: np.ndarray | None, token_type_ids: np.ndarray,
                inputs_embeds: mg.Tensor | None = None) -> mg.Tensor:
        """``inputs_embeds`` [B, T, H] (HF's name) stands in for W_word[id_t]: attribution methods
        (mini_bert.explain) differentiate with respect to it."""
        words = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        x = words + self.token_type_embeddings(token_type_ids)
        # Positions 0..T-1 are the same for every sequence: one [T, H] lookup, broadcast over B.
        x = x + self.position_embeddings(np.arange(token_type_ids.shape[1]))
        return self.dropout(self.LayerNorm(x))


# ---- one encoder layer ---------------------------------------------------------------------------
class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention.

    Q, K, V = x W_qᵀ + b_q, ...;  per head h:  A_h = softmax(Q_h K_hᵀ / sqrt(d) + M),
    out_h = A_h V_h;  the n heads' outputs are concatenated back to width H.
    Dividing by sqrt(d) keeps the scores' variance near 1 whatever the head size, so softmax
    does not saturate at initialisation. When nobody asks for the attention weights,
    ``F.scaled_dot_product_attention`` computes the same thing, dropout on A_h included (on numpy
    with numba, and on torch:cpu without dropout, one fused kernel that never stores A_h), and the
    weights returned are None.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_size = h // self.num_heads
        # Three Parameters and three matmuls, as in the checkpoint: the plainest correct form.
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _heads(self, x: mg.Tensor) -> mg.Tensor:
        """[B, T, H] -> [B, n, T, d]: each head attends independently over its d features."""
        b, t, _ = x.shape
        return x.reshape(b, t, self.num_heads, self.head_size).transpose(1, 2)

    def forward(self, x: mg.Tensor, mask: mg.Tensor | None,
                output_attentions: bool = True) -> tuple[mg.Tensor, mg.Tensor | None]:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        if not output_attentions:  # dropout included: F.dropout's mask, from the same generator
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                     dropout_p=self.dropout.p if self.training else 0.0)
            b, _, t, _ = context.shape
            return context.transpose(1, 2).reshape(b, t, -1), None
        scores = (q @ k.transpose(-1, -2)) * self.head_size ** -0.5     # [B, n, T, T]
        if mask is not None:
            scores = scores + mask
        probs = F.softmax(scores, dim=-1)   # subtracts the row max: exp never overflows
        context = self.dropout(probs) @ v                                 # [B, n, T, d]
        b, _, t, _ = context.shape
        return context.transpose(1, 2).reshape(b, t, -1), probs


class BertOutput(nn.Module):
    """y = LayerNorm(dropout(h Wᵀ + b) + x): project back to H, add the residual, normalise.

    HF has two identical classes here, BertSelfOutput (after attention, input width H) and
    BertOutput (after the feed-forward, input width intermediate_size); this one serves both.
    """

    def __init__(self, config: BertConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, h: mg.Tensor, residual: mg.Tensor) -> mg.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


BertSelfOutput = BertOutput  # HF's name for the instance used after attention


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)  # HF's name, hence the odd-looking `self.self`
        self.output = BertSelfOutput(config, config.hidden_size)

    def forward(self, x: mg.Tensor, mask: mg.Tensor | None,
                output_attentions: bool = True) -> tuple[mg.Tensor, mg.Tensor | None]:
        context, probs = self.self(x, mask, output_attentions)
        return self.output(context, x), probs


class BertIntermediate(nn.Module):
    """The feed-forward's first half: act(x Wᵀ + b), widening H -> intermediate_size."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.hidden_act = config.hidden_act

    def forward(self, x: mg.Tensor) -> mg.Tensor:
        return activation(self.dense(x), self.hidden_act)


class BertLayer(nn.Module):
    """x -> attention (+ residual, LayerNorm) -> feed-forward (+ residual, LayerNorm)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config, config.intermediate_size)

    def forward(self, x: mg.Tensor, mask: mg.Tensor | None,
                output_attentions: bool = True) -> tuple[mg.Tensor, mg.Tensor | None]:
        a, probs = self.attention(x, mask, output_attentions)
        return self.output(self.intermediate(a), a), probs


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: mg.Tensor, mask: mg.Tensor | None, output_attentions: bool = True) -> tuple[list, list]:
        """Every layer's output and attention weights (None unless ``output_attentions``), in order
        (the last output is the result)."""
        hidden, attentions = [], []
        for layer in self.layer:
            x, probs = layer(x, mask, output_attentions)
            hidden.append(x)
            attentions.append(probs)
        return hidden, attentions


class BertPooler(nn.Module):
    """pooled = tanh(h_[CLS] Wᵀ + b): the [CLS] token's vector, as pre-trained for NSP."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: mg.Tensor) -> mg.Tensor:
        return self.dense(hidden[:, 0]).tanh()


# ---- the model -----------------------------------------------------------------------------------
def init_weights(module: nn.Module, std: float) -> None:
    """HF's initialisation: weights ~ N(0, std²) (initializer_range), biases 0, LayerNorm 1/0,
    the padding token's embedding row 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        module.weight._data[module.padding_idx] = 0
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class BertPreTrainedModel(nn.Module):
    """What every model class shares: the config, HF-style init, from_pretrained/save_pretrained."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config

    def _init(self, module: nn.Module) -> None:
        module.apply(lambda m: init_weights(m, self.config.initializer_range))

    @property
    def device(self) -> str:
        return next(self.parameters()).device

    @property
    def dtype(self) -> np.dtype:
        return next(self.parameters()).dtype

    @classmethod
    def from_pretrained(cls, path: str, device: str = "cpu", strict: bool = True, **overrides):
        """Load a HF checkpoint (directory or weights file); see ``checkpoint.load_pretrained``."""
        return checkpoint.load_pretrained(cls, path, device=device, strict=strict, **overrides)

    def save_pretrained(self, directory: str) -> None:
        """Write ``config.json`` and ``model.safetensors`` in HF's layout."""
        checkpoint.save_pretrained(self, directory)


class BertModel(BertPreTrainedModel):
    """The encoder: ids -> contextual vectors [B, T, H] (and the pooled [CLS] vector)."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self._init(self)

    def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
                output_hidden_states: bool = False,
                output_attentions: bool = False, inputs_embeds: mg.Tensor | None = None) -> BaseModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        ids = None if input_ids is None else as_int_array(input_ids, "input_ids")
        if ids is not None and ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, seq_len], got shape {ids.shape}")
        if inputs_embeds is not None and inputs_embeds.ndim != 3:
            raise ValueError(f"inputs_embeds must be [batch, seq_len, hidden], got shape "
                             f"{tuple(inputs_embeds.shape)}")
        shape = ids.shape if ids is not None else tuple(inputs_embeds.shape[:2])
        b, t = shape
        if t > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {t} exceeds max_position_embeddings="
                             f"{self.config.max_position_embeddings}")
        types = (np.zeros(shape, np.int64) if token_type_ids is None
                 else as_int_array(token_type_ids, "token_type_ids"))
        if types.shape != shape:
            raise ValueError(f"token_type_ids has shape {types.shape}, input_ids {shape}")
        mask = None if attention_mask is None else additive_attention_mask(
            attention_mask, b, t, self.dtype, self.device)

        x = self.embeddings(ids, types, inputs_embeds)
        hidden, attentions = self.encoder(x, mask, output_attentions)
        last = hidden[-1] if hidden else x
        return BaseModelOutput(
            last_hidden_state=last,
            pooler_output=self.pooler(last) if self.pooler is not None else None,
            hidden_states=tuple([x] + hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None)


# ---- task heads ----------------------------------------------------------------------------------
class BertForSequenceClassification(BertPreTrainedModel):
    """logits = dropout(pooled) Wᵀ + b, one per label; the loss follows ``config.problem_type``."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config)
        p = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if p is None else p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self._init(self.classifier)

    def forward(self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None,
                labels: Any = None, output_hidden_states: bool = False,
                output_attentions: bool = False, inputs_embeds: mg.Tensor | None = None) -> HeadOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states,
                        output_attentions, inputs_embeds)
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = None if labels is None else self.loss(logits, labels)
        return HeadOutput(logits, loss, out.hidden_states, out.attentions)

    def resolve_problem_type(self, labels: np.ndarray) -> str:
        """config.problem_type, or HF's guess: one output -> regression; integer labels ->
        single-label (softmax + CE); float labels -> multi-label (sigmoid + BCE per label).
        (HF also writes its guess back into the config; we leave the config as loaded.)"""
        if self.config.problem_type is not None:
            return self.config.problem_type
        if self.num_labels == 1:
            return "regression"
        return "single_label_classification" if labels.dtype.kind in "iu" else \
            "multi_label_classification"

    def loss(self, logits: mg.Tensor, labels: Any) -> mg.Tensor:
        y = np.asarray(labels.numpy() if isinstance(labels, mg.Tensor) else labels)
        kind = self.resolve_problem_type(y)
        if kind == "single_label_classification":
            target = mg.tensor(as_int_array(y, "labels").reshape(-1), device=logits.device)
            return F.cross_entropy(logits.reshape(-1, self.num_labels), target)
        target = mg.tensor(y, dtype=logits.dtype, device=logits.device)
        if kind == "regression":
            # With one output, [B, 1] logits meet [B] labels: squeeze both, as HF does.
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(), target.squeeze())
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)


class BertPredictionHeadTransform(nn.Module):
    """h -> LayerNorm(act(h Wᵀ + b)): one more mixing step before predicting tokens."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.hidden_act = config.hidden_act

    def forward(self, h: mg.Tensor) -> mg.Tensor:
        return self.LayerNorm(activation(self.dense(h), self.hidden_act))


class BertLMPredictionHead(nn.Module):
    """logits = transform(h) Eᵀ + bias over the vocabulary. ``decoder.weight`` is E, the word
    embedding table itself (tied), and ``decoder.bias`` is ``bias``: one Parameter, two names."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(np.zeros(config.vocab_size, np.float32))
        self.decoder.bias = self.bias

    def forward(self, h: mg.Tensor) -> mg.Tensor:
        return self.decoder(self.transform(h))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, h: mg.Tensor) -> mg.Tensor:
        return self.predictions(h)


class BertForMaskedLM(BertPreTrainedModel):
    """Predict the token at every position; the loss is CE over positions whose label != -100."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        if config.tie_word_embeddings:
            # Input and output share one [V, H] table: a token's vector both encodes and predicts
            # it, and the gradients of both uses add up in the one Parameter.
            self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
            self._init(self.cls.predictions.transform)  # (not the decoder: E is initialised)
        else:
            self._init(self.cls)

    def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
                labels: Any = None, output_hidden_states: bool = False,
                output_attentions: bool = False) -> HeadOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states,
                        output_attentions)
        logits = self.cls(out.last_hidden_state)                        # [B, T, V]
        loss = None
        if labels is not None:
            target = mg.tensor(as_int_array(labels, "labels").reshape(-1), device=logits.device)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target, ignore_index=-100)
        return HeadOutput(logits, loss, out.hidden_states, out.attentions)


# ---- sentence embeddings (sentence-transformers' recipe for all-MiniLM-L6-v2) -------------------
def mean_pooling(hidden: mg.Tensor, attention_mask: Any) -> mg.Tensor:
    """s = Σ_t m_t h_t / max(Σ_t m_t, 1e-9): the average of the real (unpadded) tokens' vectors."""
    m = as_int_array(attention_mask, "attention_mask")
    weights = mg.tensor(m[:, :, None], dtype=hidden.dtype, device=hidden.device)
    counts = np.maximum(m.sum(axis=1, keepdims=True), 1e-9).astype(hidden.dtype)
    return (hidden * weights).sum(dim=1) / mg.tensor(counts, device=hidden.device)


def l2_normalize(x: mg.Tensor, eps: float = 1e-12) -> mg.Tensor:
    """x / max(||x||₂, eps) along the last dim (cosine similarity is then a dot product)."""
    norm = (x * x).sum(dim=-1, keepdim=True).sqrt()
    return x / mg.where(norm > eps, norm, eps)
