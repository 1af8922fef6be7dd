"""Scoring: a causal LM's answer logits for prompts, three ways, one layer.

* :mod:`llmrec.scoring.logits`: full prompts -- length-bucketed, right-padded batches, the final hidden state
  through the verbalizer rows of the LM head only (:func:`score_encoded`, :func:`answer_logits`);
* :mod:`llmrec.scoring.prefix`: prompts sharing a token prefix, the prefix computed once
  (:func:`score_candidates`, :func:`score_shared_head`; attention through :mod:`llmrec.kernels`);
* :mod:`llmrec.scoring.pointwise`: :class:`PointwiseScorer` (TALLRec prompts -> P(Yes) -> AUC).
"""

from .logits import answer_logits, autocast_for, encode_prompts, score_encoded, score_texts, verbalizer_logits
from .pointwise import PointwiseScorer, Prompts, process_state
from .prefix import common_prefix_length, score_candidates, score_shared_head, split_prompts

__all__ = ["verbalizer_logits", "answer_logits", "score_encoded", "score_texts", "encode_prompts", "autocast_for",
           "PointwiseScorer", "Prompts", "process_state", "score_candidates", "score_shared_head", "split_prompts",
           "common_prefix_length"]
