"""Request and response models of the HTTP API (pydantic v2), with the limits that keep bad input away from
the model: list lengths, string lengths, integer ranges, no unknown fields. Violations are answered with
``422`` and a JSON body naming the field and the value (:mod:`llmrec.serve.app`)."""

from __future__ import annotations

from typing import Annotated, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, model_validator

MAX_HISTORY = 200        # items in a history (the prompt keeps the most recent max_history of them)
MAX_CANDIDATES = 100     # candidates of one rerank call (listwise: at most its letters, 20)
MAX_K = 100              # items one recommend call returns
MAX_ITEM_CHARS = 300     # an item id or title
MAX_BODY_BYTES = 64 * 1024

ItemId = Annotated[StrictInt, Field(ge=0, le=2**53)]
ItemText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ITEM_CHARS, strip_whitespace=True)]
ItemRef = Union[ItemId, ItemText]

_ITEM_DOC = "an item id (\"50\" or 50) or an exact title (\"Star Wars (1977)\", case-insensitive)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RerankRequest(_Strict):
    history: list[ItemRef] = Field(..., min_length=1, max_length=MAX_HISTORY,
                                   description=f"Items the user interacted with, oldest first: each {_ITEM_DOC}.")
    candidates: list[ItemRef] = Field(..., min_length=1, max_length=MAX_CANDIDATES,
                                      description="Items to reorder (e.g. a retriever's top 20; listwise: at most 20).")
    top_k: Optional[StrictInt] = Field(None, ge=1, le=MAX_CANDIDATES, description="How many to return (default all).")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"history": ["50", "Toy Story (1995)", 181], "candidates": ["100", "121", "258", "294"], "top_k": 3}]})


class RecommendRequest(_Strict):
    history: Optional[list[ItemRef]] = Field(None, min_length=1, max_length=MAX_HISTORY,
                                             description="Items the user interacted with, oldest first.")
    user_id: Optional[Union[StrictInt, Annotated[str, StringConstraints(min_length=1, max_length=64)]]] = Field(
        None, description="A user of the indexed dataset (instead of history).")
    k: StrictInt = Field(10, ge=1, le=MAX_K, description="How many items to recommend.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"user_id": "1", "k": 10},
                                                                              {"history": ["50", "181"], "k": 5}]})

    @model_validator(mode="after")
    def _one_source(self):
        if (self.history is None) == (self.user_id is None):
            raise ValueError("give exactly one of history or user_id")
        return self


class ScoreRequest(_Strict):
    history: list[ItemRef] = Field(..., min_length=1, max_length=MAX_HISTORY,
                                   description="Items the user interacted with, oldest first.")
    target: ItemRef = Field(..., description="The item to score.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"history": ["50", "181", "Toy Story (1995)"], "target": "100"}]})


class Item(BaseModel):
    item_id: str
    title: str
    score: float = Field(..., description="Higher = better. rerank (listwise): log-probability of the item's "
                                          "letter among its list's letters; pointwise: log-odds of Yes; recommend: "
                                          "the same, or the blend with the retriever score.")
    rank: int


class RankedResponse(BaseModel):
    items: list[Item]


class ScoreResponse(BaseModel):
    target: str
    title: str
    p_yes: float = Field(..., description="P(Yes) over the Yes/No answer words (TALLRec).")
    log_odds: float


class ErrorDetail(BaseModel):
    field: str
    value: Optional[str] = None
    message: str


class ErrorResponse(BaseModel):
    error: str
    detail: list[ErrorDetail] = []


class PreviewRequest(_Strict):
    template: Annotated[str, StringConstraints(min_length=1, max_length=60_000)]
    indices: list[Annotated[int, Field(ge=0, le=10**7)]] = Field([0, 1, 2], max_length=16)
    split: str = Field("valid", pattern="^(train|valid|test|all)$")
    score: bool = False
