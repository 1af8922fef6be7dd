"""Shared fixtures: a tiny random Llama of the real architecture (litgpt-style) and a tokenizer trained
in memory, so unit tests need no download; plus locators for the real assets used by integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_CORPUS = [
    "Below is an instruction that describes a task, paired with an input that provides further context.",
    "Write a response that appropriately completes the request.",
    "### Instruction: Given the user's preference and unpreference, identify whether the user will like "
    "the target movie by answering \"Yes.\" or \"No.\".",
    "### Input: User Preference: \"Toy Story (1995)\", \"Heat (1995)\" User Unpreference: \"Casino (1995)\"",
    "Whether the user will like the target movie \"GoldenEye (1995)\"? ### Response: Yes. No.",
    "Yes No Yes. No. A B C D E F G H I J K L M N O P Q R S T 0 1 2 3 4 5 6 7 8 9 ( ) , . : ? !",
]

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_tiny_tokenizer():
    """A byte-level BPE tokenizer trained in memory on a few lines (vocab ~400), with chat tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 3, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def write_toy_movielens(d: Path, n_items: int = 30) -> Path:
    """A MovieLens-latest CSV folder in ``d``: 40 users, each watching a run of 8-12 consecutive items
    (wrapping), all rated 4.0; titles 'Film i (1960+i)'. Returns ``d``."""
    import numpy as np

    g = np.random.default_rng(0)
    lines = ["userId,movieId,rating,timestamp"]
    for u in range(1, 41):
        s, n = int(g.integers(n_items)), int(g.integers(8, 13))
        lines += [f"{u},{(s + t) % n_items},4.0,{1000 + 10 * t}" for t in range(n)]
    (d / "ratings.csv").write_text("\n".join(lines) + "\n")
    (d / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f"{i},Film {i} ({1960 + i}),Drama\n" for i in range(n_items)))
    return d


def make_tiny_llama(vocab_size: int, seed: int = 0, heads: int = 6, kv_heads: int = 2):
    """A 2-layer Llama (hidden 48, GQA 6 query / 2 KV heads, tied embeddings) with random weights, fp32."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=1024,
                      tie_word_embeddings=True, rms_norm_eps=1e-6)
    model = LlamaForCausalLM(cfg).eval()
    return model


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    return make_tiny_llama(len(tiny_tokenizer))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """The tiny model saved as a local folder (what ``--base-model PATH`` takes)."""
    d = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_llama(len(tiny_tokenizer)).save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_collab_dir(tmp_path_factory) -> Path:
    """A small collaborative model over the real ML-100K catalogue (8-wide SASRec fitted for one epoch on random
    sequences of 60 items; the other items get random vectors), leaving out every TALLRec valid/test user as the
    protocol requires: what ``--collab DIR`` takes, in seconds instead of the real fit's minutes."""
    import numpy as np

    from llmrec.collab.data import CollabModel, excluded_users
    from llmrec.recipe import load_tallrec
    from llmrec.retrieval.sasrec import SASRec, SASRecConfig

    rec, splits = load_tallrec(ml100k_path())
    items = [str(i) for i in rec.catalog.frame.index]
    g = np.random.default_rng(0)
    sas = SASRec(SASRecConfig(hidden=8, max_len=16, epochs=1, threads=1)).fit(
        [g.integers(0, 60, size=12) for _ in range(30)], 60, log=None)
    V = np.concatenate([sas.item_vectors(), g.normal(size=(len(items) - 60, 8))]).astype(np.float32)
    cm = CollabModel(sas, items[:60], items, V, np.array([True] * 60 + [False] * (len(items) - 60)),
                     sorted(excluded_users(splits)))
    return cm.save(tmp_path_factory.mktemp("collab") / "cm")


def benchmark_dir() -> Path | None:
    """``$LLMREC_BENCHMARKS/tallrec-movie``, ``$LLMREC_BENCHMARKS`` or ``../shared/benchmarks/tallrec-movie``,
    the first holding ``test.json``; None if none does."""
    env = os.environ.get("LLMREC_BENCHMARKS")
    for cand in ([Path(env) / "tallrec-movie", Path(env)] if env else []) + [
            REPO.parent / "shared" / "benchmarks" / "tallrec-movie"]:
        if (cand / "test.json").is_file():
            return cand
    return None


def ml100k_path() -> Path:
    """$LLMREC_ML100K, else :func:`llmrec.assets.ml100k_dir` (fetches the recbole wheel once, offline-safe
    when it is cached or installed); skip the calling test when neither is available."""
    env = os.environ.get("LLMREC_ML100K")
    if env:
        return Path(env)
    try:
        from llmrec.assets import ml100k_dir

        return ml100k_dir()
    except Exception as e:  # no cache and no package index
        pytest.skip(f"MovieLens-100K not available: {type(e).__name__}: {e}")


@pytest.fixture(autouse=True)
def _fp32_default_precision(monkeypatch, request):
    """Tests state their tolerances for fp32: make ``"auto"`` precision resolve to fp32 on any test CPU (on a
    CPU with native bf16 it would pick bf16). ``tests/test_precision.py`` mocks the CPU flags itself."""
    if request.node.get_closest_marker("real_cpu_flags") is None:
        import llmrec.precision

        monkeypatch.setattr(llmrec.precision, "cpu_flags", lambda: frozenset({"avx2"}))


def snapshot_files(*paths) -> dict:
    """sha256 of every file under ``paths`` (what "nothing saved changed" compares)."""
    import hashlib

    out = {}
    for p in paths:
        for f in sorted([p] if p.is_file() else p.rglob("*")):
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def cli_fails(args, capsys) -> str:
    """Run the ``llmrec`` CLI expecting exit code 2; returns its one error line (``llmrec: error: ...``)."""
    import pytest

    from llmrec.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("llmrec: error: ")
    return lines[-1]
