"""LoRA (mini_bert.peft) against torch and against the ``peft`` package.

Oracles, all computed inside the tests:
  * a LoRA written here in torch around HF's BertForSequenceClassification (same weights, same
    A and B): outputs and the gradients of A, B and the head;
  * the ``peft`` package (when installed; `pip install peft`): its trainable-parameter count for
    the same config, and its PeftModel loading the adapter files we write;
  * transformers loading the merged model's plain checkpoint.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hf_oracle import (hf_forward, hf_model, max_abs, random_batch, randomize, save_hf,
                       tiny_config, torch, transformers)

import mini_bert as mb
import minigrad as mg
from mini_bert import peft as P

R, ALPHA = 4, 8  # scaling α/r = 2, so a wrong scaling cannot hide behind 1


class TorchLoRA(torch.nn.Module):
    """The oracle: base(x) + (α/r) · (x Aᵀ) Bᵀ, written directly in torch."""

    def __init__(self, base: torch.nn.Linear, A: np.ndarray, B: np.ndarray, scaling: float):
        super().__init__()
        self.base, self.scaling = base, scaling
        self.A = torch.nn.Parameter(torch.tensor(A, dtype=base.weight.dtype))
        self.B = torch.nn.Parameter(torch.tensor(B, dtype=base.weight.dtype))

    def forward(self, x):
        return self.base(x) + (x @ self.A.T) @ self.B.T * self.scaling


def lora_pair(tmp_path, targets=("query", "value"), num_labels: int = 3, dtype=mg.float32):
    """(ours with LoRA, HF with the torch LoRA), same weights, B random (B = 0 would make A's
    gradient zero on both sides and the comparison of A's gradients empty)."""
    hf = randomize(hf_model("BertForSequenceClassification", tiny_config(num_labels=num_labels)))
    ours = mb.BertForSequenceClassification.from_pretrained(save_hf(hf, tmp_path / "base"))
    P.apply_lora(ours, targets, r=R, alpha=ALPHA)
    rng = np.random.default_rng(1)
    for _, layer in P.lora_layers(ours):
        layer.lora_B.weight._data = rng.normal(0, 0.3, layer.lora_B.weight.shape).astype(np.float32)
    ours.to(dtype=dtype)
    if dtype == mg.float64:
        hf.double()
    for name, layer in P.lora_layers(ours):
        parent_name, attr = name.rsplit(".", 1)
        parent = hf.get_submodule(parent_name)
        setattr(parent, attr, TorchLoRA(getattr(parent, attr), layer.lora_A.weight.numpy(),
                                        layer.lora_B.weight.numpy(), layer.scaling))
    for name, p in hf.named_parameters():
        p.requires_grad_(name.startswith("classifier") or name.endswith((".A", ".B")))
    return ours, hf


@pytest.mark.parametrize("dtype", [mg.float64, mg.float32])
def test_gradients_of_A_B_and_head_match_torch(tmp_path, dtype):
    ours, hf = lora_pair(tmp_path, dtype=dtype)
    batch = random_batch(97, 2, batch=4, seq=9)
    labels = np.array([0, 2, 1, 2])
    out = ours(**batch, labels=labels)
    out.loss.backward()
    theirs = hf(**{k: torch.tensor(v) for k, v in batch.items()}, labels=torch.tensor(labels))
    theirs.loss.backward()
    # float64: both sides compute the same math, ~1e-16 rounding, so 1e-10 is ~1e6x headroom.
    # float32: values and gradients O(1) over 2 layers; measured ~1e-6; 2e-5 leaves margin.
    tol = 1e-10 if dtype == mg.float64 else 2e-5
    assert abs(out.loss.item() - theirs.loss.item()) < tol
    hf_params = dict(hf.named_parameters())
    compared = 0
    for name, p in ours.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, f"{name} is frozen but got a gradient"
            continue
        key = name.replace("lora_A.weight", "A").replace("lora_B.weight", "B")
        ref = hf_params[key].grad
        assert ref is not None and max_abs(p.grad, ref) < tol * max(1.0, float(ref.abs().max())), name
        compared += 1
    assert compared == 2 * 2 * 2 + 2  # 2 layers x (query, value) x (A, B) + classifier W, b


def test_lora_linear_forward_merge_unmerge():
    mg.manual_seed(0)
    base = mg.nn.Linear(6, 5)
    lora = mb.LoRALinear(base, r=3, alpha=6)
    lora.lora_B.weight._data = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    x = mg.tensor(np.random.default_rng(1).normal(size=(2, 4, 6)), dtype=mg.float32)
    W0 = base.weight.numpy().copy()
    y = lora(x).numpy()
    A, B = lora.lora_A.weight.numpy(), lora.lora_B.weight.numpy()
    t = torch.tensor(x.numpy())
    ref = torch.nn.functional.linear(t, torch.tensor(W0), torch.tensor(base.bias.numpy()))
    ref = ref + (t @ torch.tensor(A).T) @ torch.tensor(B).T * 2.0
    assert max_abs(y, ref) < 1e-5  # float32, O(1) sums of 6 terms: ~1e-7 error
    lora.merge()
    assert lora.merged and np.abs(base.weight.numpy() - (W0 + 2.0 * B @ A)).max() < 1e-6
    assert max_abs(lora(x), y) < 1e-5   # the same function, summed in another order
    lora.unmerge()
    assert not lora.merged and np.array_equal(base.weight.numpy(), W0)  # the original array back
    assert max_abs(lora(x), y) < 1e-5


def test_init_is_peft_s():
    """B = 0 (the model starts as the pre-trained one); A ~ U(±1/sqrt(in)), kaiming-uniform with
    a = sqrt(5): gain sqrt(2/6), bound gain·sqrt(3/in) = 1/sqrt(in)."""
    mg.manual_seed(0)
    lora = mb.LoRALinear(mg.nn.Linear(400, 300), r=16)
    A = lora.lora_A.weight.numpy()
    assert not lora.lora_B.weight.numpy().any()
    bound = 1 / math.sqrt(400)
    assert np.abs(A).max() <= bound and np.abs(A).max() > 0.99 * bound  # 6400 draws fill U(±b)
    assert abs(A.std() - bound / math.sqrt(3)) < 0.02 * bound  # U(-b, b) has std b/sqrt(3)


@pytest.mark.parametrize("targets", ["query,value", "query,key,value,dense"])
def test_trainable_count_is_analytic(targets):
    cfg = mb.BertConfig.from_dict(tiny_config(num_labels=3).to_dict())
    model = P.apply_lora(mb.BertForSequenceClassification(cfg), targets, r=R)
    H, F, L, C = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_labels
    per_layer = {"query": R * 2 * H, "key": R * 2 * H, "value": R * 2 * H,
                 # "dense" is three Linears per layer (attention output, FFN in, FFN out)...
                 "dense": R * (H + H) + R * (H + F) + R * (F + H)}
    expected = sum(L * per_layer[t] for t in targets.split(",")) + H * C + C
    if "dense" in targets:
        expected += R * (H + H)  # ...and the pooler's, which PEFT's name matching also hits
    assert mb.count_trainable(model) == expected
    assert "trainable params" in P.trainable_summary(model)


def test_trainable_count_equals_peft_s():
    peft = pytest.importorskip("peft")
    hf = hf_model("BertForSequenceClassification", tiny_config(num_labels=3))
    config = peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["query", "value"],
                             task_type="SEQ_CLS")
    theirs = peft.get_peft_model(hf, config).get_nb_trainable_parameters()[0]
    cfg = mb.BertConfig.from_dict(tiny_config(num_labels=3).to_dict())
    ours = P.apply_lora(mb.BertForSequenceClassification(cfg), ["query", "value"], r=R)
    assert mb.count_trainable(ours) == theirs


