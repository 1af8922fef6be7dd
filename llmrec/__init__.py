"""llmrec: turn a pretrained causal language model into a few-shot recommender.

A LoRA-tuned LM scores (history, target) prompts through a verbalizer (TALLRec, Bao et al. 2023);
a FAISS retriever proposes candidates that the LM reranks (LlamaRec, Yue et al. 2023).

``from llmrec import Reranker, Recommender, RankedItem`` (see :mod:`llmrec.rerank.reranker` and
:mod:`llmrec.recommender`); they are imported
lazily, so ``import llmrec`` stays light (no torch/transformers import).
"""

__version__ = "0.1.0"

_LAZY = {"Reranker": "llmrec.rerank.reranker", "Recommender": "llmrec.recommender", "RankedItem": "llmrec.rerank.reranker"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'llmrec' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
