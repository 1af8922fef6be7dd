"""Retrieval stage (LlamaRec stage 1): candidate generation before LM reranking.

Modules, one job each:

* :mod:`.base`      - the ``Retriever`` contract: fit / score / query / save / load (safetensors + json)
* :mod:`.load`      - ``load_retriever``: any saved retriever, its class read from ``config.json``
* :mod:`.baselines` - ``Popularity``, ``Transitions``, ``EASE``
* :mod:`.sasrec`    - ``SASRec`` sequential retriever (plain torch)
* :mod:`.fusion`    - ``Fusion``: SASRec x transitions x EASE product of experts (the default retriever)
* :mod:`.index`     - ``VectorIndex``: FAISS flat / IVF / HNSW, GPU probe, seen-item exclusion
* :mod:`.text`      - ``embed_texts``: LM mean-pooled item text embeddings (cold start)
* :mod:`.coldstart` - ``TextToCF``: item text/metadata -> collaborative vectors for items without interactions

The leave-one-out split the retrievers are fitted and evaluated on is :mod:`llmrec.data.loo` (re-exported
here: ``LOOSplit``, ``leave_one_out``, ``kcore_filter``, ``encode_ids``).
"""

from llmrec.data.loo import LOOSplit, encode_ids, kcore_filter, leave_one_out

from ._checks import check_histories, topk_excluding_seen
from .base import Retriever
from .baselines import EASE, Popularity, Transitions
from .fusion import Fusion
from .index import VectorIndex, gpu_available
from .load import load_retriever
from .sasrec import SASRec, SASRecConfig
from .text import embed_texts

__all__ = [
    "Retriever", "load_retriever", "Popularity", "Transitions", "EASE", "SASRec", "SASRecConfig", "Fusion", "VectorIndex", "gpu_available",
    "LOOSplit", "leave_one_out", "kcore_filter", "encode_ids", "embed_texts",
    "check_histories", "topk_excluding_seen",
]
