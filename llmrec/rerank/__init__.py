"""Reranking stage (LlamaRec stage 2): an LM reorders the retriever's candidates.

Modules, one job each:

* :mod:`.data`      - LOO split from any ``llmrec.data`` source; training lists with the retriever's
  hard negatives in shuffled order; pointwise pairs
* :mod:`.lm`        - raw verbalizer logits at the answer position; single-token letter check
* :mod:`.listwise`  - ``ListwiseScorer``: letters (A)..(T), letter logits (LlamaRec, Yue et al. 2023)
* :mod:`.pointwise` - ``PointwiseRerankScorer``: Yes/No log-odds, history prefix shared (TALLRec,
  Bao et al. 2023)
* :mod:`.train`     - LoRA tuning through the project's Trainer machinery
* :mod:`.blend`     - retriever/LM score blending, weight tuned on validation

The public entry points are :class:`llmrec.Reranker` and :class:`llmrec.Recommender` (:mod:`llmrec.api`).
"""

from .blend import blend_scores, one_se_choice, rank_by, tune_alpha, zscore
from .data import ListExample, LOOData, loo_from_recdata, pointwise_pairs, training_lists
from .listwise import ListwiseScorer, listwise_training_example
from .lm import answer_logits, single_token_verbalizer
from .pointwise import PointwiseRerankScorer, prefix_scoring_available

__all__ = [
    "ListwiseScorer", "PointwiseRerankScorer", "listwise_training_example", "answer_logits",
    "single_token_verbalizer", "prefix_scoring_available", "LOOData", "loo_from_recdata", "ListExample",
    "training_lists", "pointwise_pairs", "blend_scores", "rank_by", "tune_alpha", "one_se_choice", "zscore",
]
