"""Training with collaborative tokens through the Trainer path (tiny random Llama, fp32): which parameters move
in each stage, alignment data honesty, and the scorer's slots."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmrec.collab.data import CollabModel
from llmrec.collab.train import CollabScorer, alignment_samples, attach, projector_module, tune_stage
from llmrec.data.core import Catalog
from llmrec.model import LoraSettings
from llmrec.prompts.template import Template
from llmrec.retrieval.sasrec import SASRec, SASRecConfig
from llmrec.samples.tallrec import Sample
from llmrec.train import TrainSettings

from ..conftest import make_tiny_llama

N = 32
ITEMS = [str(i) for i in range(N)]
TPL = Template.from_string(
    "---\nname: tiny-hybrid\ntask: pointwise\nformat: alpaca\nverbalizer: [\"Yes\", \"No\"]\n"
    "targets: [\"Yes.\", \"No.\"]\nvariables: [history, target, target_id]\n---\n"
    "{% block instruction %}Given the user's preference, answer \"Yes.\" or \"No.\".{% endblock %}\n"
    "{% block input %}User: {{ user_token() }}\nUser Preference: {% for h in history if h.liked %}\"{{ h.title }}\" "
    "{{ item_token(h.item_id) }}{% if not loop.last %}, {% endif %}{% endfor %}\nWhether the user will like the "
    "target movie \"{{ target }}\" {{ item_token(target_id) }}?{% endblock %}")


@pytest.fixture(scope="module")
def world():
    g = np.random.default_rng(0)
    seqs = {f"u{u}": [ITEMS[(3 * u + t) % (N - 1)] for t in range(14)] for u in range(20)}  # last item: cold
    idx = {i: j for j, i in enumerate(ITEMS[: N - 1])}
    sas = SASRec(SASRecConfig(hidden=8, max_len=16, epochs=2, threads=1)).fit(
        [np.array([idx[i] for i in s]) for s in seqs.values()], N - 1, log=None)
    V = np.concatenate([sas.item_vectors(), g.normal(size=(1, 8)).astype(np.float32)])
    cm = CollabModel(sas, ITEMS[: N - 1], ITEMS, V, np.array([True] * (N - 1) + [False]), excluded=["test-user"])
    cat = Catalog.from_records([{"item_id": i, "title": f"Film {i} ({1990 + int(i)})", "year": 1990 + int(i),
                                 "genres": ["Drama"]} for i in ITEMS])
    return cm, seqs, cat


def _labelled(g, n):
    out = []
    for k in range(n):
        h = [ITEMS[int(x)] for x in g.choice(N, 10, replace=False)]
        r = [float(x) for x in g.integers(1, 6, 10)]
        out.append(Sample("test-user", h, r, ITEMS[int(g.integers(N))], 4.0 if k % 2 else 2.0, k % 2))
    return out


def test_alignment_samples_are_implicit_next_items(world):
    cm, seqs, _ = world
    al = alignment_samples(cm, seqs, 30, seed=1, negatives=1)
    assert len(al) == 60 and sum(s.label for s in al) == 30
    for s in al:
        seq = seqs[s.user_id][:-1]  # leave-one-out train part
        assert all(r == 5.0 for r in s.history_ratings)  # no rating read
        pos = [t for t in range(10, len(seq)) if seq[t - 10:t] == s.history]
        assert pos, "history is a window of the user's training sequence"
        if s.label:
            assert any(seq[t] == s.target for t in pos)
        else:
            assert s.target not in seqs[s.user_id]  # a hard negative the user never interacted with
    with pytest.raises(ValueError, match="valid/test users"):
        alignment_samples(cm, {"test-user": seqs["u0"]}, 3)


def test_stages_move_exactly_the_chosen_parameters(world, tiny_tokenizer, tmp_path):
    cm, seqs, cat = world
    model = make_tiny_llama(len(tiny_tokenizer))
    peft, slots = attach(model, cm, LoraSettings(), seed=0)
    scorer = CollabScorer(peft, tiny_tokenizer, TPL, slots, dtype="float32")
    P = scorer.encode_samples(_labelled(np.random.default_rng(0), 2), cat)
    assert all(sum(i >= slots.vocab for i in ids) >= 3 for ids in P.input_ids)  # user + items + target

    def snap(m):
        proj = {k: v.detach().clone() for k, v in projector_module(m).state_dict().items()}
        lora = {k: v.detach().clone() for k, v in m.named_parameters() if "lora_B" in k}
        return proj, lora

    settings = lambda d, ep=2: TrainSettings(output_dir=str(tmp_path / d), epochs=ep, batch_size=4, progress=False,
                                              patience=0, learning_rate=1e-2)
    g = np.random.default_rng(1)
    train = alignment_samples(cm, seqs, 6, seed=0)
    p0, l0 = snap(peft)
    st = tune_stage(peft, scorer, train, [], cat, settings("align"), train_lora_params=True, train_projector=True)
    p1, l1 = snap(st.model)
    assert any(not torch.equal(p0[k], p1[k]) for k in p0)  # projector trained
    assert any(not torch.equal(l0[k], l1[k]) for k in l0)  # LoRA trained
    # CoLLM step 2: projector only, LoRA frozen (checked on the weights, not on flags)
    st2 = tune_stage(st.model, scorer, _labelled(g, 8), _labelled(g, 8), cat, settings("proj"),
                     train_lora_params=False, train_projector=True)
    p2, l2 = snap(st2.model)
    assert all(torch.equal(l1[k], l2[k]) for k in l1)
    assert any(not torch.equal(p1[k], p2[k]) for k in p1)
    # text-only step: LoRA only, the projector untouched
    st3 = tune_stage(st2.model, scorer, _labelled(g, 8), [], cat, settings("lora"), train_projector=False)
    p3, l3 = snap(st3.model)
    assert all(torch.equal(p2[k], p3[k]) for k in p2)
    assert any(not torch.equal(l2[k], l3[k]) for k in l2)
    assert st3.record["trainable"]["projector"] == 0 and st3.record["trainable"]["lora"] > 0
    with pytest.raises(ValueError, match="nothing to train"):
        tune_stage(st3.model, scorer, train, [], cat, settings("none"), train_lora_params=False, train_projector=False)
    # merged model scores the same as the peft one (the projector copy survives merge_and_unload)
    before = scorer.score(P)
    scorer.model = st3.model.merge_and_unload()
    np.testing.assert_allclose(scorer.score(P), before, atol=1e-5)


def test_adapter_carries_projector_and_refuses_another_collab_model(world, tiny_model_dir, tmp_path):
    from llmrec.adapter import AdapterError, load_adapter
    from llmrec.collab.adapter import save_collab_adapter
    from llmrec.collab.tokens import slot_table
    from llmrec.model import load_base_model

    cm, seqs, cat = world
    model, tok = load_base_model(str(tiny_model_dir))
    peft, slots = attach(model, cm, LoraSettings(), seed=0)
    with torch.no_grad():  # a trained-looking state: projector and LoRA away from their init
        for name, p in peft.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(0.05 * torch.randn_like(p))
    scorer = CollabScorer(peft, tok, TPL, slots, dtype="float32")
    samples = _labelled(np.random.default_rng(3), 6)
    P = scorer.encode_samples(samples, cat)
    want = scorer.score(P)
    out = save_collab_adapter(peft, tmp_path / "ad", collab=cm, base_model=str(tiny_model_dir), template=TPL,
                              verbalizer=scorer.verbalizer)
    assert (out / "collab_projector.safetensors").is_file() and (out / "collab" / "collab.json").is_file()
    model2, tok2, tpl2, verb2, meta = load_adapter(out, dtype="float32")
    slots2 = slot_table(model2)
    assert meta["collab"]["sha256"] == cm.sha256 and verb2.token_ids == scorer.verbalizer.token_ids
    assert meta["loaded_collab"] == {"sha256": cm.sha256, "from": "llmrec.json"} and slots2.collab.sha256 == cm.sha256
    sc2 = CollabScorer(model2, tok2, tpl2, slots2, dtype="float32", verbalizer=verb2)
    got = sc2.score(sc2.encode_samples(samples, cat))
    np.testing.assert_allclose(got, want, atol=1e-5)
    other = CollabModel(cm.sasrec, cm.sasrec_items, cm.catalog_items, cm.item_vectors * 2, cm.warm, cm.excluded)
    with pytest.raises(AdapterError, match="collab.sha256"):
        load_adapter(out, collab=other)


def _lora_a(peft) -> list[torch.Tensor]:
    return [p.detach().clone() for n, p in peft.named_parameters() if "lora_A" in n]


def test_lora_init_follows_the_run_seed_not_the_process_rng(world, tiny_tokenizer):
    """torch's default generator starts from a different seed in every process (torch 2.13), and peft draws LoRA A
    from it: without a seed, two runs of one command started from different LoRA weights (test AUC 0.619 vs 0.682
    for one seed). ``torch.seed()`` stands in for a fresh process. The caller's RNG stream is left untouched."""
    from llmrec.model import add_lora

    cm, _, _ = world

    def build(seed, via_attach):
        model = make_tiny_llama(len(tiny_tokenizer))
        torch.seed()  # a fresh process's random start
        state = torch.get_rng_state()
        peft = attach(model, cm, LoraSettings(), seed=seed)[0] if via_attach else add_lora(model, LoraSettings(), seed=seed)
        assert torch.equal(torch.get_rng_state(), state)  # the caller's stream is where it was
        return _lora_a(peft)

    for via_attach in (True, False):
        a, b, c = build(3, via_attach), build(3, via_attach), build(4, via_attach)
        assert len(a) == 4 and all(x.abs().sum() > 0 for x in a)  # q, v in 2 layers; kaiming init, not zeros
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        assert not any(torch.equal(x, z) for x, z in zip(a, c))


