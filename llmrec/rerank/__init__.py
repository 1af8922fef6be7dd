"""Reranking stage (LlamaRec stage 2): an LM reorders the retriever's candidates.

Modules, one job each:

* :mod:`.reranker`  - ``Reranker`` (the public face), ``ItemLookup``, ``RankedItem``
* :mod:`.data`      - training lists with the retriever's hard negatives in shuffled order; pointwise pairs
  (the leave-one-out split is :mod:`llmrec.data.loo`)
* :mod:`.lm`        - raw verbalizer logits at the answer position; single-token letter check; shuffled
  presentation of candidates (one implementation)
* :mod:`.listwise`  - ``ListwiseScorer``: letters (A)..(T), letter logits (LlamaRec, Yue et al. 2023)
* :mod:`.pointwise` - ``PointwiseRerankScorer``: Yes/No log-odds, history prefix shared (TALLRec,
  Bao et al. 2023)
* :mod:`.train`     - LoRA tuning through the project's Trainer machinery
* :mod:`.blend`     - retriever/LM score blending, weight tuned on validation

The public entry points are :class:`llmrec.Reranker` (:mod:`.reranker`) and :class:`llmrec.Recommender`
(:mod:`llmrec.recommender`).
"""

from .blend import blend_scores, one_se_choice, rank_by, tune_alpha, zscore
from llmrec.data.loo import LOOData, loo_from_recdata

from .data import ListExample, pointwise_pairs, popularity_sampler, training_lists
from .listwise import ListwiseScorer, listwise_training_example
from .lm import answer_logits, single_token_verbalizer
from .pointwise import PointwiseRerankScorer, prefix_scoring_available
from .reranker import ItemLookup, RankedItem, Ranking, Reranker

__all__ = [
    "ListwiseScorer", "PointwiseRerankScorer", "listwise_training_example", "answer_logits",
    "single_token_verbalizer", "prefix_scoring_available", "LOOData", "loo_from_recdata", "ListExample",
    "training_lists", "pointwise_pairs", "popularity_sampler", "blend_scores", "rank_by", "tune_alpha", "one_se_choice", "zscore",
    "Reranker", "ItemLookup", "RankedItem", "Ranking",
]
