"""The checks of assignments 4-6 (course/assignments/a4_bert.py, a5_finetune.py, a6_beyond.py)
can pass and can fail: for every task,

1. the check passes on the reference tree, for two seeds;
2. it raises TaskFailure when the blanked code is replaced by a plausible wrong answer (a bug
   planted in-process: WordPiece without '##', Adam without bias correction, ...);
3. it raises NotImplementedError when the blanked code is the student build's stub.

The replacement is made where the student's code would be: a method on its class (keeping
staticmethod), a function on its module and on every package that re-exports it.
"""
from __future__ import annotations

import inspect
import json
import math
import struct
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import minigrad as mg  # noqa: E402
from course.assignments import a4_bert, a5_finetune, a6_beyond  # noqa: E402
from course.framework import TaskFailure  # noqa: E402
from minigrad.nn import functional as F  # noqa: E402

TASKS = {t.id: t for a in (a4_bert, a5_finetune, a6_beyond) for t in a.ASSIGNMENT.tasks}
# The checks that load the real all-MiniLM-L6-v2 (~2-4 s each): one seed in the default run.
MINILM = {"a4.load_pretrained", "a5.train_step"}


def _resolve(blank: str):
    """``"path/to/mod.py:Class.method"`` -> (owner object, attribute name, module name)."""
    path, qualname = blank.split(":")
    module_name = path.removesuffix(".py").replace("/", ".")
    __import__(module_name)
    owner = sys.modules[module_name]
    *outer, name = qualname.split(".")
    for part in outer:
        owner = getattr(owner, part)
    return owner, name, module_name


def plant(monkeypatch, blank: str, fn) -> None:
    """Put ``fn`` where the blank's code is, for the duration of the test."""
    owner, name, module_name = _resolve(blank)
    original = inspect.getattr_static(owner, name)
    if isinstance(original, staticmethod):
        fn = staticmethod(fn)
    monkeypatch.setattr(owner, name, fn)
    if inspect.ismodule(owner):  # re-exports (minigrad.optim.get_linear_schedule_with_warmup, ...)
        root = module_name.split(".")[0]
        for mod_name, mod in list(sys.modules.items()):
            if (mod_name == root or mod_name.startswith(root + ".")) and mod is not owner and \
                    getattr(mod, name, None) is original:
                monkeypatch.setattr(mod, name, fn)


def stub(task_id: str):
    def raise_not_implemented(*args, **kwargs):
        raise NotImplementedError(f"{task_id}: stub")
    return raise_not_implemented


# ---- planted bugs: one plausible wrong answer per task ------------------------------------------
def wordpiece_without_prefix(self, word):
    """Continuation pieces looked up without their '##'."""
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            if word[start:end] in self.vocab:
                pieces.append((word[start:end], self.vocab[word[start:end]], start, end))
                break
        else:
            return [(self.unk_token, self.vocab.get(self.unk_token), 0, len(word))]
        start = end
    return pieces


def finish_without_lowercase(self, c):
    from mini_bert.basic_tokenizer import _is_stripped_mark
    return "" if self.strip_accents and _is_stripped_mark(c) else c


def _wrap(blank: str, make):
    """A bug defined in terms of the reference function (read before it is replaced)."""
    owner, name, _ = _resolve(blank)
    return make(getattr(owner, name))


def assemble_types_all_zero(orig):
    def assemble(self, first, second, add_special_tokens):
        ids, types, offsets = orig(self, first, second, add_special_tokens)
        return ids, [0] * len(types), offsets
    return assemble


def truncate_ignoring_special_tokens(orig):
    def truncate(first, second, strategy, max_length, num_special):
        return orig(first, second, strategy, max_length, 0)
    return truncate


def embeddings_without_positions(self, input_ids, token_type_ids):
    return self.dropout(self.LayerNorm(self.word_embeddings(input_ids)
                                       + self.token_type_embeddings(token_type_ids)))


def pooler_without_tanh(self, hidden):
    return self.dense(hidden[:, 0])


