"""llmrec: turn a pretrained causal language model into a few-shot recommender.

A LoRA-tuned LM scores (history, target) prompts through a verbalizer (TALLRec, Bao et al. 2023);
a FAISS retriever proposes candidates that the LM reranks (LlamaRec, Yue et al. 2023).
"""

__version__ = "0.1.0"
