"""``llmrec prompts ...``: list, show, render, lint, diff, A/B-evaluate templates and a local playground.

A typer sub-app registered by :mod:`llmrec.cli.main`; the logic lives in :mod:`llmrec.prompt_lab` and
:mod:`llmrec.prompt_lab.playground`. User errors raise ``ValueError``/``FileNotFoundError``/``TemplateError``, which
``llmrec.cli.main.main`` prints (flags named by :mod:`llmrec.cli.common`) as one ``llmrec: error: ...`` line with exit code 2; ``lint`` exits 1 when it
finds errors (0 with warnings only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from llmrec._atomic import write_json_atomic
from llmrec.cli.common import PromptsOpt, at_least, check_dtype, default, flag_error
from llmrec.train import TrainSettings
from llmrec.model import DEFAULT_BASE_MODEL
from llmrec.precision import HELP as DTYPE_HELP

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="List, show, render, lint, diff and A/B-evaluate prompt templates.")

_PROMPTS = PromptsOpt
_DATA = typer.Option(None, "--data", help="Dataset folder; default: the embedded MovieLens-100K.")
_BASE_OPT = typer.Option(None, "--base-model", help="Embedded model name, local folder or HF id (for the "
                                                     "tokenizer; chat templates default to the embedded model).")


def _load(name: str, prompts):
    from llmrec.prompts import load_template

    return load_template(name, prompts)


def _tokenizer_for(templates, base_model: Optional[str]):
    """The tokenizer of --base-model; for chat templates without it, the default base model's."""
    from llmrec.model import DEFAULT_BASE_MODEL
    from llmrec.model import load_tokenizer

    if base_model is None and any(t.format == "chat" for t in templates):
        base_model = DEFAULT_BASE_MODEL
    return (load_tokenizer(base_model), base_model) if base_model else (None, None)


def _pick_sample(rec, splits, user, target, index, split):
    from llmrec.samples.tallrec import sample_for_user, split_samples

    if user is not None or target is not None:
        if user is None or target is None:
            raise ValueError("give both --user ID and --target ITEM (or --index N)")
        return sample_for_user(rec, user, target), f"user {user}, target {target}"
    samples = split_samples(splits, split)
    if not -len(samples) <= index < len(samples):
        raise ValueError(f"--index {index}: the {split} split has {len(samples)} samples")
    return samples[index], f"{split}[{index}]"


