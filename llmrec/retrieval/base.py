"""The small contract every retriever follows (popularity, transitions, EASE, SASRec).

* ``fit(train_sequences, n_items)`` - train on chronological per-user item-index sequences;
* ``score(histories) -> (n_users, n_items) float32`` - a score for every catalogue item;
* ``query(histories, k, exclude_seen=True) -> (ids int64 (n,k), scores float32 (n,k))``;
* ``save(dir)`` / ``load(dir)`` - ``model.safetensors`` (arrays) + ``config.json`` (hyper-parameters,
  class name). No pickle anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ._checks import check_histories, topk_excluding_seen

__all__ = ["Retriever", "check_train_sequences"]


def check_train_sequences(train_sequences: Sequence[Sequence[int]], n_items: int) -> list[np.ndarray]:
    """Validate training sequences (empty sequences are allowed and ignored by the models)."""
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    if len(train_sequences) == 0:
        raise ValueError("train_sequences is empty: need at least one user")
    out = []
    for u, s in enumerate(train_sequences):
        a = np.asarray(s, dtype=np.int64).reshape(-1)
        if a.size and (a.min() < 0 or a.max() >= n_items):
            bad = int(a.min()) if a.min() < 0 else int(a.max())
            raise ValueError(f"train_sequences[{u}] contains unknown item index {bad} (n_items={n_items})")
        out.append(a)
    if sum(a.size for a in out) == 0:
        raise ValueError("train_sequences holds no interactions")
    return out


class Retriever:
    """Base class; subclasses implement ``fit``, ``score`` and the ``_arrays``/``_config`` hooks."""

    name = "retriever"
    n_items: int = 0

    # --- contract -------------------------------------------------------------------------------
    def fit(self, train_sequences: Sequence[Sequence[int]], n_items: int) -> "Retriever":  # pragma: no cover
        raise NotImplementedError

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def query(
        self, histories: Sequence[Sequence[int]], k: int, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices per user, best first.

        Args:
            histories: per-user chronological item indices (non-empty).
            k: list length, ``1 <= k <= n_items``.
            exclude_seen: drop items present in the user's history.

        Returns:
            ``(ids int64 (n_users, k), scores float32 (n_users, k))``; -1 / -inf pad a row when fewer
            than k unseen items exist.

        Raises:
            ValueError: k out of range, empty history, unknown item index.
        """
        hs = check_histories(histories, self._require_fitted())
        return topk_excluding_seen(self.score(hs), k, hs if exclude_seen else None)

    # --- persistence ---------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _config(self) -> dict:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def _from_saved(cls, config: dict, arrays: dict[str, np.ndarray]) -> "Retriever":  # pragma: no cover
        raise NotImplementedError

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` into ``directory`` (created if needed)."""
        from safetensors.numpy import save_file

        self._require_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.ascontiguousarray(v) for k, v in self._arrays().items()}
        save_file(arrays, str(d / "model.safetensors"))
        cfg = {"class": type(self).__name__, "n_items": int(self.n_items), **self._config()}
        (d / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "Retriever":
        """Load a retriever saved by :meth:`save`.

        Raises:
            ValueError: the directory holds a different retriever class, or its files disagree (names the
                folder and the cause).
            FileNotFoundError: files missing.
        """
        from safetensors.numpy import load_file

        d = Path(directory)
        cfg = _read_config(d)
        if cfg.get("class") != cls.__name__:
            raise ValueError(f"{d}: saved class is {cfg.get('class')!r}, not {cls.__name__!r}")
        try:
            return cls._from_saved(cfg, load_file(str(d / "model.safetensors")))
        except (KeyError, TypeError, AttributeError, RuntimeError, ValueError) as e:
            raise ValueError(f"{d}: the saved {cls.__name__} is inconsistent ({type(e).__name__}: {e})") from e

    def _require_fitted(self) -> int:
        if not self.n_items:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() or load() first")
        return self.n_items


def _read_config(d: Path) -> dict:
    try:
        cfg = json.loads((d / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{d / 'config.json'} is not valid JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{d / 'config.json'} must hold a JSON object, got {type(cfg).__name__}")
    return cfg
