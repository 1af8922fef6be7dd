"""The projector: collaborative vector -> one LM input embedding (a soft token).

Shape follows LLaRA (Liao et al., SIGIR 2024: ``Linear(64 -> d) -> GELU -> Linear(d -> d)``) and CoLLM's
MLP (Zhang et al., TKDE: a two-layer MLP from the CF embedding to the LLM's token-embedding width). Two
additions keep a fresh projector on the scale of the LM's own token embeddings, so an untrained token does
not swamp the prompt: the input is divided by ``in_scale`` (the RMS of the collaborative item vectors) and
the output goes through a LayerNorm whose gain starts at ``out_scale`` (the standard deviation of the LM's
input-embedding entries; SmolLM2-135M: 0.136).

Saved as safetensors (``save_projector``; tensors + a JSON metadata string holding the config and the
content hash of the collaborative model it was trained with); loading checks that hash
(``load_projector(..., expect_collab_sha256=...)``) and refuses a mismatch naming the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["ProjectorConfig", "Projector", "save_projector", "load_projector", "PROJECTOR_FILE"]

PROJECTOR_FILE = "collab_projector.safetensors"


@dataclass(frozen=True)
class ProjectorConfig:
    """Projector shape.

    Attributes:
        in_dim: collaborative vector width (SASRec hidden, 64).
        out_dim: the LM's hidden size (SmolLM2-135M: 576).
        hidden: MLP width (default ``out_dim``, as LLaRA).
        in_scale: inputs are divided by it (> 0).
        out_scale: initial LayerNorm gain (> 0).

    Raises:
        ValueError: a width < 1 or a scale <= 0 (names the field).
    """

    in_dim: int
    out_dim: int
    hidden: int = 0
    in_scale: float = 1.0
    out_scale: float = 1.0

    def __post_init__(self):
        for name in ("in_dim", "out_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} {getattr(self, name)}: must be >= 1")
        if self.hidden < 0:
            raise ValueError(f"hidden {self.hidden}: must be >= 0 (0 = out_dim)")
        for name in ("in_scale", "out_scale"):
            v = float(getattr(self, name))
            if not 0 < v < float("inf"):
                raise ValueError(f"{name} {v}: must be finite and > 0")

    @property
    def width(self) -> int:
        return self.hidden or self.out_dim


class Projector(nn.Module):
    """``forward(x)``: float ``(..., in_dim)`` -> float32 ``(..., out_dim)``.

    ``LayerNorm(Linear(GELU(Linear(x / in_scale))))``, LayerNorm gain initialised to ``out_scale``.
    """

    def __init__(self, config: ProjectorConfig, seed: int | None = 0):
        super().__init__()
        self.config = config
        gen_state = torch.random.get_rng_state()
        if seed is not None:
            torch.manual_seed(seed)
        self.fc1 = nn.Linear(config.in_dim, config.width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.width, config.out_dim)
        self.norm = nn.LayerNorm(config.out_dim)
        with torch.no_grad():
            self.norm.weight.fill_(config.out_scale)
        if seed is not None:
            torch.random.set_rng_state(gen_state)  # do not disturb the caller's RNG stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.fc1.weight.dtype) / self.config.in_scale
        return self.norm(self.fc2(self.act(self.fc1(x))))


def save_projector(path: str | os.PathLike, projector: Projector, collab_sha256: str) -> Path:
    """Write ``projector``'s tensors to a safetensors file atomically, with ``config`` and ``collab_sha256``
    in the file's metadata. Returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    state = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in projector.state_dict().items()}
    save_file(state, str(tmp), metadata={"config": json.dumps(asdict(projector.config)),
                                         "collab_sha256": str(collab_sha256), "format": "llmrec-projector-1"})
    os.replace(tmp, path)
    return path


def load_projector(path: str | os.PathLike, expect_collab_sha256: str | None = None) -> tuple[Projector, str]:
    """Load a projector file written by :func:`save_projector`.

    Args:
        expect_collab_sha256: the content hash of the collaborative model it will run with; None skips the
            check.

    Returns:
        ``(Projector in eval mode, recorded collab_sha256)``.

    Raises:
        FileNotFoundError: no such file. ValueError: not a projector file, or ``collab_sha256`` differs
            (the message names the field and both hashes).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no projector file")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "llmrec-projector-1":
            raise ValueError(f"{path}: not an llmrec projector file (metadata format {meta.get('format')!r})")
        state = {k: f.get_tensor(k) for k in f.keys()}
    recorded = meta.get("collab_sha256", "")
    if expect_collab_sha256 is not None and recorded != expect_collab_sha256:
        raise ValueError(f"{path}: collab_sha256 {recorded[:12]}... was recorded but the collaborative model given "
                         f"has {expect_collab_sha256[:12]}...: this projector was trained for another collaborative "
                         f"model")
    p = Projector(ProjectorConfig(**json.loads(meta["config"])), seed=None)
    p.load_state_dict(state)
    return p.eval(), recorded
