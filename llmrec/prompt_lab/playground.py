"""A local prompt playground: edit a template, see renderings, token counts and scores of a few samples live.

Standard library only (:mod:`http.server`, bound to 127.0.0.1 by default): one HTML page and a JSON API.

* ``GET /`` -- the page (a template editor; previews update as you type).
* ``GET /api/templates`` -- ``{"templates": {name: source}, "start": name}``.
* ``POST /api/preview`` (``Content-Type: application/json``) -- body ``{"template": text, "indices": [int],
  "split": "valid", "score": bool}``; answer: :func:`preview`'s dict.

All logic is in :func:`preview` (no server needed; the tests call it headless). Templates are rendered by
the sandbox of :mod:`llmrec.prompts`, so an edited template cannot reach Python internals, files or the
network. The server answers only requests whose ``Host`` is the bound local address (no DNS rebinding) and
only JSON POSTs (a cross-site form cannot send them without a CORS preflight, which is never granted).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["PlaygroundContext", "preview", "make_server", "serve", "MAX_SAMPLES", "MAX_BODY_BYTES"]

MAX_SAMPLES = 16
MAX_BODY_BYTES = 256 * 1024


@dataclass
class PlaygroundContext:
    """What previews need, loaded once.

    Attributes:
        rec: :class:`llmrec.data.RecData` (catalog for titles); splits: :class:`TallrecSplits`.
        tokenizer: for token counts, chat templates and the verbalizer (None: those are skipped).
        model: for scores (None: no scores).
        max_positions: the model's position limit (for length findings).
        templates: name -> source text offered in the page's menu.
    """

    rec: Any
    splits: Any
    tokenizer: Any = None
    model: Any = None
    base_model: str | None = None
    max_positions: int | None = None
    templates: dict[str, str] = field(default_factory=dict)
    start_template: str = "tallrec"
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, data: str | Path | None = None, base_model: str | None = None, score: bool = False,
             prompt_dirs: Sequence[str | Path] | None = None, start_template: str = "tallrec") -> "PlaygroundContext":
        """Load the data (default embedded ML-100K), the tokenizer and, with ``score``, the model.

        Raises:
            FileNotFoundError / OSError / AssetError: data, tokenizer or model cannot be loaded.
        """
        from llmrec.recipe import load_tallrec
        from llmrec.model import load_tokenizer, model_max_positions
        from llmrec.prompts import list_templates

        rec, splits = load_tallrec(data)
        tok = model = max_pos = None
        if base_model:
            if score:
                from llmrec.model import load_base_model

                model, tok = load_base_model(base_model)
            else:
                tok = load_tokenizer(base_model)
            max_pos = model_max_positions(base_model)
        templates = {n: p.read_text(encoding="utf-8") for n, p in sorted(list_templates(prompt_dirs).items())}
        if start_template not in templates:
            p = Path(start_template)
            if not p.is_file():
                raise FileNotFoundError(f"start_template {start_template!r}: unknown; known: {sorted(templates)}")
            templates[p.stem] = p.read_text(encoding="utf-8")
            start_template = p.stem
        return cls(rec, splits, tok, model, base_model, max_pos, templates, start_template)


def preview(template_text: str, sample_indices: Sequence[int] = (0, 1, 2), split: str = "valid", *,
            context: PlaygroundContext, score: bool = False) -> dict:
    """Render (and optionally score) a few samples with a template given as text.

    Args:
        template_text: a whole template file (YAML header + body).
        sample_indices: indices into ``split`` (at most :data:`MAX_SAMPLES`).
        split: ``train``, ``valid``, ``test`` or ``all``.
        context: data, tokenizer and (for scores) model.
        score: add P(positive word) per sample (needs ``context.model``).

    Returns:
        JSON-serialisable dict: ``ok`` (False on a header/syntax error or a lint error), ``error`` (str or
        None: the :class:`TemplateError` message), ``template`` (header fields and sha256), ``lint``
        (list of ``{level, code, message}`` over the chosen samples), ``stats`` (token statistics),
        ``samples`` (per sample: ``index, user_id, target_id, label, text, chars, tokens, p_yes, error``).
        Never raises for a bad template or index; those come back as ``error`` entries.
    """
    from llmrec.prompt_lab.render import describe, token_lengths
    from llmrec.prompt_lab.lint import lint_template
    from llmrec.prompts.render import render_one
    from llmrec.samples.tallrec import split_samples
    from llmrec.prompts import Template, TemplateError, TemplateRenderError

    out: dict = {"ok": False, "error": None, "template": None, "lint": [], "stats": {}, "samples": []}
    try:
        tpl = Template.from_string(template_text, name="playground")
    except TemplateError as e:
        out["error"] = str(e)
        return out
    out["template"] = {k: v for k, v in describe(tpl).items() if k != "path"}
    try:
        pool = split_samples(context.splits, split)
    except ValueError as e:
        out["error"] = str(e)
        return out
    indices = [int(i) for i in list(sample_indices)[:MAX_SAMPLES]]
    picked = []
    for i in indices:
        if not 0 <= i < len(pool):
            out["samples"].append({"index": i, "error": f"index {i}: the {split} split has {len(pool)} samples"})
        else:
            picked.append((i, pool[i]))
    rep = lint_template(tpl, [s for _, s in picked], context.rec.catalog, context.tokenizer,
                        max_positions=context.max_positions)
    out["lint"] = [f.__dict__ for f in rep.findings if f.code != "no-tokenizer" or context.tokenizer is None]
    out["stats"] = rep.stats
    texts, rows = [], []
    for i, s in picked:
        row = {"index": i, "user_id": s.user_id, "target_id": s.target, "label": s.label, "text": None,
               "chars": None, "tokens": None, "p_yes": None, "error": None}
        try:
            row["text"] = render_one(tpl, s, context.rec.catalog, context.tokenizer)
            row["chars"] = len(row["text"])
            texts.append(row["text"])
        except (TemplateRenderError, ValueError, KeyError) as e:
            row["error"] = str(e)
        rows.append(row)
    ok_rows = [r for r in rows if r["text"] is not None]
    if context.tokenizer is not None and ok_rows:
        for r, n in zip(ok_rows, token_lengths(tpl, context.tokenizer, texts)):
            r["tokens"] = n
    if score and ok_rows:
        if context.model is None:
            out["lint"].append({"level": "info", "code": "no-model", "message": "start with --score to see scores"})
        elif tpl.task != "pointwise":
            out["lint"].append({"level": "info", "code": "no-score", "message": "only pointwise templates are scored"})
        elif not rep.errors:
            from llmrec.scoring.pointwise import PointwiseScorer

            with context.lock:
                sc = PointwiseScorer(context.model, context.tokenizer, tpl)
                p = sc.score(sc.encode(texts))
            for r, v in zip(ok_rows, p):
                r["p_yes"] = float(v)
    out["samples"] = rows + [r for r in out["samples"] if "text" not in r]
    out["ok"] = not rep.errors and all(r.get("error") is None for r in out["samples"])
    return out


# ------------------------------------------------------------------------------------------------ server
_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>llmrec prompt playground</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;display:flex;height:100vh}
#left{width:46%;display:flex;flex-direction:column;padding:8px;box-sizing:border-box}
#right{flex:1;overflow:auto;padding:8px;border-left:1px solid #ccc}
textarea{flex:1;font:13px monospace;width:100%;box-sizing:border-box}
pre{white-space:pre-wrap;background:#f6f6f6;padding:6px;margin:4px 0}
.error{color:#b00}.warning{color:#a60}.info{color:#555}.meta{color:#333;font-size:12px}
</style></head><body>
<div id="left">
<div>template <select id="tpl"></select> split <select id="split"><option>valid</option><option>test</option>
<option>train</option></select> samples <input id="idx" value="0,1,2" size="10">
<label><input type="checkbox" id="score"> scores</label></div>
<textarea id="src" spellcheck="false"></textarea></div>
<div id="right"><div id="status"></div><div id="lint"></div><div id="out"></div></div>
<script>
let T={}, timer=null;
const $=id=>document.getElementById(id);
function el(tag,cls,text){const e=document.createElement(tag);if(cls)e.className=cls;if(text!=null)e.textContent=text;return e}
async function load(){const r=await fetch('/api/templates');const j=await r.json();T=j.templates;
 for(const n of Object.keys(T)){const o=el('option',null,n);$('tpl').appendChild(o)}
 $('tpl').value=j.start;$('src').value=T[j.start];run()}
async function run(){const idx=$('idx').value.split(',').map(s=>parseInt(s)).filter(n=>!isNaN(n));
 const body={template:$('src').value,indices:idx,split:$('split').value,score:$('score').checked};
 $('status').textContent='...';
 const r=await fetch('/api/preview',{method:'POST',headers:{'Content-Type':'application/json'},body:JSON.stringify(body)});
 const j=await r.json();$('status').textContent=j.ok?'ok':'problems';$('lint').replaceChildren();$('out').replaceChildren();
 if(j.error){$('lint').appendChild(el('div','error',j.error));return}
 for(const f of j.lint){$('lint').appendChild(el('div',f.level,f.level+': ['+f.code+'] '+f.message))}
 for(const s of j.samples){const h=el('div','meta','#'+s.index+(s.label!=null?'  label '+s.label:'')+
   (s.tokens!=null?'  '+s.tokens+' tokens':'')+(s.chars!=null?'  '+s.chars+' chars':'')+
   (s.p_yes!=null?'  P(yes) '+s.p_yes.toFixed(4):''));$('out').appendChild(h);
   $('out').appendChild(s.error?el('div','error',s.error):el('pre',null,s.text))}}
function later(){clearTimeout(timer);timer=setTimeout(run,300)}
$('src').addEventListener('input',later);$('idx').addEventListener('input',later);
$('split').addEventListener('change',run);$('score').addEventListener('change',run);
$('tpl').addEventListener('change',()=>{$('src').value=T[$('tpl').value];run()});
load();
</script></body></html>"""


