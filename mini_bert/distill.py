"""Knowledge distillation (Hinton et al. 2015; the source article's §8.4 "知识蒸馏"): a small
student learns from a fine-tuned teacher's softened probabilities as well as from the labels.

The loss, for student logits s and teacher logits t (rows of N examples, C classes) and a
temperature T > 0, with p = softmax(t/T) (the target) and q = softmax(s/T) (the prediction):

    KD = T² · (1/N) Σ_n KL(p_n ‖ q_n) = T² · (1/N) Σ_n Σ_c p_nc (log p_nc − log q_nc)

Its gradient with respect to the student logits. Only log q depends on s; log q_c = s_c/T −
log Σ_k e^(s_k/T), so ∂log q_c/∂s_j = (δ_cj − q_j)/T and

    ∂KD/∂s_nj = −(T²/N) Σ_c p_nc (δ_cj − q_nj)/T = (T/N) (q_nj − p_nj)     (Σ_c p_nc = 1)

— prediction minus target, as for BCE (σ(z) − y, lesson 3) and cross-entropy (softmax(z) −
onehot(y), lesson 4), with the teacher's soft distribution in place of the one-hot label. The T²
factor makes up for the 1/T² that the two divisions by T put into the gradient's size for large
T (q − p ≈ (s − t)/(C·T) there), so the KD term's gradient keeps its scale as T changes and
``alpha`` means the same mixture at every temperature.

One-logit (BCE-style) heads give P(class 1) = σ(z). They are distilled as the two-class head
with logits (0, z): softmax((0, z)/T) = (1 − σ(z/T), σ(z/T)), so this is exactly the KL between
Bernoulli(σ(t/T)) and Bernoulli(σ(s/T)), and the gradient reduces to (T/N)(σ(s/T) − σ(t/T)).
We take the (0, z) form because it *is* the distribution the BCE head models (the one HF's
pipeline reads), so one code path, through the fused log-softmax, serves both heads.

The rest of the module builds the student DistilBERT's way (copies of the teacher's layers
0, 2, 4, ...) and mixes the losses for the fine-tuning loop (``python -m mini_bert.finetune
--distill-from TEACHER``).
"""
from __future__ import annotations

import copy
import math
import os

import numpy as np

import minigrad as mg
from minigrad.nn import functional as F

from .checkpoint import find_weights, read_weights
from .errors import MissingFileError, UsageError
from .model import BertForSequenceClassification
from .tokenizer import BertTokenizer

REDUCTIONS = ("batchmean", "sum")
DEFAULT_TEMPERATURE, DEFAULT_ALPHA = 2.0, 0.5


def _as_classes(z: mg.Tensor) -> mg.Tensor:
    """[N, C] logits as they are; a one-logit head's [N, 1] as the two-class logits (0, z)."""
    return mg.cat([mg.zeros_like(z), z], dim=1) if z.shape[-1] == 1 else z