def test_adapter_round_trip_and_peft_loads_it(tmp_path):
    ours, _ = lora_pair(tmp_path)
    base_dir = tmp_path / "base"
    P.save_adapter(ours, tmp_path / "adapter", base_model_name_or_path=str(base_dir))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["target_modules"]) == (R, ALPHA, ["query", "value"])
    from safetensors.numpy import load_file
    keys = set(load_file(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight" in keys
    assert "base_model.model.classifier.weight" in keys and len(keys) == 2 * 2 * 2 + 2

    batch = random_batch(97, 2, batch=3, seq=7, seed=2)
    ours.eval()
    with mg.no_grad():
        expected = ours(**batch).logits.numpy()
    fresh = P.load_adapter(mb.BertForSequenceClassification.from_pretrained(base_dir),
                           tmp_path / "adapter")
    with mg.no_grad():
        assert np.array_equal(fresh(**batch).logits.numpy(), expected)  # same weights, same math

    peft = pytest.importorskip("peft")
    hf_base = transformers.BertForSequenceClassification.from_pretrained(
        base_dir, attn_implementation="eager")
    theirs = peft.PeftModel.from_pretrained(hf_base, tmp_path / "adapter").eval()
    # float32 logits of a 2-layer random BERT (see test_model.FLOAT32_TOL): measured ~1e-6.
    assert max_abs(hf_forward(theirs, batch).logits, expected) < 1e-5


def test_merged_model_saves_as_plain_hf_checkpoint(tmp_path):
    ours, _ = lora_pair(tmp_path)
    batch = random_batch(97, 2, batch=3, seq=7, seed=3)
    ours.eval()
    with mg.no_grad():
        expected = ours(**batch).logits.numpy()
    before = {k: t.numpy().copy() for k, t in ours.state_dict().items()}
    rng = mg.get_rng_state()
    P.save_merged(ours, tmp_path / "saved")   # the model goes on training afterwards...
    assert len(P.lora_layers(ours)) == 4 and all(                      # ...unchanged, bit for bit
        np.array_equal(t.numpy(), before[k]) for k, t in ours.state_dict().items())
    assert mg.get_rng_state() == rng  # saving draws no random numbers (dropout masks unchanged)
    P.merge_and_unload(ours)
    assert not P.lora_layers(ours) and all(p.requires_grad for p in ours.parameters())
    ours.save_pretrained(tmp_path / "merged")
    for directory in ("saved", "merged"):
        hf = transformers.BertForSequenceClassification.from_pretrained(
            tmp_path / directory, attn_implementation="eager").eval()
        assert not any("lora" in k for k in hf.state_dict())
        # W + ΔW summed once vs x Wᵀ + (x Aᵀ)Bᵀ: float32 rounding only, measured ~1e-6.
        assert max_abs(hf_forward(hf, batch).logits, expected) < 1e-5, directory


def test_only_lora_and_head_change_in_training(tmp_path):
    ours, _ = lora_pair(tmp_path)
    before = {k: t.numpy().copy() for k, t in ours.state_dict().items()}
    opt = mg.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-2)
    batch = random_batch(97, 2, batch=4, seq=9)
    for _ in range(2):
        opt.zero_grad()
        ours(**batch, labels=np.array([0, 1, 2, 0])).loss.backward()
        opt.step()
    for k, t in ours.state_dict().items():
        changed = not np.array_equal(t.numpy(), before[k])
        assert changed == (".lora_" in k or k.startswith("classifier")), k


def test_unknown_target_is_an_error_listing_the_linear_names():
    cfg = mb.BertConfig.from_dict(tiny_config().to_dict())
    model = mb.BertForSequenceClassification(cfg)
    with pytest.raises(ValueError, match=r"\['qeury'\].*'dense'.*'query'"):
        P.apply_lora(model, "qeury,value")
    assert not P.lora_layers(model) and all(p.requires_grad for p in model.parameters())


def test_adapter_that_does_not_fit_names_the_keys(tmp_path):
    ours, _ = lora_pair(tmp_path)
    P.save_adapter(ours, tmp_path / "adapter")
    cfg = mb.BertConfig.from_dict(tiny_config(num_labels=3, hidden_size=48).to_dict())
    with pytest.raises(mb.CheckpointError, match=r"(?s)adapter_model.safetensors.*shape mismatches.*query"):
        P.load_adapter(mb.BertForSequenceClassification(cfg), tmp_path / "adapter")


# ---- inside the fine-tuning loop --------------------------------------------------------------------
def test_finetune_with_lora_resumes_exactly_and_saves_loadable_checkpoints(tmp_path, crashed_run):
    """`python -m mini_bert.finetune --lora-r 4 ...`: only A, B and the head train; best/ holds a
    merged checkpoint that transformers loads plus the adapter; a crashed run resumed from
    base + adapter ends bit for bit where an uninterrupted one does (dropout on everywhere)."""
    from safetensors.numpy import load_file
    from test_finetune import make_bert, make_tsv

    from mini_bert import finetune as FT

    base = make_bert(tmp_path / "base", None, 0.1)
    kw = dict(model=base, train=make_tsv(tmp_path / "t.tsv", 48, 2),
              dev=make_tsv(tmp_path / "d.tsv", 12, 2, 1), batch_size=8, max_steps=4, grad_accum=2,
              eval_every=2, lr=1e-2, max_length=16, seed=0, progress=False, plot=False,
              lora_r=4, lora_alpha=8.0, lora_dropout=0.1)
    straight = FT.train(FT.TrainConfig(output=str(tmp_path / "straight"), **kw))

    crashed_run(FT.TrainConfig(output=str(tmp_path / "broken"), **kw), 3)
    FT.train(FT.TrainConfig(output=str(tmp_path / "broken"), resume=str(tmp_path / "broken"), **kw))
    for name in ("adapter/adapter_model.safetensors", "model.safetensors"):
        a, b = (load_file(tmp_path / run / "last" / name) for run in ("straight", "broken"))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name

    # The frozen weights are the base's, bit for bit; the LoRA targets moved by ΔW.
    merged = load_file(f"{straight['best_dir']}/model.safetensors")
    for k, v in load_file(f"{base}/model.safetensors").items():
        moved = not np.array_equal(merged["bert." + k], v)
        assert moved == k.endswith(("query.weight", "value.weight")), k

    batch = random_batch(len(open(f"{base}/vocab.txt").read().split()), 2, batch=3, seq=6)
    hf = transformers.BertForSequenceClassification.from_pretrained(straight["best_dir"]).eval()
    ours = P.load_adapter(mb.BertForSequenceClassification.from_pretrained(
        base, num_labels=1, problem_type="multi_label_classification"),
        f"{straight['best_dir']}/adapter").eval()
    with mg.no_grad():
        expected = ours(**batch).logits
    assert max_abs(hf_forward(hf, batch).logits, expected) < 1e-5  # float32 rounding (see above)

    assert FT.parse_args(["--lora-r", "8", "--lora-targets", "query,key", "--lora-alpha", "16",
                          "--lora-dropout", "0.05"]).lora_targets == "query,key"
