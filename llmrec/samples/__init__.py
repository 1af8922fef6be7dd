"""Protocol builders: turn :class:`llmrec.data.Interactions` into labelled samples.

* :mod:`llmrec.samples.tallrec`: TALLRec's movie protocol (Bao et al., RecSys 2023): 10-item windows,
  like = rating > 3, last 10,000 windows split 80/10/10; template variables; alpaca / ``datasets`` export;
  :func:`~llmrec.samples.tallrec.sample_for_user` (the one (user, target) sample of ``score`` and ``prompts``).
* :mod:`llmrec.samples.kshot`: seeded k-shot draws identical to TALLRec's.
* :mod:`llmrec.samples.augment`: few-shot augmentation from the k samples only (rotate, permute, drop, mirror).
"""

from .augment import AUGMENTATIONS, augment_samples, parse_augmentations
from .kshot import k_shot_indices, sample_k_shot
from .tallrec import (
    HISTORY_LEN,
    LIKE_THRESHOLD,
    N_KEEP,
    SPLITS,
    TALLREC_INSTRUCTION,
    Sample,
    TallrecSplits,
    build_windows,
    is_liked,
    sample_for_user,
    samples_from_hf_dataset,
    split_samples,
    tallrec_input,
    tallrec_splits,
    template_variables,
    to_alpaca,
    to_hf_dataset,
    write_alpaca,
)

__all__ = [
    "AUGMENTATIONS",
    "augment_samples",
    "parse_augmentations",
    "HISTORY_LEN",
    "LIKE_THRESHOLD",
    "N_KEEP",
    "SPLITS",
    "sample_for_user",
    "split_samples",
    "TALLREC_INSTRUCTION",
    "Sample",
    "TallrecSplits",
    "build_windows",
    "is_liked",
    "samples_from_hf_dataset",
    "tallrec_input",
    "tallrec_splits",
    "template_variables",
    "to_alpaca",
    "to_hf_dataset",
    "write_alpaca",
    "k_shot_indices",
    "sample_k_shot",
]