def l2_normalize_without_sqrt(x, eps=1e-12):
    return x / (x * x).sum(dim=-1, keepdim=True)


def bf16_without_shift(path, names):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        out = {}
        for name in names:
            start, end = header[name]["data_offsets"]
            f.seek(8 + n + start)
            raw = np.frombuffer(f.read(end - start), dtype="<u2")
            out[name] = raw.astype(np.float32).reshape(header[name]["shape"])
    return out


def keep_old_names(key):
    """gamma/beta not renamed."""
    return key


def load_in_training_mode(orig):
    def load(*args, **kwargs):
        return orig(*args, **kwargs).train()
    return load


def adam_without_bias_correction(self, p, grad, state, group):
    xp, lr, wd = p._xp, group["lr"], group["weight_decay"]
    b1, b2 = group["betas"]
    if not state:
        state.update(step=0, exp_avg=xp.zeros(p.shape, p.dtype, p.device),
                     exp_avg_sq=xp.zeros(p.shape, p.dtype, p.device))
    state["step"] += 1
    m, v = state["exp_avg"], state["exp_avg_sq"]
    if wd and self.decoupled:
        p._data = p._data * (1 - lr * wd)
    elif wd:
        grad = grad + wd * p._data
    m *= b1
    m += (1 - b1) * grad
    v *= b2
    v += (1 - b2) * grad * grad
    p._data = p._data - lr * m / (xp.sqrt(v) + group["eps"])


def schedule_one_step_ahead(optimizer, num_warmup_steps, num_training_steps, last_epoch=-1):
    from minigrad.optim.lr_scheduler import LambdaLR

    def factor(step):
        step += 1
        if step < num_warmup_steps:
            return step / max(1, num_warmup_steps)
        return max(0.0, (num_training_steps - step) / max(1, num_training_steps - num_warmup_steps))
    return LambdaLR(optimizer, factor, last_epoch)


def clip_each_tensor(parameters, max_norm, norm_type=2.0, **kwargs):
    params = [parameters] if isinstance(parameters, mg.Tensor) else list(parameters)
    total = 0.0
    for p in params:
        if p.grad is None:
            continue
        norm = float(np.linalg.norm(p.grad.numpy()))
        total += norm * norm
        if norm > max_norm:
            p.grad = p.grad * (max_norm / (norm + 1e-6))
    return math.sqrt(total)


def groups_decaying_layernorm(model, weight_decay):
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def multilabel_as_regression(orig):
    def loss(self, logits, labels):
        y = np.asarray(labels)
        if self.resolve_problem_type(y) != "multi_label_classification":
            return orig(self, logits, labels)
        return F.mse_loss(logits, mg.tensor(y, dtype=logits.dtype))
    return loss


def forward_without_attention_mask(model, tok, examples, y, cfg):
    from mini_bert import data as D
    from mini_bert import finetune as FT

    enc = D.encode_batch(tok, examples, cfg.max_length)
    enc.pop("attention_mask")
    return model(**enc, labels=FT.targets(y, cfg.loss))


def lora_forward_even_when_merged(self, x):
    return F.linear(x, self.weight, self.bias) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling


def merge_twice_adds_twice(self):
    self.weight._data = self.weight._data + self.delta_weight()
    self._before_merge, self.merged = None, True


def apply_lora_without_freezing(orig):
    def apply(model, *args, **kwargs):
        out = orig(model, *args, **kwargs)
        for p in model.parameters():
            p.requires_grad_(True)
        return out
    return apply


def step_without_normalising(self, p, g, size):
    if g is not None:
        p._data = p._data + size * g._data


def project_nothing(self, name, p):
    return None


def attack_backward_with_earlier_grads(self, loss, loss_fn):
    loss.backward()
    self._adversarial_backward(loss_fn, None)