@pytest.mark.integration
def test_llmrec_train_with_collab_tokens_end_to_end(tiny_model_dir, tiny_collab_dir, tmp_path, capsys, monkeypatch):
    """`llmrec train` with no template runs the default recipe (tallrec-last5-taste) with the default collaborative
    model, and `--template tallrec-last5-taste --collab DIR` with another (tiny model, a small collaborative model
    over the real catalogue): LoRA and the projector both move, the adapter carries the collaborative model (same
    content hash) and the row form, and `llmrec eval --adapter` scores with it. Wrong combinations are refused
    before any model loads, naming the flag."""
    import json

    import llmrec.collab.data
    from llmrec.cli import main
    from llmrec.collab.tokens import new_projector
    from llmrec.model import load_base_model

    from ..conftest import cli_fails

    cm = CollabModel.load(tiny_collab_dir)
    sas, warm, items, V = cm.sasrec, cm.sasrec_items, cm.catalog_items, cm.item_vectors
    cdir = tmp_path / "cm"
    cm.save(cdir)
    base = ["train", "--base-model", str(tiny_model_dir), "--shots", "8", "--epochs", "1", "--val-size", "8",
            "--batch-size", "4", "--precision", "fp32"]
    # no --template, no --collab: the default recipe with the default collaborative model (here: the tiny one)
    asked = []
    monkeypatch.setattr(llmrec.collab.data, "default_collab_dir", lambda sha, *a: asked.append(sha) or cdir)
    main(base + ["--out", str(tmp_path / "default")])
    meta = json.loads((tmp_path / "default" / "llmrec.json").read_text())
    assert meta["template"]["name"] == "tallrec-last5-taste" and meta["collab"]["sha256"] == cm.sha256
    assert meta["collab"]["pair_form"] == "score" and len(asked) >= 1
    assert "--collab" in cli_fails(base + ["--template", "tallrec-last5", "--collab", str(cdir),
                                           "--out", str(tmp_path / "x")], capsys)  # a text template takes no model
    # the adapter replaces --out atomically and its checkpoints (--out + .work) are deleted: a model in either is
    # refused before anything is fitted or trained
    for c, o in ((tmp_path / "same", tmp_path / "same"), (tmp_path / "nest" / "cm", tmp_path / "nest"),
                 (tmp_path / "ad2.work" / "cm", tmp_path / "ad2")):
        assert "nested with, --out" in cli_fails(base + ["--collab", str(c), "--out", str(o)], capsys)
        assert not c.exists()
    assert "--pair-form 'sum'" in cli_fails(base + ["--template", "tallrec-last5-taste", "--collab", str(cdir),
                                                    "--pair-form", "sum", "--out", str(tmp_path / "x")], capsys)
    (tmp_path / "afile").write_text("x")
    assert "--collab " in cli_fails(base + ["--template", "tallrec-last5-taste", "--collab", str(tmp_path / "afile"),
                                            "--out", str(tmp_path / "x")], capsys)
    small = CollabModel(sas, warm, warm, V[:60], np.ones(60, bool)).save(tmp_path / "small")  # misses most items
    err = cli_fails(base + ["--template", "tallrec-last5-taste", "--collab", str(small), "--out", str(tmp_path / "x")],
                    capsys)
    assert "--collab " in err and "not in this collaborative model's catalogue" in err
    # alpaca records are text: refused before the base model loads (a missing base model would fail later)
    alp = tmp_path / "a.json"
    alp.write_text(json.dumps([{"instruction": "x", "input": "User Preference: \"A\"\nUser Unpreference: \n"
                                "Whether the user will like the target movie \"B\"?", "output": "Yes."}]))
    err = cli_fails(["train", "--base-model", str(tmp_path / "no-such-model"), "--template", "tallrec-last5-taste",
                     "--collab", str(cdir), "--train-json", str(alp), "--augment", "none", "--out", str(tmp_path / "x")],
                    capsys)
    assert err.startswith("llmrec: error: --train-json ") and "alpaca records are text only" in err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "f.txt").write_text("x")
    assert "not a collaborative model folder" in cli_fails(
        base + ["--template", "tallrec-last5-taste", "--collab", str(tmp_path / "junk"), "--out", str(tmp_path / "x")],
        capsys)
    out = tmp_path / "ad"
    main(base + ["--template", "tallrec-last5-taste", "--collab", str(cdir), "--pair-form", "product",
                 "--out", str(out)])
    meta = json.loads((out / "llmrec.json").read_text())
    assert meta["collab"]["sha256"] == cm.sha256 and meta["collab"]["pair_form"] == "product"
    assert meta["template"]["name"] == "tallrec-last5-taste" and meta["train"]["train_samples"] == 16  # 8 + mirror
    from safetensors.torch import load_file

    from llmrec.collab.projector import PROJECTOR_FILE, load_projector

    trained, sha = load_projector(out / PROJECTOR_FILE, expect_collab_sha256=cm.sha256)
    fresh, _ = load_base_model(str(tiny_model_dir), dtype="float32")
    init = new_projector(fresh, cm, seed=0)  # attach() seeds the projector with the run's seed (0)
    moved = max(float((trained.state_dict()[k] - v).abs().max()) for k, v in init.state_dict().items())
    assert moved > 1e-4  # the projector trained
    lora_b = [v for k, v in load_file(str(out / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert lora_b and max(float(v.abs().max()) for v in lora_b) > 0  # LoRA trained (B starts at zero)
    main(["eval", "--adapter", str(out), "--limit", "12", "--out", str(tmp_path / "m.json")])
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n"] == 12 and 0.0 <= m["auc"] <= 1.0 and "collab_seen_evaluation_users" not in m
    # a collaborative model that kept the valid/test users' interactions: train warns, eval warns and records it
    leaky = CollabModel(sas, warm, items, V, cm.warm, []).save(tmp_path / "leaky")
    capsys.readouterr()
    main(base + ["--collab", str(leaky), "--out", str(tmp_path / "ad-leaky")])
    assert "fitted on interactions of 29 valid/test user(s)" in capsys.readouterr().err
    main(["eval", "--adapter", str(tmp_path / "ad-leaky"), "--limit", "12", "--out", str(tmp_path / "l.json")])
    assert "this AUC is not a few-shot number" in capsys.readouterr().err
    assert json.loads((tmp_path / "l.json").read_text())["collab_seen_evaluation_users"] == 29