@app.command("list")
def list_cmd(prompts: Optional[List[Path]] = _PROMPTS,
             as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Templates in the search path (--prompts dirs, $LLMREC_PROMPTS, built-ins): name, task, format, file."""
    from llmrec.prompts import Template, TemplateError, builtin_template_dir, list_templates

    rows = []
    for name, path in sorted(list_templates(prompts).items()):
        try:
            t = Template.from_file(path)
            row = {"name": name, "task": t.task, "format": t.format, "verbalizer": t.verbalizer,
                   "description": t.description, "path": str(path), "sha256": t.sha256[:12]}
        except TemplateError as e:
            row = {"name": name, "path": str(path), "error": str(e)}
        row["builtin"] = path.parent.resolve() == builtin_template_dir().resolve()
        rows.append(row)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        where = "built-in" if r["builtin"] else r["path"]
        if "error" in r:
            typer.echo(f"{r['name']:<20} BROKEN  {r['error']}")
        else:
            desc = r["description"][:60] + ("..." if len(r["description"]) > 60 else "")
            typer.echo(f"{r['name']:<20} {r['task']:<9} {r['format']:<6} {'/'.join(r['verbalizer']):<10} "
                       f"{r['sha256']}  {where}  {desc}")


@app.command()
def show(name: str = typer.Argument(..., help="Template name or path to a .jinja file."),
         prompts: Optional[List[Path]] = _PROMPTS,
         as_json: bool = typer.Option(False, "--json", help="Print JSON (header fields, hash, body).")):
    """Header fields, sha256, variables read by the body, and the body."""
    from llmrec.prompt_lab.render import describe

    t = _load(name, prompts)
    d = describe(t)
    if as_json:
        typer.echo(json.dumps({**d, "body": t.body}, indent=2))
        return
    for k in ("name", "path", "task", "format", "verbalizer", "targets", "variables", "referenced", "sha256",
              "description"):
        typer.echo(f"{k + ':':<13}{d[k]}")
    typer.echo("--- body " + "-" * 60)
    typer.echo(t.body.rstrip("\n"))


@app.command()
def render(name: str = typer.Argument(..., help="Template name or path."),
           user: Optional[str] = typer.Option(None, help="User id (with --target): history = last 10 ratings."),
           target: Optional[str] = typer.Option(None, help="Target item id (with --user)."),
           index: int = typer.Option(0, help="Sample index in --split (when no --user/--target)."),
           split: str = typer.Option("test", help="train, valid, test or all."),
           data: Optional[Path] = _DATA, prompts: Optional[List[Path]] = _PROMPTS,
           base_model: Optional[str] = _BASE_OPT,
           as_json: bool = typer.Option(False, "--json", help="Print JSON (text, label, tokens).")):
    """Print the full prompt of one real sample (stdout); label and token count go to stderr."""
    from llmrec.recipe import load_tallrec
    from llmrec.prompts.render import render_one
    from llmrec.prompt_lab.render import token_lengths

    t = _load(name, prompts)
    tok, bm = _tokenizer_for([t], base_model)
    rec, splits = load_tallrec(data)
    s, where = _pick_sample(rec, splits, user, target, index, split)
    text = render_one(t, s, rec.catalog, tok)
    n_tok = token_lengths(t, tok, [text])[0] if tok is not None else None
    if as_json:
        typer.echo(json.dumps({"template": t.name, "sample": where, "user_id": s.user_id, "target_id": s.target,
                               "label": s.label, "text": text, "tokens": n_tok, "base_model": bm}, indent=2))
        return
    typer.echo(text, nl=not text.endswith("\n"))
    info = f"# {t.name} on {where} (label {s.label}): {len(text)} chars"
    if n_tok is not None:
        info += f", {n_tok} tokens under {bm} (answer position {n_tok - 1})"
    typer.echo(info, err=True)


@app.command()
def lint(name: str = typer.Argument(..., help="Template name or path."),
         base_model: Optional[str] = typer.Option(None, "--base-model",
                                                  help="Tokenizer + config for verbalizer and length checks."),
         split: str = typer.Option("all", help="Samples to render: train, valid, test or all."),
         limit: int = typer.Option(0, help="Only the first N samples of --split (0 = all)."),
         max_length: Optional[int] = typer.Option(None, help="Training max_length (default TrainSettings')."),
         data: Optional[Path] = _DATA, prompts: Optional[List[Path]] = _PROMPTS,
         no_data: bool = typer.Option(False, "--no-data", help="Static checks only (no rendering)."),
         item_noun: Optional[str] = typer.Option(None, "--item-noun", help="The data's item word (book, product): "
                                                 "warn when the template's wording names another kind of item. "
                                                 "Default: the data's (movie for MovieLens)."),
         as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")):
    """Check variables, answer leaks, verbalizer tokens and prompt lengths. Exit 1 on errors, 0 on warnings."""
    from llmrec.prompt_lab.lint import lint_template
    from llmrec.model import load_tokenizer, model_max_positions
    from llmrec.samples.tallrec import split_samples

    t = _load(name, prompts)
    tok = load_tokenizer(base_model) if base_model else None
    max_pos = model_max_positions(base_model) if base_model else None
    samples = catalog = None
    if not no_data:
        from llmrec.recipe import load_tallrec

        rec, splits = load_tallrec(data)
        samples, catalog = split_samples(splits, split), rec.catalog
        samples = samples[:limit] if limit > 0 else samples
    rep = lint_template(t, samples, catalog, tok, max_positions=max_pos, max_length=max_length, item_noun=item_noun)
    typer.echo(json.dumps(rep.to_dict(), indent=2) if as_json else rep.format())
    if rep.exit_code:
        raise SystemExit(rep.exit_code)


@app.command()
def diff(a: str = typer.Argument(..., help="Template A (name or path)."),
         b: str = typer.Argument(..., help="Template B (name or path)."),
         index: int = typer.Option(0, help="Sample index in --split."),
         split: str = typer.Option("test", help="train, valid, test or all."),
         user: Optional[str] = typer.Option(None, help="Or a user id (with --target)."),
         target: Optional[str] = typer.Option(None, help="Target item id (with --user)."),
         side_by_side: bool = typer.Option(False, "--side-by-side", "-y", help="Two columns instead of a unified diff."),
         width: int = typer.Option(160, help="Total width of --side-by-side."),
         data: Optional[Path] = _DATA, prompts: Optional[List[Path]] = _PROMPTS,
         base_model: Optional[str] = _BASE_OPT):
    """The two renderings of the same sample, as a unified diff (or side by side), plus token counts."""
    from llmrec.recipe import load_tallrec
    from llmrec.prompt_lab.render import diff_renderings, token_lengths
    from llmrec.prompts.render import render_one

    ta, tb = _load(a, prompts), _load(b, prompts)
    tok, bm = _tokenizer_for([ta, tb], base_model)
    rec, splits = load_tallrec(data)
    s, where = _pick_sample(rec, splits, user, target, index, split)
    xa, xb = render_one(ta, s, rec.catalog, tok), render_one(tb, s, rec.catalog, tok)
    out = diff_renderings(xa, xb, ta.name, tb.name, side_by_side=side_by_side, width=width)
    typer.echo(out if out else f"{ta.name} and {tb.name} render {where} identically")
    info = f"# {where}: {ta.name} {len(xa)} chars, {tb.name} {len(xb)} chars"
    if tok is not None:
        na, nb = token_lengths(ta, tok, [xa])[0], token_lengths(tb, tok, [xb])[0]
        info += f"; tokens under {bm}: {na} vs {nb} ({nb - na:+d})"
    typer.echo(info, err=True)


@app.command("eval")
def eval_cmd(a: str = typer.Argument(..., help="Template A (reference)."),
             b: str = typer.Argument(..., help="Template B."),
             shots: int = typer.Option(0, help="0 = zero-shot scoring; k > 0 = LoRA-tune each on k train samples."),
             n: int = typer.Option(200, help="Validation samples to evaluate on."),
             seed: int = typer.Option(0, help="Seed of the subset, the k-shot draw, LoRA init and the bootstrap."),
             epochs: int = typer.Option(3, help="k-shot: tuning epochs (kept small)."),
             val_size: int = typer.Option(32, help="Early-stopping samples (excluded from the evaluation subset)."),
             lr: float = typer.Option(default(TrainSettings, "learning_rate"), "--lr", help="k-shot: peak learning rate."),
             resamples: int = typer.Option(1000, help="Paired bootstrap resamples."),
             base_model: str = typer.Option(DEFAULT_BASE_MODEL, "--base-model", help="Base model."),
             dtype: str = typer.Option("auto", help=DTYPE_HELP),
             data: Optional[Path] = _DATA, prompts: Optional[List[Path]] = _PROMPTS,
             out: Optional[Path] = typer.Option(None, "--out", help="Write the full result (with scores) as JSON.")):
    """AUC of A and B on the same validation subset, B - A, and a paired bootstrap 95% CI of the difference."""
    from llmrec.model import load_base_model
    from llmrec.recipe import load_tallrec
    from llmrec.prompt_lab.compare import compare_templates
    from llmrec.train import TrainSettings

    # checked here, before any model loads (the library would raise later, naming its own arguments)
    at_least("--resamples", resamples, 1, "the 95% CI is a bootstrap over resamples")
    at_least("--shots", shots, 0, "0 = zero-shot")
    at_least("--seed", seed, 0)
    check_dtype(dtype)
    if shots > 0:
        try:
            TrainSettings(output_dir="unused", epochs=epochs, learning_rate=lr)
        except ValueError as e:
            raise flag_error(e) from None
    ta, tb = _load(a, prompts), _load(b, prompts)
    rec, splits = load_tallrec(data)
    if shots > len(splits.train):
        raise ValueError(f"--shots {shots}: larger than the train split ({len(splits.train)} samples)")
    res = compare_templates([ta, tb], splits, rec.catalog, lambda: load_base_model(base_model), n=n, seed=seed,
                            shots=shots, val_size=val_size, epochs=epochs, train_overrides={"learning_rate": lr},
                            dtype=dtype, n_resamples=resamples, log=lambda m: typer.echo(m, err=True))
    res["base_model"] = base_model
    c = res["comparisons"][0]
    typer.echo(f"{res['n']} valid samples ({res['positives']} positive), seed {seed}, "
               f"{'zero-shot' if shots == 0 else f'{shots}-shot'}, base model {base_model}")
    for tr in res["templates"]:
        extra = f"  (best val AUC {tr['train']['best_val_auc']})" if "train" in tr else ""
        typer.echo(f"  {tr['name']:<24} AUC {tr['auc']:.4f}{extra}")
    typer.echo(f"  {c['b']} - {c['a']}: {c['diff']:+.4f}  95% CI [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]  "
               f"(paired bootstrap, {c['n_resamples']} resamples, p = {c['p_value']:.3f})")
    if out:
        write_json_atomic(out, res)
        typer.echo(f"wrote {out}", err=True)


@app.command()
def playground(host: str = typer.Option("127.0.0.1", help="Address to bind (keep it local)."),
               port: int = typer.Option(7860, help="Port (0 = any free port)."),
               template: str = typer.Option("tallrec", "--template", help="Template to start from."),
               base_model: Optional[str] = typer.Option(DEFAULT_BASE_MODEL, "--base-model",
                                                        help="Tokenizer (and model for --score)."),
               score: bool = typer.Option(False, "--score/--no-score", help="Load the model and show P(Yes)."),
               data: Optional[Path] = _DATA, prompts: Optional[List[Path]] = _PROMPTS):
    """A local web page to edit a template and see renderings, token counts and scores live."""
    from llmrec.prompt_lab.playground import PlaygroundContext, serve

    ctx = PlaygroundContext.load(data=data, base_model=base_model, score=score, prompt_dirs=prompts,
                                 start_template=template)
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: binding {host}: anyone who can reach it can run templates and the model", err=True)
    serve(ctx, host=host, port=port, log=lambda m: typer.echo(m, err=True))