BUGS = {
    "a4.wordpiece": {"mini_bert/wordpiece.py:WordPiece._tokenize": lambda: wordpiece_without_prefix},
    "a4.normalize": {"mini_bert/basic_tokenizer.py:BasicTokenizer._finish": lambda: finish_without_lowercase},
    "a4.assemble": {"mini_bert/tokenizer.py:BertTokenizer._assemble": assemble_types_all_zero},
    "a4.truncate": {"mini_bert/tokenizer.py:BertTokenizer._truncate": truncate_ignoring_special_tokens},
    "a4.embeddings": {"mini_bert/model.py:BertEmbeddings.forward": lambda: embeddings_without_positions},
    "a4.model_forward": {"mini_bert/model.py:BertPooler.forward": lambda: pooler_without_tanh},
    "a4.pooling": {"mini_bert/model.py:l2_normalize": lambda: l2_normalize_without_sqrt},
    "a4.bf16": {"mini_bert/checkpoint.py:_bf16_tensors": lambda: bf16_without_shift},
    "a4.key_names": {"mini_bert/checkpoint.py:_canonical_name": lambda: keep_old_names},
    "a4.load_pretrained": {"mini_bert/checkpoint.py:load_pretrained": load_in_training_mode},
    "a5.adam": {"minigrad/optim/adam.py:Adam._update": lambda: adam_without_bias_correction},
    "a5.schedule": {"minigrad/optim/lr_scheduler.py:get_linear_schedule_with_warmup":
                    lambda: schedule_one_step_ahead},
    "a5.clip": {"minigrad/nn/utils.py:clip_grad_norm_": lambda: clip_each_tensor},
    "a5.param_groups": {"mini_bert/finetune.py:param_groups": lambda: groups_decaying_layernorm},
    "a5.head_loss": {"mini_bert/model.py:BertForSequenceClassification.loss": multilabel_as_regression},
    "a5.train_step": {"mini_bert/finetune.py:forward": lambda: forward_without_attention_mask},
    "a6.lora_forward": {"mini_bert/peft.py:LoRALinear.forward": lambda: lora_forward_even_when_merged},
    "a6.lora_merge": {"mini_bert/peft.py:LoRALinear.merge": lambda: merge_twice_adds_twice},
    "a6.apply_lora": {"mini_bert/peft.py:apply_lora": apply_lora_without_freezing},
    "a6.fgm": {"mini_bert/adversarial.py:_EmbeddingAttack._step": lambda: step_without_normalising},
    "a6.pgd": {"mini_bert/adversarial.py:PGD.project": lambda: project_nothing},
    "a6.accumulation": {"mini_bert/adversarial.py:_EmbeddingAttack.backward":
                        lambda: attack_backward_with_earlier_grads},
}


def _make(blank: str, maker):
    """A bug is either a plain function (a lambda returning it) or a wrapper of the reference."""
    params = inspect.signature(maker).parameters
    return _wrap(blank, maker) if params else maker()


def test_every_task_has_a_planted_bug_and_the_ids_are_as_documented():
    assert set(BUGS) == set(TASKS)
    assert len(TASKS) >= 18
    for task_id, bugs in BUGS.items():
        assert set(bugs) <= set(TASKS[task_id].blanks), task_id


def _seeds(task_id: str):
    return [pytest.param(task_id, s, marks=[pytest.mark.slow] if (task_id in MINILM and s) else [])
            for s in (0, 1)]


@pytest.mark.parametrize("task_id, seed", [p for t in TASKS for p in _seeds(t)])
def test_check_passes_on_the_reference(task_id, seed):
    TASKS[task_id].check(np.random.default_rng(seed))


@pytest.mark.parametrize("task_id", sorted(TASKS))
def test_check_fails_on_a_planted_bug(task_id, monkeypatch):
    for blank, maker in BUGS[task_id].items():
        plant(monkeypatch, blank, _make(blank, maker))
    with pytest.raises(TaskFailure):
        TASKS[task_id].check(np.random.default_rng(2))


@pytest.mark.parametrize("task_id", sorted(TASKS))
def test_check_names_the_stub(task_id, monkeypatch):
    for blank in TASKS[task_id].blanks:
        plant(monkeypatch, blank, stub(task_id))
    with pytest.raises(NotImplementedError, match=task_id):
        TASKS[task_id].check(np.random.default_rng(3))
