"""The CLI: --help everywhere, one-line errors with exit code 2 for bad input, nothing saved is damaged."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
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
    (["train", "--out", "/tmp/x", "--lora-rank", "0"], "--lora-rank 0: must be a positive integer"),
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


def test_train_refuses_a_user_folder_before_tuning(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as e:  # the model does not exist: the folder check comes first
        main(["train", "--out", str(tmp_path), "--base-model", str(tmp_path / "no-model")])
    assert e.value.code == 2 and "holds no llmrec.json" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_negative_limit_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--limit", "-1"])
    assert e.value.code == 2 and "--limit -1: must be >= 0" in capsys.readouterr().err


def test_score_without_out_prints_every_row(tiny_model_dir, tmp_path, capsys):
    """Printing is not cut at 50 rows: every record gets its line, in order, with the --out file's values."""
    rec = {"instruction": "Given the user's preference...", "input": "User Preference: \"Heat (1995)\"", "output": "Yes."}
    records = [{**rec, "input": f"User Preference: \"Heat (1995)\" {i}", "output": "Yes." if i % 2 else "No."}
               for i in range(57)]
    f = tmp_path / "many.json"
    f.write_text(json.dumps(records))
    main(["score", "--base-model", str(tiny_model_dir), "--input", str(f)])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["index"] for r in printed] == list(range(57))
    assert [r["label"] for r in printed] == [i % 2 for i in range(57)]
    main(["score", "--base-model", str(tiny_model_dir), "--input", str(f), "--out", str(tmp_path / "s.json")])
    assert printed == json.loads((tmp_path / "s.json").read_text())


# ------------------------------------------------------------------ errors name the CLI flag, before any model loads
NO_MODEL = ["--base-model", "/nonexistent/base-model"]  # reaching the model load would be a different error


@pytest.fixture(scope="module")
def tallrec_splits():
    from tests.conftest import ml100k_path

    from llmrec.recipe import load_tallrec

    return load_tallrec(ml100k_path())


@pytest.fixture()
def cached_splits(monkeypatch, tallrec_splits):
    monkeypatch.setattr("llmrec.recipe.load_tallrec", lambda data=None: tallrec_splits)
    return tallrec_splits


