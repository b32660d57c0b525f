"""Prompt tuning (mini_bert.prompt_tuning, re-exported by mini_bert.peft) against the ``peft``
package on HF's BertForSequenceClassification.

Oracles, all computed inside the tests: peft's ``get_peft_model(PromptTuningConfig(SEQ_CLS))``
around the same HF weights with the same prompt values (its logits, its gradients of the prompt
and the head, its trainable count, its TEXT init), peft's ``PeftModel.from_pretrained`` loading
the adapter we save, and our loader reading the adapter peft saves.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from hf_oracle import hf_model, max_abs, random_batch, randomize, save_hf, tiny_config, torch, transformers

import mini_bert as mb
import minigrad as mg
from mini_bert import peft as P

peft = pytest.importorskip("peft")
N = 5  # virtual tokens


def peft_config(**kw):
    return peft.PromptTuningConfig(task_type=peft.TaskType.SEQ_CLS, num_virtual_tokens=N, **kw)


def pair(tmp_path, dtype=mg.float32, seed: int = 3):
    """(ours wrapped, peft's PeftModel), same base weights, same random prompt (std 0.5: the
    N(0, 1) default would swamp LayerNorm's input less visibly; any values will do)."""
    hf = randomize(hf_model("BertForSequenceClassification", tiny_config(num_labels=3)))
    ours = P.apply_prompt_tuning(mb.BertForSequenceClassification.from_pretrained(
        save_hf(hf, tmp_path / "base")), N).eval()
    prompt = np.random.default_rng(seed).normal(0, 0.5, (N, 32)).astype(np.float32)
    ours.prompt_embeddings._data = prompt.copy()
    theirs = peft.get_peft_model(hf, peft_config()).eval()
    with torch.no_grad():
        theirs.prompt_encoder["default"].embedding.weight.copy_(torch.tensor(prompt))
    if dtype == mg.float64:
        ours.to(dtype=mg.float64)
        theirs.double()
    return ours, theirs


def torch_batch(batch: dict) -> dict:
    return {k: torch.tensor(v) for k, v in batch.items()}


@pytest.mark.parametrize("dtype", [mg.float64, mg.float32])
def test_logits_and_gradients_match_peft(tmp_path, dtype):
    """Same logits, loss and gradients of the prompt and the head as peft, with padding and
    token types in the batch (so the mask and the types must be extended as peft does)."""
    ours, theirs = pair(tmp_path, dtype)
    batch, labels = random_batch(97, 2, batch=4, seq=9), np.array([0, 2, 1, 2])
    out = ours(**batch, labels=labels)
    out.loss.backward()
    ref = theirs(**torch_batch(batch), labels=torch.tensor(labels))
    ref.loss.backward()
    # float64: the same math on both sides, rounding ~1e-16: 1e-10 has ~1e6x headroom.
    # float32: O(1) values through 2 layers; measured differences ~1e-6, so 2e-5 leaves margin.
    tol = 1e-10 if dtype == mg.float64 else 2e-5
    assert max_abs(ref.logits, out.logits.numpy()) < tol
    assert abs(ref.loss.item() - out.loss.item()) < tol
    their_prompt = theirs.prompt_encoder["default"].embedding.weight
    assert max_abs(their_prompt.grad, ours.prompt_embeddings.grad.numpy()) < tol
    assert np.abs(ours.prompt_embeddings.grad.numpy()).max() > 1e-3  # a real gradient compared
    head = theirs.base_model.classifier.modules_to_save["default"]
    assert max_abs(head.weight.grad, ours.base_model.classifier.weight.grad.numpy()) < tol
    for name, p in ours.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


def test_trainable_parameters_are_peft_s(tmp_path):
    ours, theirs = pair(tmp_path)
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {"prompt_embeddings", "base_model.classifier.weight", "base_model.classifier.bias"}
    assert P.count_trainable(ours) == theirs.get_nb_trainable_parameters()[0]


def test_text_init_is_peft_s(tmp_path):
    """init="text": the embeddings of the text's ids, [CLS] and [SEP] included, repeated to N."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(92)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path / "tok")
    hf = randomize(hf_model("BertForSequenceClassification", tiny_config(num_labels=2)))
    ours = P.apply_prompt_tuning(mb.BertForSequenceClassification.from_pretrained(
        save_hf(hf, tmp_path / "base")), N, "text", "w7 w8", mb.BertTokenizer(str(tmp_path / "vocab.txt")))
    theirs = peft.get_peft_model(hf, peft_config(
        prompt_tuning_init="TEXT", prompt_tuning_init_text="w7 w8",
        tokenizer_name_or_path=str(tmp_path / "tok")))
    expected = theirs.prompt_encoder["default"].embedding.weight.detach().numpy()
    assert np.array_equal(ours.prompt_embeddings.numpy(), expected)


def test_our_adapter_loads_in_peft_and_peft_s_in_ours(tmp_path):
    ours, _ = pair(tmp_path)
    rng = np.random.default_rng(5)  # a "trained" head, so that loading it is seen
    ours.base_model.classifier.weight._data = rng.normal(0, 0.5, (3, 32)).astype(np.float32)
    P.save_adapter(ours, str(tmp_path / "ours"), str(tmp_path / "base"))
    saved = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "PROMPT_TUNING" and saved["modules_to_save"] == ["classifier"]
    batch = random_batch(97, 2, batch=3, seq=7)
    base = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "base").eval()
    theirs = peft.PeftModel.from_pretrained(base, tmp_path / "ours").eval()
    with torch.no_grad(), mg.no_grad():
        # float32 on both sides, measured ~1e-6 (as above).
        assert max_abs(theirs(**torch_batch(batch)).logits, ours(**batch).logits.numpy()) < 2e-5

    hf = randomize(hf_model("BertForSequenceClassification", tiny_config(num_labels=3)), seed=1)
    torch.manual_seed(2)
    trained = peft.get_peft_model(hf, peft_config()).eval()
    with torch.no_grad():
        trained.base_model.classifier.modules_to_save["default"].weight.normal_(0, 0.5)
    trained.save_pretrained(tmp_path / "peft")
    fresh = mb.BertForSequenceClassification.from_pretrained(save_hf(hf, tmp_path / "base1"))
    loaded = P.load_adapter(fresh, str(tmp_path / "peft")).eval()
    assert isinstance(loaded, P.PromptTuningModel) and loaded.base_model is fresh
    with torch.no_grad(), mg.no_grad():
        assert max_abs(trained(**torch_batch(batch)).logits, loaded(**batch).logits.numpy()) < 2e-5


def tiny_ours():
    return mb.BertForSequenceClassification(mb.BertConfig(
        vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37))


def test_bad_use_is_a_clear_error():
    model = tiny_ours()
    with pytest.raises(ValueError, match="positive integer"):
        P.apply_prompt_tuning(model, 0)
    with pytest.raises(ValueError, match="init_text"):
        P.apply_prompt_tuning(model, 3, "text")
    with pytest.raises(ValueError, match="not both"):
        P.apply_prompt_tuning(P.apply_lora(model), 3)
    wrapped = P.apply_prompt_tuning(tiny_ours(), 3)
    with pytest.raises(ValueError, match="BertFor"):
        P.apply_prompt_tuning(wrapped, 3)
    with pytest.raises(ValueError, match=r"\[batch, seq_len\] attention_mask"):
        wrapped(np.ones((1, 4), np.int64), attention_mask=np.ones((1, 4, 4), np.int64))


# ---- inside the fine-tuning loop --------------------------------------------------------------------
def test_finetune_with_prompt_tuning_resumes_exactly_and_saves_what_peft_loads(tmp_path, crashed_run):
    """`python -m mini_bert.finetune --prompt-tuning 4 ...`: only the prompt and the head train;
    a crashed run resumed from base + adapter ends bit for bit where an uninterrupted one does;
    best/ + best/adapter load in transformers + peft and give our logits."""
    from safetensors.numpy import load_file
    from test_finetune import make_bert, make_tsv

    from mini_bert import finetune as FT

    base = make_bert(tmp_path / "base", None, 0.1)
    kw = dict(model=base, train=make_tsv(tmp_path / "t.tsv", 32, 2),
              dev=make_tsv(tmp_path / "d.tsv", 8, 2, 1), batch_size=8, max_steps=4, eval_every=2,
              lr=1e-2, max_length=16, seed=0, progress=False, plot=False, prompt_tuning=4)
    straight = FT.train(FT.TrainConfig(output=str(tmp_path / "straight"), **kw))
    crashed_run(FT.TrainConfig(output=str(tmp_path / "broken"), **kw), 3)
    FT.train(FT.TrainConfig(output=str(tmp_path / "broken"), resume=str(tmp_path / "broken"), **kw))
    a, b = (load_file(tmp_path / run / "last/adapter/adapter_model.safetensors") for run in ("straight", "broken"))
    assert a.keys() == {"prompt_embeddings", "base_model.classifier.weight", "base_model.classifier.bias"}
    assert all(np.array_equal(a[k], b[k]) for k in a)
    saved = load_file(f"{straight['best_dir']}/model.safetensors")  # the encoder did not move
    assert all(np.array_equal(saved["bert." + k], v) for k, v in load_file(f"{base}/model.safetensors").items())

    batch = random_batch(len(open(f"{base}/vocab.txt").read().split()), 2, batch=3, seq=6)
    hf = transformers.BertForSequenceClassification.from_pretrained(straight["best_dir"]).eval()
    theirs = peft.PeftModel.from_pretrained(hf, f"{straight['best_dir']}/adapter").eval()
    ours = P.load_adapter(mb.BertForSequenceClassification.from_pretrained(straight["best_dir"]),
                          f"{straight['best_dir']}/adapter").eval()
    with torch.no_grad(), mg.no_grad():
        assert max_abs(theirs(**torch_batch(batch)).logits, ours(**batch).logits.numpy()) < 1e-5


@pytest.mark.parametrize("flags, message", [
    (["--prompt-tuning", "4", "--lora-r", "8"], "--lora-r and --prompt-tuning"),
    (["--prompt-tuning", "4", "--head-only"], "give only one"),
    (["--prompt-init-text", "great movie"], "needs --prompt-tuning"),
    (["--prompt-tuning", "4", "--adversarial", "fgm"], "not supported with --prompt-tuning"),
    (["--prompt-tuning", "-1"], "--prompt-tuning must be >= 0"),
    (["--augment-copies", "3"], "need --augment"),
])
def test_cli_refuses_contradictory_flags(flags, message, capsys):
    from mini_bert import finetune as FT

    assert FT.main(flags + ["--output", "/nonexistent/never-written"]) == 2
    assert message in capsys.readouterr().err
