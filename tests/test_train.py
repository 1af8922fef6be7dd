"""LoRA tuning, adapter save/load round trips, resumable checkpoints (tiny random Llama)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from llmrec.adapter import AdapterError, load_adapter, save_adapter
from llmrec.model import LoraSettings, add_lora, verbalizer_for
from llmrec.prompts import load_template
from llmrec.scoring import encode_prompts, score_encoded
from llmrec.train import TrainSettings, build_training_example, train_lora

TITLES = ["Toy Story (1995)", "Heat (1995)", "Casino (1995)", "GoldenEye (1995)", "Yes, Madam (1985)"]


def _data(tok, n=16):
    tpl = load_template("tallrec")
    prompts, labels = [], []
    for i in range(n):
        liked = TITLES[: 1 + i % 4]
        prompts.append(tpl.render({"liked": liked, "disliked": TITLES[4:], "target": TITLES[i % 5]}))
        labels.append(int(len(liked) >= 3))  # learnable from the prompt length/content
    verb = verbalizer_for(tpl, tok, prompts[0])
    return tpl, verb, encode_prompts(tok, prompts), labels


def test_training_example_masks_prompt(tiny_tokenizer):
    tpl, verb, ids, labels = _data(tiny_tokenizer, 2)
    ex = build_training_example(ids[0], 1, verb, "answer", 4096)
    n = len(ids[0])
    assert ex["input_ids"][:n] == ids[0] and ex["labels"][:n] == [-100] * n
    assert ex["labels"][n:] == verb.target_ids[0] and ex["input_ids"][n] == verb.token_ids[0]
    whole = build_training_example(ids[0], 0, verb, "prompt", 4096)
    assert whole["labels"] == whole["input_ids"] and whole["input_ids"][n] == verb.token_ids[1]
    with pytest.raises(ValueError, match=r"^max_length 5: a training example has \d+ tokens \(prompt \+ answer\); raise it"):
        build_training_example(ids[0], 1, verb, "answer", 5)
    with pytest.raises(ValueError, match="label 2"):
        build_training_example(ids[0], 2, verb, "answer", 4096)


def test_fresh_lora_changes_nothing(tiny_model, tiny_tokenizer):
    tpl, verb, ids, _ = _data(tiny_tokenizer, 4)
    before = score_encoded(tiny_model, ids, verb.token_ids)
    peft = add_lora(tiny_model, LoraSettings())
    np.testing.assert_allclose(score_encoded(peft, ids, verb.token_ids), before, atol=1e-7)


def test_train_save_reload_identical(tiny_model, tiny_tokenizer, tiny_model_dir, tmp_path):
    tpl, verb, ids, labels = _data(tiny_tokenizer)
    before = score_encoded(tiny_model, ids, verb.token_ids)[:, 0]
    st = TrainSettings(output_dir=str(tmp_path / "work"), epochs=3, batch_size=4, learning_rate=5e-3,
                       precision="fp32", progress=False, patience=0)
    res = train_lora(tiny_model, tiny_tokenizer, verb, ids, labels, st, LoraSettings(rank=4, alpha=8),
                     val_ids=ids[:8], val_labels=labels[:8])
    after = score_encoded(res.model, ids, verb.token_ids)[:, 0]
    assert np.abs(after - before).max() > 1e-3, "training had no effect"
    assert len(res.val_auc_history) == 3 and res.best_val_auc == max(res.val_auc_history)
    # the Trainer's evaluation (shared instruction head computed once) against plain full-prompt scoring of
    # the best checkpoint, which load_best_model_at_end restored
    assert res.best_val_auc == pytest.approx(roc_auc_score(labels[:8], after[:8]), abs=1e-9)
    out = save_adapter(res.model, tmp_path / "adapter", base_model=str(tiny_model_dir), template=tpl,
                       verbalizer=verb, metrics={"x": 1})
    meta = json.loads((out / "llmrec.json").read_text())
    assert meta["template"]["sha256"] == tpl.sha256 and meta["verbalizer"]["token_ids"] == verb.token_ids
    assert (out / "adapter_model.safetensors").stat().st_size > 1000
    for merge in (False, True):
        model, tok, tpl2, verb2, _ = load_adapter(out, merge=merge)
        np.testing.assert_allclose(score_encoded(model, ids, verb2.token_ids)[:, 0], after, atol=1e-5)
    # a different template is refused unless allowed
    with pytest.raises(AdapterError, match="tuned with template 'tallrec'"):
        load_adapter(out, template=load_template("tallrec-chat"))
    load_adapter(out, template=load_template("tallrec-chat"), allow_template_mismatch=True)


def test_resume_from_checkpoint(tiny_tokenizer, tmp_path):
    from tests.conftest import make_tiny_llama

    tpl, verb, ids, labels = _data(tiny_tokenizer, 8)
    st = TrainSettings(output_dir=str(tmp_path / "w"), epochs=2, batch_size=4, learning_rate=5e-3,
                       precision="fp32", progress=False)
    full = train_lora(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, verb, ids, labels, st)
    ref = score_encoded(full.model, ids, verb.token_ids)
    # simulate an interrupted run: keep only the epoch-1 checkpoint, rerun the same command
    ck = sorted((tmp_path / "w" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    shutil.rmtree(ck[-1])
    again = train_lora(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, verb, ids, labels, st)
    assert again.epochs_run == 2
    np.testing.assert_allclose(score_encoded(again.model, ids, verb.token_ids), ref, atol=1e-5)


def test_empty_or_corrupt_adapter_is_refused(tiny_model, tiny_tokenizer, tiny_model_dir, tmp_path):
    tpl, verb, ids, _ = _data(tiny_tokenizer, 2)
    peft = add_lora(tiny_model, LoraSettings())  # lora_B == 0: never trained
    with pytest.raises(AdapterError, match="never trained"):
        save_adapter(peft, tmp_path / "a", base_model=str(tiny_model_dir), template=tpl, verbalizer=verb)
    assert not (tmp_path / "a").exists()
    from peft import LoraConfig, get_peft_model
    from tests.conftest import make_tiny_llama

    good = get_peft_model(make_tiny_llama(len(tiny_tokenizer)),
                          LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    d = save_adapter(good, tmp_path / "b", base_model=str(tiny_model_dir), template=tpl, verbalizer=verb)
    before = (d / "adapter_model.safetensors").read_bytes()
    # a failed save over it leaves the old adapter intact
    with pytest.raises(AdapterError):
        save_adapter(peft, d, base_model=str(tiny_model_dir), template=tpl, verbalizer=verb)
    assert (d / "adapter_model.safetensors").read_bytes() == before
    # a user's folder that is not an adapter is never wiped by a save
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds no llmrec.json"):
        save_adapter(good, tmp_path / "mine", base_model=str(tiny_model_dir), template=tpl, verbalizer=verb)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (d / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(AdapterError, match="corrupt"):
        load_adapter(d)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_adapter(tmp_path / "missing")


def test_settings_validation():
    with pytest.raises(ValueError, match="lora rank 0"):
        LoraSettings(rank=0)
    with pytest.raises(ValueError, match="loss_on 'all'"):
        TrainSettings(output_dir="x", loss_on="all")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainSettings(output_dir="x", learning_rate=0)
    with pytest.raises(ValueError, match="lr_scheduler 'cosin': expected one of .*cosine"):
        TrainSettings(output_dir="x", lr_scheduler="cosin")
    with pytest.raises(ValueError, match="warmup_ratio 1.0"):
        TrainSettings(output_dir="x", warmup_ratio=1.0)
    assert TrainSettings(output_dir="x", lr_scheduler="constant").lr_scheduler == "constant"


def test_answer_only_loss_equals_full_vocab_loss(tiny_model, tiny_tokenizer, tmp_path):
    """The trainer's sparse-position loss == transformers' own shifted cross entropy over all positions."""
    import torch

    from llmrec.train import AnswerCollator, make_trainer_class

    tpl, verb, ids, labels = _data(tiny_tokenizer, 5)
    feats = [build_training_example(p, y, verb, "answer", 4096) for p, y in zip(ids, labels)]
    batch = AnswerCollator(tiny_tokenizer.pad_token_id)(feats)
    from transformers import TrainingArguments

    trainer = make_trainer_class()(model=tiny_model, args=TrainingArguments(str(tmp_path), report_to="none",
                                                                             use_cpu=True))
    with torch.no_grad():
        ours = trainer.compute_loss(tiny_model, dict(batch))
        ref = tiny_model(**batch).loss
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_checkpoints_of_another_run_are_not_resumed(tiny_tokenizer, tmp_path):
    from tests.conftest import make_tiny_llama

    tpl, verb, ids, labels = _data(tiny_tokenizer, 8)
    st = TrainSettings(output_dir=str(tmp_path / "w"), epochs=1, batch_size=4, precision="fp32", progress=False)
    train_lora(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, verb, ids, labels, st)
    other = TrainSettings(output_dir=str(tmp_path / "w"), epochs=1, batch_size=4, precision="fp32", progress=False,
                          seed=1)
    with pytest.raises(ValueError, match="different run .*seed"):
        train_lora(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, verb, ids, labels, other)
    with pytest.raises(ValueError, match="different run .*data_sha256"):
        train_lora(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, verb, ids[:4], labels[:4], st)


def test_hand_edited_template_hash_is_refused(tiny_tokenizer, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from tests.conftest import make_tiny_llama

    tpl, verb, ids, _ = _data(tiny_tokenizer, 2)
    good = get_peft_model(make_tiny_llama(len(tiny_tokenizer)),
                          LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    d = save_adapter(good, tmp_path / "a", base_model=str(tiny_model_dir), template=tpl, verbalizer=verb)
    meta = json.loads((d / "llmrec.json").read_text())
    meta["template"]["sha256"] = "0" * 64
    (d / "llmrec.json").write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match="does not match its stored template source"):
        load_adapter(d)


def test_trainer_class_and_collator_are_public():
    """The Trainer subclass, collator and runner are public API of llmrec.train, shared by the rerankers."""
    import llmrec.rerank.train as rerank_train
    import llmrec.train as train

    assert {"AnswerCollator", "make_trainer_class", "run_trainer"} <= set(train.__all__)
    # the rerankers tune through the one runner (which builds the Trainer subclass and the collator)
    assert rerank_train.run_trainer is train.run_trainer
    import inspect

    src = inspect.getsource(train.run_trainer)
    assert "make_trainer_class()" in src and "AnswerCollator(" in src
    assert train.make_trainer_class.__doc__ and train.AnswerCollator.__doc__
    batch = train.AnswerCollator(pad_id=7)([{"input_ids": [1, 2, 3], "labels": [-100, -100, 3]},
                                            {"input_ids": [4], "labels": [4]}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 7, 7]]
    assert batch["labels"].tolist() == [[-100, -100, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert train.make_trainer_class().__name__ == "VerbalizerAUCTrainer"


def test_wrapping_with_lora_does_not_warn(tiny_model_dir):
    """peft's read of transformers 5's deprecated ``is_gradient_checkpointing`` is silenced (only that)."""
    import warnings

    from llmrec.model import LoraSettings, add_lora, load_base_model

    model, _ = load_base_model(str(tiny_model_dir))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_lora(model, LoraSettings())
        warnings.warn("still shown", FutureWarning)  # the filter is scoped to the one message
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "is_gradient_checkpointing" in m], messages
    assert "still shown" in messages