def kd_loss(student_logits: mg.Tensor, teacher_logits: mg.Tensor, temperature: float,
            reduction: str = "batchmean") -> mg.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), summed over classes, then over examples ("sum") or
    averaged over the N examples ("batchmean", torch's ``kl_div`` reduction that is the true KL).

    ``student_logits`` and ``teacher_logits``: [N, C], or [N, 1] for one-logit heads (see the
    module docstring). The teacher's logits are a target: no gradient flows to them. Gradient
    with respect to the student logits: (T/N)·(softmax(s/T) − softmax(t/T)) ("batchmean").
    Both log-probabilities come from the fused, max-subtracted log-softmax, and p·log p is
    computed as e^(log p)·log p, so a class the teacher rules out (p = 0 in float) adds 0, not NaN.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"kd_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"kd_loss: temperature must be a finite number > 0, got {temperature!r}")
    if student_logits.ndim != 2 or tuple(student_logits.shape) != tuple(teacher_logits.shape):
        raise ValueError(f"kd_loss: student and teacher logits must both be [N, C] of the same "
                         f"shape; got {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    with mg.no_grad():
        log_p = F.log_softmax(_as_classes(teacher_logits.detach()) / temperature, dim=1)
        p = log_p.exp()
    log_q = F.log_softmax(_as_classes(student_logits) / temperature, dim=1)
    total = (p * (log_p - log_q)).sum() * (temperature ** 2)
    return total / student_logits.shape[0] if reduction == "batchmean" else total


def distillation_loss(student_logits: mg.Tensor, task_loss: mg.Tensor, teacher_logits: mg.Tensor,
                      temperature: float, alpha: float) -> mg.Tensor:
    """alpha · KD + (1 − alpha) · task loss (the labels' BCE or cross-entropy)."""
    kd = kd_loss(student_logits, teacher_logits, temperature)
    return kd * alpha + task_loss * (1.0 - alpha)


# ---- teacher and student ---------------------------------------------------------------------------

def load_teacher(directory: str, device: str = "cpu") -> BertForSequenceClassification:
    """A fine-tuned classification checkpoint (ours or HF's), in eval mode (no dropout).

    A base model (no ``classifier.weight``) is refused: its head would be random, and distilling
    a random head teaches nothing."""
    flag = f"--distill-from {directory}"
    if not os.path.isdir(directory):
        what = "not a directory" if os.path.exists(directory) else "no such directory"
        raise MissingFileError(f"{flag}: {what} (give a fine-tuned classification checkpoint "
                               "directory, e.g. a finetune run's best/)")
    if not os.path.isfile(os.path.join(directory, "vocab.txt")):
        raise MissingFileError(f"{flag}: no vocab.txt (the student shares the teacher's tokenizer)")
    weights = find_weights(directory)
    if not any(k.endswith("classifier.weight") for k in read_weights(weights)):
        raise UsageError(f"{flag}: {weights} holds no classifier.weight: not a sequence-classification "
                         "checkpoint (fine-tune the teacher first)")
    return BertForSequenceClassification.from_pretrained(directory, device=device).eval()


def student_layer_ids(teacher_layers: int, k: int) -> list[int]:
    """Which teacher layers the K student layers start from: every other one, 0, 2, 4, ...
    (DistilBERT's choice: spread over the depth, each keeping its place in the order). When K is
    more than half the teacher's depth, the odd layers fill in from the bottom."""
    if not 1 <= k <= teacher_layers:
        raise UsageError(f"--student-layers must be in [1, {teacher_layers}] (the teacher's "
                         f"num_hidden_layers); got {k}")
    even, odd = list(range(0, teacher_layers, 2)), list(range(1, teacher_layers, 2))
    return even[:k] if k <= len(even) else sorted(even + odd[:k - len(even)])


def build_student(teacher: BertForSequenceClassification, k: int) -> tuple[BertForSequenceClassification, list[int]]:
    """A K-layer copy of the teacher: embeddings, pooler and classifier copied, student layer i
    from teacher layer ids[i]; its config is the teacher's with ``num_hidden_layers = K``."""
    ids = student_layer_ids(teacher.config.num_hidden_layers, k)
    config = copy.deepcopy(teacher.config).update(num_hidden_layers=k)
    student = BertForSequenceClassification(config)
    prefix = "bert.encoder.layer."
    source = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        if key.startswith(prefix):
            i, rest = key[len(prefix):].split(".", 1)
            key_in_teacher = f"{prefix}{ids[int(i)]}.{rest}"
        else:
            key_in_teacher = key
        state[key] = np.array(source[key_in_teacher].numpy(), copy=True)
    student.load_state_dict(state)
    if student.device != teacher.device:
        student.to(teacher.device)
    return student, ids


def prepare(cfg, head: dict, resume_dir: str | None):
    """(tokenizer, student, teacher, student layer ids) for ``finetune --distill-from``, every flag
    checked against the teacher. ``head``: the data's head config (``finetune.head_config``). Fills
    in the defaults of --student-layers, --temperature and --alpha in ``cfg``, so that the run
    records them (and --resume checks them)."""
    teacher = load_teacher(cfg.distill_from, cfg.device)
    tc = teacher.config
    if tc.num_labels != head["num_labels"]:
        raise UsageError(f"--distill-from {cfg.distill_from}: the teacher has {tc.num_labels} output(s); "
                         f"--loss {cfg.loss} on these labels needs {head['num_labels']}")
    if cfg.max_length > tc.max_position_embeddings:
        raise UsageError(f"--max-length {cfg.max_length} exceeds the teacher's max_position_embeddings "
                         f"({tc.max_position_embeddings}, in {cfg.distill_from}/config.json)")
    cfg.student_layers = cfg.student_layers or math.ceil(tc.num_hidden_layers / 2)
    cfg.temperature = DEFAULT_TEMPERATURE if cfg.temperature is None else cfg.temperature
    cfg.alpha = DEFAULT_ALPHA if cfg.alpha is None else cfg.alpha
    ids = student_layer_ids(tc.num_hidden_layers, cfg.student_layers)
    tok = BertTokenizer.from_pretrained(cfg.distill_from)
    mg.manual_seed(cfg.seed)  # dropout's generator, as for a plain run
    if resume_dir:
        student = BertForSequenceClassification.from_pretrained(resume_dir, device=cfg.device)
    else:
        student, ids = build_student(teacher, cfg.student_layers)
        student.config.update(**head)  # the data's label names, as a plain fine-tuning run saves
    return tok, student.train(), teacher, ids