def _error_line(args, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err, err
    return err[-1]


@pytest.mark.parametrize("args, message", [
    (["--shots", "0"], "--shots 0: must be >= 1 for tuning"),
    (["--shots", "-1"], "--shots -1: must be >= 1 for tuning"),
    (["--shots", "99999"], "--shots 99999: larger than the train split ("),
    (["--lr", "0"], "--lr 0.0: must be > 0"),
    (["--lr", "-1"], "--lr -1.0: must be > 0"),
    (["--epochs", "0"], "--epochs 0: must be >= 1"),
    (["--batch-size", "0"], "--batch-size 0: must be >= 1"),
    (["--lora-rank", "0"], "--lora-rank 0: must be a positive integer"),
    (["--lora-dropout", "1"], "--lora-dropout 1.0: must be in [0, 1)"),
    (["--patience", "-1"], "--patience -1: must be >= 0"),
    (["--precision", "fp8"], "--precision 'fp8': expected one of auto, float32, fp32, bfloat16, bf16, float16, fp16"),
    (["--seed", "-1"], "--seed -1: must be >= 0"),
    (["--lr-scheduler", "cosin"], "--lr-scheduler 'cosin': expected one of linear, cosine"),
    (["--warmup-ratio", "1"], "--warmup-ratio 1.0: must be in [0, 1)"),
])
def test_train_bad_settings_name_the_flag(args, message, capsys, cached_splits, tmp_path):
    line = _error_line(["train", "--out", str(tmp_path / "a"), *NO_MODEL, *args], capsys)
    assert line.startswith(f"llmrec: error: {message}"), line
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.work").exists()


@pytest.mark.parametrize("args, message", [
    (["--shots", "-1"], "--shots -1 must be >= 0"),
    (["--shots", "99999"], "--shots 99999 is larger than the"),
    (["--shots", "4", "--seed", "-1"], "--seed -1 must be >= 0"),
])
def test_data_bad_shots_name_the_flag(args, message, capsys, cached_splits, tmp_path):
    line = _error_line(["data", "--split", "train", "--out", str(tmp_path / "d.json"), *args], capsys)
    assert line.startswith(f"llmrec: error: {message}"), line


@pytest.mark.parametrize("command", [["score", "--input", "/nonexistent.json"], ["eval"]])
def test_bad_dtype_refused_before_the_model_loads(command, capsys):
    assert _error_line([*command, *NO_MODEL, "--dtype", "fp8"], capsys) == \
        "llmrec: error: --dtype 'fp8': expected one of auto, float32, fp32, bfloat16, bf16, float16, fp16"


@pytest.mark.parametrize("args, message", [
    (["--candidates", "0"], "--candidates 0: must be >= 1"),
    (["--alpha", "1.5"], "--alpha 1.5: must be in [0, 1]"),
    (["--dtype", "fp8"], "--dtype 'fp8': expected one of auto, float32, fp32, bfloat16, bf16, float16, fp16"),
])
def test_recommend_bad_options_refused_before_loading(args, message, capsys):
    line = _error_line(["recommend", "--index", "/nonexistent/index", "--user", "1", *args], capsys)
    assert line == f"llmrec: error: {message}"


def test_recommend_k_error_names_the_flag(monkeypatch, capsys):
    """Recommender.recommend_batch says ``k=...``; the command says ``--k ...``."""
    from llmrec import recommender

    class Loaded:
        n_items = 10

        def history_of(self, user):
            return ["1"]

        def recommend(self, hist, k):
            raise ValueError(f"k={k} is larger than the 9 items this user has not seen")

    monkeypatch.setattr(recommender.Recommender, "load", classmethod(lambda cls, *a, **kw: Loaded()))
    line = _error_line(["recommend", "--index", "x", "--user", "1", "--k", "10"], capsys)
    assert line == "llmrec: error: --k 10 is larger than the 9 items this user has not seen"


@pytest.mark.parametrize("args, message", [
    (["--resamples", "0"], "--resamples 0: must be >= 1"),
    (["--resamples", "-5"], "--resamples -5: must be >= 1"),
    (["--shots", "4", "--lr", "0"], "--lr 0.0: must be > 0"),
    (["--shots", "4", "--epochs", "0"], "--epochs 0: must be >= 1"),
    (["--shots", "99999"], "--shots 99999: larger than the train split ("),
    (["--seed", "-1"], "--seed -1: must be >= 0"),
    (["--dtype", "fp8"], "--dtype 'fp8': expected one of auto, float32, fp32, bfloat16, bf16, float16, fp16"),
])
def test_prompts_eval_bad_options_name_the_flag(args, message, capsys, cached_splits):
    line = _error_line(["prompts", "eval", "tallrec", "tallrec-short", "--n", "30", *NO_MODEL, *args], capsys)
    assert line.startswith(f"llmrec: error: {message}"), line


def test_eval_and_score_report_lm_times_like_rate(tiny_model_dir, tmp_path, capsys):
    """`eval` adds the AUC of logit(P(Yes)) + logit(smoothed like-rate); `score --user` the product as a
    probability. Both recomputed here from the printed P(Yes) and the samples' own history ratings."""
    from sklearn.metrics import roc_auc_score

    from llmrec.recipe import load_tallrec

    main(["eval", "--base-model", str(tiny_model_dir), "--limit", "30", "--template", "tallrec",  # = the JSON's text
          "--out", str(tmp_path / "e.json")])
    res = json.loads((tmp_path / "e.json").read_text())
    main(["score", "--base-model", str(tiny_model_dir), "--input", str(_test_json(tmp_path, 30)),
          "--out", str(tmp_path / "s.json")])
    p = np.array([r["p_yes"] for r in json.loads((tmp_path / "s.json").read_text())])
    _, splits = load_tallrec()
    test = splits.test[:30]
    rate = np.array([(sum(x > 3 for x in s.history_ratings) + 1) / 12 for s in test])
    z = np.log(p / (1 - p)) + np.log(rate / (1 - rate))
    assert res["like_product_auc"] == pytest.approx(roc_auc_score([s.label for s in test], z), abs=1e-9)
    by = {}  # UAUC by hand: per-user sklearn AUC over users holding both labels, unweighted mean
    for smp, sc in zip(test, p):
        by.setdefault(smp.user_id, []).append((smp.label, sc))
    per_user = [roc_auc_score(*zip(*v)) for v in by.values() if len({a for a, _ in v}) == 2]
    assert res["uauc_users"] == len(per_user) and res["uauc"] == pytest.approx(np.mean(per_user), abs=1e-9)
    capsys.readouterr()
    main(["score", "--base-model", str(tiny_model_dir), "--user", "1", "--target", "50"])
    (row,) = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    rec, _ = load_tallrec()
    f = rec.interactions.frame
    own = f[(f["user_id"] == "1") & (f["item_id"] != "50")]  # the history never holds the target itself
    last = own.sort_values("timestamp", kind="stable").tail(10)["rating"]
    r = (sum(last > 3) + 1) / 12
    want = 1 / (1 + (1 - row["p_yes"]) / row["p_yes"] * (1 - r) / r)
    assert row["p_yes_x_like_rate"] == pytest.approx(want, rel=1e-9)


def _test_json(tmp_path, n):
    from llmrec.recipe import load_tallrec
    from llmrec.samples.tallrec import write_alpaca

    rec, splits = load_tallrec()
    return write_alpaca(splits.test[:n], rec.catalog, tmp_path / "test.json")


def test_score_user_target_uses_sample_for_user(tiny_model_dir, capsys):
    """`score --user U --target I` for an item U rated recently: the prompt is the one `sample_for_user` builds
    (history without the target, label from U's own rating), as `prompts render --user --target` shows it; the
    command used to keep the target in its own history and report label 0 (issue 14)."""
    from llmrec.model import load_base_model
    from llmrec.recipe import TEXT_TEMPLATE, load_tallrec
    from llmrec.scoring.pointwise import PointwiseScorer
    from llmrec.prompts import load_template
    from llmrec.samples.tallrec import sample_for_user

    rec, _ = load_tallrec()
    f = rec.interactions.frame
    recent = f[f["user_id"] == "1"].sort_values("timestamp", kind="stable").tail(10)
    target = str(recent["item_id"].iloc[-1])  # in the last 10 ratings: the old inline sample kept it there
    s = sample_for_user(rec, "1", target)
    assert target not in s.history and len(s.history) == 10
    main(["score", "--base-model", str(tiny_model_dir), "--user", "1", "--target", target])
    (row,) = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    model, tok = load_base_model(str(tiny_model_dir))
    sc = PointwiseScorer(model, tok, load_template(TEXT_TEMPLATE))
    want = sc.score(sc.encode_samples([s], rec.catalog))[0]
    assert row["p_yes"] == pytest.approx(float(want), rel=1e-6)
    assert row["label"] == s.label == int(float(recent["rating"].iloc[-1]) > 3)
