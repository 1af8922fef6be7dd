"""The collaborative model behind collaborative tokens, fitted under the honest few-shot protocol.

Protocol (issue 15):

* **Implicit only.** The collaborative model sees which items a user interacted with and in what order,
  never a rating value (:func:`implicit_sequences` reads ``user_id``, ``item_id``, ``timestamp`` and
  nothing else).
* **No evaluation users.** Every user with a window in the TALLRec valid or test split is left out
  entirely (:func:`excluded_users`); their histories reach the model only as prompt input (the SASRec
  user vector of a prompt's history is computed at prompt time from the history's item ids).

The model is :class:`llmrec.retrieval.sasrec.SASRec` (Kang & McAuley 2018) on a leave-one-out split of the
remaining users (the validation item for early stopping). Catalogue items with no interaction among those
users (never seen, or seen only by excluded users) get the cold-start vector of
:class:`llmrec.retrieval.coldstart.TextToCF` fitted from metadata columns (genres, year;
:func:`llmrec.retrieval.coldstart.item_features` without the LM text embedding, which the README's
cold-start table shows adds nothing on ML-100K), rescaled to half the warm items' median norm (the
cold-start default).

Saved as a folder: ``sasrec/`` (the retriever's own safetensors + config), ``vectors.safetensors``
(``item_vectors`` float32 ``(n_catalog, d)``, ``warm`` uint8 ``(n_catalog,)``) and ``collab.json``
(catalogue item ids in row order, SASRec's item ids, the content hash, the excluded users).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from llmrec.retrieval.sasrec import SASRec, SASRecConfig

__all__ = ["excluded_users", "implicit_sequences", "CollabModel", "fit_collab_model", "COLD_NORM_SCALE",
           "DEFAULT_COLLAB_CONFIG", "default_collab_dir", "check_collab_path", "load_or_fit_collab",
           "seen_evaluation_users", "missing_items"]

#: Cold item vectors are rescaled to this multiple of the warm items' median L2 norm (README "Cold-start").
COLD_NORM_SCALE = 0.5
#: The default recipe's collaborative model: SASRec on the 50 most recent items, at most 30 epochs (early-stopped on
#: validation NDCG@10 every 5). Chosen on the TALLRec *valid* split: no-LM cosine probe x like-rate AUC 0.7160 /
#: UAUC 0.6702, against 0.7145 / 0.6647 with an 80-epoch cap, which takes 2.7x the fit time (test: 0.7509 vs 0.7542,
#: same machine; README "The default recipe"). One thread: the fit is then the same on any thread count (not across
#: CPU kernels: AVX2 and AVX512 fits differ slightly).
DEFAULT_COLLAB_CONFIG = SASRecConfig(max_len=50, epochs=30, threads=1)
_MARKER = "collab.json"


def excluded_users(splits: Any, parts: Iterable[str] = ("valid", "test")) -> set[str]:
    """User ids with at least one window in the named TALLRec parts (default valid and test).

    Args:
        splits: :class:`llmrec.samples.tallrec.TallrecSplits` (anything with ``.valid``/``.test`` lists of
            samples carrying ``user_id``).

    Returns:
        ``set[str]``; on ML-100K's TALLRec splits a few dozen users.
    """
    return {str(s.user_id) for p in parts for s in getattr(splits, p)}


def implicit_sequences(interactions: Any, exclude: Iterable[str] = ()) -> dict[str, list[str]]:
    """``{user_id: [item_id, ...]}`` oldest first (stable sort by timestamp), without the ``exclude`` users.

    Reads only ``user_id``, ``item_id`` and ``timestamp`` of ``interactions.frame``: rating values never
    reach the collaborative model. Users keep their first-appearance order.
    """
    f = interactions.frame[["user_id", "item_id", "timestamp"]]
    ex = {str(u) for u in exclude}
    f = f[~f["user_id"].astype(str).isin(ex)]
    out: dict[str, list[str]] = {}
    for u, g in f.groupby("user_id", sort=False):
        out[str(u)] = g.sort_values("timestamp", kind="stable")["item_id"].astype(str).tolist()
    return out


def _array_hash(arrays: dict[str, np.ndarray], meta: Any) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


@dataclass
class CollabModel:
    """A fitted collaborative model: SASRec plus one vector for every catalogue item.

    Attributes:
        sasrec: the fitted :class:`SASRec` (item index space = ``sasrec_items``).
        sasrec_items: ``list[str]`` raw item ids of SASRec's rows (warm items).
        catalog_items: ``list[str]`` every catalogue item id, row order of ``item_vectors``.
        item_vectors: float32 ``(n_catalog, d)``: the SASRec row for warm items, the cold-start vector else.
        warm: bool ``(n_catalog,)``.
        excluded: sorted user ids that were left out (the TALLRec valid/test users).
    """

    sasrec: SASRec
    sasrec_items: list[str]
    catalog_items: list[str]
    item_vectors: np.ndarray
    warm: np.ndarray
    excluded: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._row = {i: r for r, i in enumerate(self.catalog_items)}
        self._sasrec_index = {i: j for j, i in enumerate(self.sasrec_items)}

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    @property
    def sha256(self) -> str:
        """Content hash of everything that determines a vector: SASRec's weights, the item vectors, the id
        lists. Adapters record it; a different collaborative model is refused."""
        if getattr(self, "_sha", None) is None:
            arrays = {f"sasrec.{k}": v for k, v in self.sasrec._arrays().items()}
            arrays.update(item_vectors=self.item_vectors.astype(np.float32), warm=self.warm.astype(np.uint8))
            self._sha = _array_hash(arrays, [self.sasrec_items, self.catalog_items])
        return self._sha

    def item_vector(self, item_id: str) -> np.ndarray:
        """float32 ``(d,)`` for a catalogue item. Raises KeyError naming an unknown id."""
        try:
            return self.item_vectors[self._row[str(item_id)]]
        except KeyError:
            raise KeyError(f"item {item_id!r}: not in the collaborative model's catalogue") from None

    def item_matrix(self, item_ids: Sequence[str]) -> np.ndarray:
        """float32 ``(n, d)`` rows of :meth:`item_vector`."""
        return np.stack([self.item_vector(i) for i in item_ids]) if len(item_ids) else np.zeros((0, self.dim), np.float32)

    def user_vectors(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """float32 ``(n, d)``: SASRec's last-position output over each history's warm items (oldest first).

        A history with no warm item gets the mean of its items' (cold-start) vectors. Ratings are not an
        input: only the item ids and their order.
        """
        out = np.zeros((len(histories), self.dim), np.float32)
        idx, rows = [], []
        for n, h in enumerate(histories):
            w = [self._sasrec_index[str(i)] for i in h if str(i) in self._sasrec_index]
            if w:
                idx.append(np.asarray(w, np.int64))
                rows.append(n)
            elif len(h):
                out[n] = self.item_matrix([str(i) for i in h]).mean(0)
        if idx:
            out[rows] = self.sasrec.user_vectors(idx)
        return out

    # --- persistence -------------------------------------------------------------------------------
    def save(self, out: str | os.PathLike) -> Path:
        """Write the folder atomically (see module docstring). Raises FileExistsError on a foreign folder."""
        from safetensors.numpy import save_file

        from llmrec._atomic import atomic_dir

        with atomic_dir(out, _MARKER, "collaborative model") as tmp:
            self.sasrec.save(tmp / "sasrec")
            save_file({"item_vectors": np.ascontiguousarray(self.item_vectors, np.float32),
                       "warm": self.warm.astype(np.uint8)}, str(tmp / "vectors.safetensors"))
            (tmp / _MARKER).write_text(json.dumps({
                "kind": "llmrec-collab", "sha256": self.sha256, "sasrec_items": self.sasrec_items,
                "catalog_items": self.catalog_items, "excluded_users": self.excluded}, indent=1))
        return Path(out)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "CollabModel":
        """Load a folder written by :meth:`save`.

        Raises:
            FileNotFoundError: not such a folder. ValueError: its content hash differs from the recorded one
                (the files were changed), naming the folder.
        """
        from safetensors.numpy import load_file

        d = Path(folder)
        if not (d / _MARKER).is_file():
            raise FileNotFoundError(f"{d}: no {_MARKER}; not a collaborative model folder")
        meta = json.loads((d / _MARKER).read_text())
        arr = load_file(str(d / "vectors.safetensors"))
        m = cls(SASRec.load(d / "sasrec"), list(meta["sasrec_items"]), list(meta["catalog_items"]),
                arr["item_vectors"].astype(np.float32), arr["warm"].astype(bool), list(meta.get("excluded_users", [])))
        if m.sha256 != meta.get("sha256"):
            raise ValueError(f"{d}: content hash {m.sha256[:12]} differs from the recorded {str(meta.get('sha256'))[:12]}")
        return m


def collab_from_retriever(retriever: Any, item_ids: Sequence[Any]) -> CollabModel:
    """A :class:`CollabModel` over a fitted retriever's SASRec, for leave-one-out reranking.

    Args:
        retriever: a fitted :class:`SASRec`, or a retriever holding one as ``.sasrec``
            (:class:`llmrec.retrieval.Fusion`).
        item_ids: raw item id of SASRec row ``j`` (``item_ids[j]``); every item is warm (SASRec saw it).

    Returns:
        ``CollabModel`` whose ``item_vectors`` are SASRec's float32 ``(n_items, d)`` item table, no excluded
        users. It only sees what the retriever was fitted on (the leave-one-out training part), so no test
        item reaches it.

    Raises:
        ValueError: ``item_ids`` has a different length than SASRec's item table.
    """
    sasrec = getattr(retriever, "sasrec", retriever)
    vecs = sasrec.item_vectors().astype(np.float32)
    ids = [str(i) for i in item_ids]
    if len(ids) != len(vecs):
        raise ValueError(f"item_ids: {len(ids)} ids for a SASRec item table of {len(vecs)} rows")
    return CollabModel(sasrec, ids, ids, vecs, np.ones(len(ids), bool), [])


def fit_collab_model(rec: Any, splits: Any, config: SASRecConfig | None = None, *, log=print,
                     cold_norm_scale: float = COLD_NORM_SCALE) -> CollabModel:
    """Fit SASRec on the implicit sequences of every user without a TALLRec valid/test window.

    Args:
        rec: :class:`llmrec.data.RecData` (``interactions``, ``catalog``).
        splits: the TALLRec splits whose valid/test users are excluded.
        config: SASRec hyper-parameters (default: the retriever's defaults).
        log: progress lines (None = quiet).

    Returns:
        :class:`CollabModel` over every catalogue item.

    Raises:
        ValueError: nothing left to fit (every user excluded or too short).
    """
    from llmrec.retrieval.coldstart import TextToCF, item_features

    ex = excluded_users(splits)
    seqs = implicit_sequences(rec.interactions, ex)
    items = sorted({i for s in seqs.values() for i in s})
    if not items:
        raise ValueError("no interactions left after excluding the TALLRec valid/test users")
    index = {i: j for j, i in enumerate(items)}
    enc = [np.asarray([index[i] for i in s], np.int64) for s in seqs.values()]
    train = [s[:-1] if len(s) >= 3 else s for s in enc]
    vh = [s[:-1] for s in enc if len(s) >= 3]
    vt = [int(s[-1]) for s in enc if len(s) >= 3]
    sas = SASRec(config or SASRecConfig())
    sas.fit(train, len(items), vh or None, vt or None, log=log)
    catalog_items = [str(i) for i in rec.catalog.frame.index]
    V = sas.item_vectors()
    d = V.shape[1]
    out = np.zeros((len(catalog_items), d), np.float32)
    warm = np.array([i in index for i in catalog_items], bool)
    for r, i in enumerate(catalog_items):
        if warm[r]:
            out[r] = V[index[i]]
    if (~warm).any():
        warm_ids = [i for i, w in zip(catalog_items, warm) if w]
        cold_ids = [i for i, w in zip(catalog_items, warm) if not w]
        feats = item_features(rec.catalog, warm_ids + cold_ids)
        m = TextToCF().fit(feats[: len(warm_ids)], out[warm])
        norm = cold_norm_scale * float(np.median(np.linalg.norm(out[warm], axis=1)))
        out[~warm] = m.predict(feats[len(warm_ids):], norm=norm)
    return CollabModel(sas, items, catalog_items, out, warm, sorted(ex))


def seen_evaluation_users(collab: CollabModel, splits: Any) -> list[str]:
    """The TALLRec valid/test users whose interactions ``collab`` may have been fitted on: those of
    :func:`excluded_users` it does not record as left out (sorted). Empty = the honest few-shot protocol holds."""
    return sorted(excluded_users(splits) - set(map(str, collab.excluded)))


def default_collab_dir(data_sha256: str, config: SASRecConfig = DEFAULT_COLLAB_CONFIG) -> Path:
    """Where the default recipe keeps the collaborative model of a dataset: ``<cache>/collab/<data sha256[:12]>-
    sasrec-l<max_len>-e<epochs>-s<seed>`` under :func:`llmrec.assets.cache_dir` (``$LLMREC_CACHE``), so
    ``llmrec train``, ``eval/tallrec_auc.py`` and ``make demo`` fit it once and share it. ``data_sha256``: the
    rating log's hash (:func:`llmrec.samples.protocol.data_sha256`, recorded in every protocol record)."""
    from llmrec.assets import cache_dir

    return cache_dir() / "collab" / (f"{data_sha256[:12]}-sasrec-l{config.max_len}-e{config.epochs}"
                                     f"-s{config.seed}")


def missing_items(collab: CollabModel, samples: Iterable[Any]) -> list[str]:
    """Sorted item ids (history items and targets of ``samples``) the collaborative model has no vector for:
    every item a prompt can name needs one."""
    return sorted({str(i) for s in samples for i in [*s.history, s.target]} - set(collab.catalog_items))


def check_collab_path(folder: str | os.PathLike) -> None:
    """Refuse a collaborative model path that cannot be a folder: the path itself or one of its parents is a file.

    Raises:
        ValueError: naming the path and the file in the way.
    """
    d = Path(folder)
    if d.exists() and not d.is_dir():
        raise ValueError(f"{d}: not a folder (give a collaborative model folder, or a new path to fit one into)")
    for parent in d.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{d}: cannot be created: {parent} is a file")
            break


def load_or_fit_collab(folder: str | os.PathLike, rec: Any, splits: Any, config: SASRecConfig = DEFAULT_COLLAB_CONFIG,
                       *, log=print) -> tuple[CollabModel, bool]:
    """The collaborative model in ``folder``, or one fitted with :func:`fit_collab_model` and saved there first
    (atomically: an interrupted fit leaves no half-written folder).

    Args:
        folder: a collaborative model folder, or a missing/empty folder to fit into.
        rec, splits: the data and the TALLRec splits (their valid/test users are left out of a fit).
        config: SASRec settings of a fit (default :data:`DEFAULT_COLLAB_CONFIG`).
        log: progress lines (None = quiet).

    Returns:
        ``(model, fitted)``: ``fitted`` is True when it was fitted now.

    Raises:
        ValueError: ``folder`` is a file or cannot be created (a parent is a file), or holds something that is not a
            readable collaborative model (names the folder and why; delete it to fit one there).
    """
    import time

    d = Path(folder)
    check_collab_path(d)
    if d.exists() and any(d.iterdir()):
        try:
            return CollabModel.load(d), False
        except Exception as e:  # noqa: BLE001  a foreign or damaged folder: json, safetensors or key errors
            why = str(e).removeprefix(f"{d}: ")
            raise ValueError(f"{d}: not a readable collaborative model folder ({type(e).__name__}: {why}); give "
                             f"another folder, or delete this one to fit a new model there") from None
    t0 = time.perf_counter()
    if log:
        log(f"fitting the collaborative model (SASRec, {config.epochs} epochs at most) into {d} ...")
    cm = fit_collab_model(rec, splits, config, log=None)
    cm.save(d)
    if log:
        log(f"collaborative model fitted in {time.perf_counter() - t0:.0f} s ({len(cm.excluded)} valid/test users "
            f"left out, no rating read)")
    return cm, True
