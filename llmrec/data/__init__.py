"""Data sources -> one in-memory form (:class:`Interactions` + :class:`Catalog`, bundled in :class:`RecData`).

Readers: GroupLens raw (``u.data``/``u.item``), RecBole atomic (``*.inter``/``*.item``), MovieLens
latest CSV (``ratings.csv``/``movies.csv``); :func:`load_dataset` picks one from the folder contents.
Alpaca JSON (TALLRec's published splits) is read and written by :mod:`llmrec.data.alpaca`; the
leave-one-out split (k-core, id encoding, :class:`LOOData`) is :mod:`llmrec.data.loo`. Any other domain's
interactions file (CSV / TSV / JSONL with a column mapping) and item file: :func:`read_tabular`
(:mod:`llmrec.data.tabular`).
"""

from .alpaca import answer_label, read_alpaca_json, validate_alpaca_records, write_alpaca_json
from .core import Catalog, Interactions, RecData, year_from_title
from .loo import LOOData, LOOSplit, encode_ids, kcore_filter, leave_one_out, load_loo_data, loo_from_recdata
from .tabular import ColumnMap, parse_rating_scale, read_tabular
from .readers import (
    GROUPLENS_GENRES,
    detect_format,
    load_dataset,
    read_grouplens,
    read_movielens_csv,
    read_recbole,
    read_recbole_atomic,
)

__all__ = [
    "Interactions",
    "Catalog",
    "RecData",
    "year_from_title",
    "GROUPLENS_GENRES",
    "detect_format",
    "load_dataset",
    "read_grouplens",
    "read_recbole",
    "read_recbole_atomic",
    "read_movielens_csv",
    "ColumnMap",
    "parse_rating_scale",
    "read_tabular",
    "answer_label",
    "read_alpaca_json",
    "validate_alpaca_records",
    "write_alpaca_json",
    "LOOData",
    "LOOSplit",
    "encode_ids",
    "kcore_filter",
    "leave_one_out",
    "load_loo_data",
    "loo_from_recdata",
]
