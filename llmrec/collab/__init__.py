"""Collaborative tokens: a collaborative model's user and item vectors, projected into the LM's input
embedding space, as single prompt positions (CoLLM, Zhang et al. TKDE; LLaRA, Liao et al. SIGIR 2024).

* :mod:`.data` - the collaborative model (SASRec + cold-start vectors) fitted under the honest protocol
  (implicit interactions only, no TALLRec valid/test user).
"""