def make_server(context: PlaygroundContext, host: str = "127.0.0.1", port: int = 0,
                log: Callable[[str], None] | None = None) -> ThreadingHTTPServer:
    """An HTTP server for the playground (not started: call ``serve_forever()``; port 0 = a free port).

    Raises:
        OSError: the address cannot be bound.
    """

    class Handler(BaseHTTPRequestHandler):
        server_version = "llmrec-playground"

        def log_message(self, fmt, *args):  # quiet unless asked
            if log:
                log("playground: " + fmt % args)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy",
                             "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj) -> None:
            self._send(code, json.dumps(obj, default=str).encode("utf-8"), "application/json")

        def _host_ok(self) -> bool:
            h = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            return h in ("127.0.0.1", "localhost", "::1", self.server.server_address[0])

        def do_GET(self):
            if not self._host_ok():
                return self._json(403, {"error": "bad Host header"})
            if self.path == "/" or self.path.startswith("/?"):
                return self._send(200, _PAGE.encode("utf-8"), "text/html; charset=utf-8")
            if self.path == "/api/templates":
                return self._json(200, {"templates": context.templates, "start": context.start_template})
            return self._json(404, {"error": f"no such path {self.path}"})

        def do_POST(self):
            if not self._host_ok():
                return self._json(403, {"error": "bad Host header"})
            if self.path != "/api/preview":
                return self._json(404, {"error": f"no such path {self.path}"})
            if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                return self._json(415, {"error": "Content-Type must be application/json"})
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                n = -1
            if not 0 < n <= MAX_BODY_BYTES:
                return self._json(413, {"error": f"body must be 1..{MAX_BODY_BYTES} bytes"})
            try:
                req = json.loads(self.rfile.read(n))
                text = req["template"]
                indices = [int(i) for i in req.get("indices", [0, 1, 2])]
                split = str(req.get("split", "valid"))
                if not isinstance(text, str):
                    raise TypeError("template must be a string")
            except (ValueError, KeyError, TypeError) as e:
                return self._json(400, {"error": f"bad request: {type(e).__name__}: {e}"})
            try:
                res = preview(text, indices, split, context=context, score=bool(req.get("score", False)))
            except Exception as e:  # keep serving; report the failure in the page
                res = {"ok": False, "error": f"{type(e).__name__}: {e}", "lint": [], "samples": []}
            return self._json(200, res)

    return ThreadingHTTPServer((host, port), Handler)


def serve(context: PlaygroundContext, host: str = "127.0.0.1", port: int = 7860,
          log: Callable[[str], None] = print) -> None:
    """Serve the playground until Ctrl-C (prints the URL)."""
    srv = make_server(context, host, port)
    h, p = srv.server_address[:2]
    log(f"llmrec prompt playground on http://{'[' + h + ']' if ':' in h else h}:{p}/  (Ctrl-C to stop)")
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
