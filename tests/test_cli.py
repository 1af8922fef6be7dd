"""The CLI: --help everywhere, one-line errors with exit code 2 for bad input, nothing saved is damaged."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmrec.cli import app, main


def _run(args, **kw):
    return subprocess.run([sys.executable, "-m", "llmrec", *args], capture_output=True, text=True, timeout=300, **kw)


def _subcommands():
    import typer.main

    cmd = typer.main.get_command(app)
    names = [[n] for n in cmd.commands]
    for n, sub in cmd.commands.items():
        if hasattr(sub, "commands"):
            names += [[n, s] for s in sub.commands]
    return names


def test_help_on_every_subcommand(capsys):
    names = _subcommands()
    assert {"data", "train", "score", "eval"} <= {n[0] for n in names}
    for n in names:
        try:
            main([*n, "--help"])
        except SystemExit as e:
            assert e.code in (0, None), n
        assert "Usage" in capsys.readouterr().out, n


@pytest.mark.parametrize("args, message", [
    (["score", "--user", "1"], "--user needs --target"),
    (["score"], "give either --input FILE or --user ID --target ITEM"),
    (["eval", "--template", "no-such-template"], "unknown template 'no-such-template'"),
    (["eval", "--adapter", "/nonexistent/adapter"], "adapter folder not found: /nonexistent/adapter"),
    (["train", "--out", "/tmp/x", "--lora-rank", "0"], "lora rank 0"),
    (["data", "--split", "nope", "--out", "/tmp/x.json", "--data", "/nonexistent/data"], "/nonexistent/data"),
])
def test_bad_input_one_line_error(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("llmrec: error:") and message in err


def test_unknown_user_and_item(tiny_model_dir, capsys):
    for args, msg in [(["--user", "99999", "--target", "1"], "--user '99999': unknown user"),
                      (["--user", "1", "--target", "abc"], "--target 'abc': unknown item id")]:
        with pytest.raises(SystemExit) as e:
            main(["score", "--base-model", str(tiny_model_dir), *args])
        assert e.value.code == 2
        assert msg in capsys.readouterr().err


def test_score_alpaca_json_and_missing_key(tiny_model_dir, tmp_path, capsys):
    rec = {"instruction": "Given the user's preference...", "input": "User Preference: \"Heat (1995)\"", "output": "Yes."}
    good = tmp_path / "good.json"
    good.write_text(json.dumps([rec, {**rec, "output": "No."}]))
    main(["score", "--base-model", str(tiny_model_dir), "--input", str(good), "--out", str(tmp_path / "s.json")])
    rows = json.loads((tmp_path / "s.json").read_text())
    assert [r["label"] for r in rows] == [1, 0] and all(0 < r["p_yes"] < 1 for r in rows)
    # the two records differ only in their label: the prompt, and so the score, is the same
    assert rows[0]["p_yes"] == rows[1]["p_yes"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "x"}]))
    with pytest.raises(SystemExit) as e:
        main(["score", "--base-model", str(tiny_model_dir), "--input", str(bad), "--out", str(tmp_path / "s.json")])
    assert e.value.code == 2 and "missing key 'input'" in capsys.readouterr().err
    assert len(json.loads((tmp_path / "s.json").read_text())) == 2  # earlier output untouched


def test_python_dash_m_entry_point():
    r = _run(["--help"])
    assert r.returncode == 0 and "train" in r.stdout


@pytest.mark.parametrize("args, code", [([], 2), (["train", "--shots", "abc", "--out", "x"], 2),
                                        (["no-such-command"], 2), (["train"], 2)])
def test_usage_errors_are_one_message_not_a_traceback(args, code):
    r = _run(args)
    assert r.returncode == code, r.stderr[-500:]
    assert "Traceback" not in r.stderr


def test_negative_limit_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--limit", "-1"])
    assert e.value.code == 2 and "--limit -1: must be >= 0" in capsys.readouterr().err
