#!/usr/bin/env python3
"""All GPU checks of the scoring path in one command (~5 minutes on one H200); JSON + a markdown table to $OUT.

    PYTHONUNBUFFERED=1 python3 eval/gpu_check.py            # on the GPU machine, from the repository root
    python3 eval/gpu_check.py --dry-run --out DIR           # on a CPU: the same steps in their CPU modes

Environment it assumes (the device machine of this workplace): a fresh copy of the repository and the
machine's own ``python3``, whose image holds a CUDA build of torch, triton, transformers, peft, numpy and
pytest. Nothing is installed and nothing is downloaded: the repository root is put on ``PYTHONPATH`` (the
package imports from the checkout; ``llmrec/kernels`` are symlinks into ``kernels/`` inside it). The ``.venv``
that ``make install`` builds here cannot be carried there (CPU torch build, this machine's Python), so pass
``--python PATH`` only for another prepared interpreter with CUDA torch. faiss is not in that image: wheels
carried in ``.whl/`` (README, "GPU scoring") are installed with ``pip --no-index --target`` into a temporary
folder first; without them the FAISS step records that faiss is missing.

Steps, each in its own subprocess with its own timeout; a failing or timed-out step is recorded and the next
one still runs:

1. ``env``       nvidia-smi, python/torch/triton/transformers versions, CUDA device;
2. ``gpu_tests`` ``pytest -m gpu`` on the kernel, custom-op and GPU scoring tests (skipped on a CPU);
3. ``kernel``    ``eval/bench_kernel_gpu.py`` (operating points, baselines, % of matmul, CUDA graphs, sweep);
4. ``e2e``       ``eval/bench_e2e_gpu.py`` (candidates/s and peak memory, prefix-shared vs full prompts, parity);
5. ``faiss``     the FAISS GPU probe: ``VectorIndex(use_gpu="auto")`` against ``use_gpu=False`` (flat and IVF)
                 must return the same ids and scores, on the GPU where the wheel has kernels for it, else
                 through the CPU fallback (which device served is recorded).

Writes ``gpu_check.json`` (every step: status, rc, seconds, output tail, and the benchmarks' own JSON),
``gpu_check.md`` (a summary table plus the benchmarks' tables), ``gpu_check.log`` (every step's whole output)
and the benchmarks' own JSON/markdown (7 files) to ``--out`` (default ``$OUT``, else
``results/gpu_check``). Exit status 0 when every step passed (a skipped step counts as passed).
``--dry-run`` (automatic without CUDA) runs the CPU modes: GPU tests skip, the benchmarks run their CPU smoke
parts, the FAISS step checks the CPU fallback; tests/test_bench_gpu_scripts.py runs it so it cannot rot.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GPU_TESTS = ["tests/test_kernels.py", "tests/test_kernel_op.py", "tests/scoring/test_prefix_packing.py"]
#: step -> timeout in seconds (sum 9 min 35 s: inside the device tool's 10-minute limit per command; expected
#: total ~5 min). If a step times out, rerun the rest alone: ``--steps kernel,e2e`` (or ``--scale 1.5``).
TIMEOUTS = {"env": 30, "gpu_tests": 140, "kernel": 210, "e2e": 150, "faiss": 45}

FAISS_PROBE = r"""
import json, sys, time
import numpy as np
out = {}
try:
    import faiss
except Exception as e:
    print("RESULT " + json.dumps({"status": "skipped", "reason": f"faiss not importable: {e}"}))
    sys.exit(0)
from llmrec.retrieval import index as I
out["faiss"] = faiss.__version__
out["gpu_symbols"] = hasattr(faiss, "StandardGpuResources")
out["num_gpus"] = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
rng = np.random.default_rng(0)
xb = rng.standard_normal((20000, 64)).astype(np.float32)
xq = rng.standard_normal((200, 64)).astype(np.float32)
ok = True
for kind in ("flat", "ivf"):
    t0 = time.time()
    a = I.VectorIndex(kind=kind, use_gpu="auto", nlist=64, nprobe=64).build(xb)
    b = I.VectorIndex(kind=kind, use_gpu=False, nlist=64, nprobe=64).build(xb)
    Da, Ia = a.search(xq, 10)
    Db, Ib = b.search(xq, 10)
    same_ids = float((Ia == Ib).mean())
    max_dd = float(np.abs(Da - Db).max())
    good = same_ids >= 0.99 and max_dd <= 1e-3
    ok = ok and good
    out[kind] = {"device": a.device, "same_ids": same_ids, "max_score_diff": max_dd, "ok": good,
                 "seconds": round(time.time() - t0, 2)}
out["gpu_available"] = bool(I.gpu_available())
out["status"] = "passed" if ok else "failed"
print("RESULT " + json.dumps(out))
sys.exit(0 if ok else 1)
"""

ENV_PROBE = r"""
import json, platform, subprocess, sys
info = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform()}
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda"] = torch.cuda.is_available()
    if info["cuda"]:
        info["device"] = torch.cuda.get_device_name(0)
        info["capability"] = list(torch.cuda.get_device_capability(0))
        info["bf16"] = torch.cuda.is_bf16_supported()
except Exception as e:
    info["torch_error"] = str(e)
for mod in ("triton", "transformers", "peft", "numpy", "faiss"):
    try:
        info[mod] = __import__(mod).__version__
    except Exception as e:
        info[mod] = f"missing ({type(e).__name__})"
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm",
                                         "--format=csv,noheader"], capture_output=True, text=True,
                                        timeout=10).stdout.strip()
except Exception as e:
    info["nvidia_smi"] = f"unavailable ({type(e).__name__})"
import llmrec.kernels as K, llmrec.precision as P
info["has_triton"] = K.HAS_TRITON
info["weight_dtype_auto"] = str(P.weight_dtype("auto"))
print("RESULT " + json.dumps(info))
"""


def run_step(name: str, cmd: list[str], env: dict, timeout: int, log: Path) -> dict:
    """Run one step; never raises. Returns status (passed / failed / timeout / skipped), rc, seconds, tail."""
    t0 = time.time()
    rec = {"step": name, "cmd": " ".join(cmd), "timeout_s": timeout}
    try:  # own process group, so a timeout also ends the step's children (pytest's workers, compilers)
        p = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=timeout)
            rec["rc"] = p.returncode
            rec["status"] = "passed" if p.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                p.kill()
            out, _ = p.communicate()
            rec["rc"] = None
            rec["status"] = "timeout"
        out = out or ""
    except Exception as e:  # cannot start the interpreter, ...
        out = f"{type(e).__name__}: {e}"
        rec["rc"] = None
        rec["status"] = "failed"
    rec["seconds"] = round(time.time() - t0, 1)
    with open(log, "a") as f:  # one log for all steps: the device tool returns at most 8 files from $OUT
        f.write(f"===== {name}: {rec['status']} ({rec['seconds']} s) {rec['cmd'][:300]}\n{out}\n")
    result = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if result:
        try:
            rec["result"] = json.loads(result[-1][len("RESULT "):])
            if rec["result"].get("status") == "skipped":
                rec["status"] = "skipped"
        except ValueError:
            pass
    rec["tail"] = out[-3000:]
    print(f"[{name}] {rec['status']} in {rec['seconds']} s (rc {rec['rc']})", flush=True)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU modes of every step (automatic without CUDA)")
    ap.add_argument("--out", default=None, help="output folder (default $OUT, else results/gpu_check)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the steps (default: this one)")
    ap.add_argument("--steps", default=",".join(TIMEOUTS), help="comma list of steps to run")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every step's timeout")
    args = ap.parse_args(argv)

    out = Path(args.out or os.environ.get("OUT") or ROOT / "results" / "gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "gpu_check.log"
    logs.write_text("")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("TRITON_INTERPRET", None)
    py = args.python

    wheels = ROOT / ".whl"
    if wheels.is_dir() and any(wheels.glob("*.whl")):
        site = Path("/tmp/llmrec-site")
        subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels.glob("*.whl"))],
                       timeout=120, check=False)
        env["PYTHONPATH"] += os.pathsep + str(site)  # after the repo and the image's own packages

    try:
        cuda = subprocess.run([py, "-c", "import torch; print(torch.cuda.is_available())"], env=env,
                              capture_output=True, text=True, timeout=60).stdout.strip() == "True"
    except Exception:
        cuda = False
    dry = args.dry_run or not cuda
    if dry:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the same CPU modes even on a machine with a GPU
    print(f"gpu_check: {'dry run (CPU modes)' if dry else 'GPU run'}; output {out}", flush=True)

    kernel_json, e2e_json = out / "bench_kernel_gpu.json", out / "bench_e2e_gpu.json"
    kernel_md, e2e_md = out / "bench_kernel_gpu.md", out / "bench_e2e_gpu.md"
    cmds = {
        "env": [py, "-c", ENV_PROBE],
        "gpu_tests": [py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs", *GPU_TESTS],
        "kernel": [py, "eval/bench_kernel_gpu.py", "--json", str(kernel_json), "--md", str(kernel_md)],
        "e2e": [py, "eval/bench_e2e_gpu.py", "--json", str(e2e_json), "--md", str(e2e_md)]
        + (["--cpu-small"] if dry else []),
        "faiss": [py, "-c", FAISS_PROBE],
    }
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    t0 = time.time()
    records = []
    for name in steps:
        if name not in cmds:
            records.append({"step": name, "status": "failed", "tail": f"unknown step {name!r}"})
            continue
        rec = run_step(name, cmds[name], env, max(1, int(TIMEOUTS[name] * args.scale)), logs)
        if name == "gpu_tests" and rec["rc"] == 5:  # pytest: no test selected
            rec["status"] = "failed"
        for key, path in (("kernel", kernel_json), ("e2e", e2e_json)):
            if name == key and path.is_file():
                try:
                    rec["result"] = json.loads(path.read_text())
                except ValueError:
                    pass
        records.append(rec)
    ok = all(r["status"] in ("passed", "skipped") for r in records)
    summary = {"mode": "dry-run" if dry else "gpu", "ok": ok, "wall_s": round(time.time() - t0, 1),
               "steps": records}
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=1, default=str))
    md = [f"# gpu_check ({summary['mode']}): {'all steps passed' if ok else 'SOME STEPS FAILED'}, "
          f"{summary['wall_s']} s", "", "| step | status | seconds | note |", "|---|---|---|---|"]
    for r in records:
        note = ""
        res = r.get("result") or {}
        if r["step"] == "env":
            note = f"{res.get('device', 'no CUDA')}, torch {res.get('torch')}, triton {res.get('triton')}"
        elif r["step"] == "gpu_tests":
            tail = [ln for ln in r.get("tail", "").splitlines() if " passed" in ln or " failed" in ln
                    or " skipped" in ln]
            note = tail[-1].strip("= ") if tail else ""
        elif r["step"] == "faiss":
            note = res.get("reason") or ", ".join(f"{k}: {v['device']} same ids {v['same_ids']:.3f}"
                                                  for k, v in res.items() if isinstance(v, dict))
        elif res.get("failures"):
            note = "; ".join(res["failures"])[:200]
        md.append(f"| {r['step']} | {r['status']} | {r.get('seconds', '-')} | {note} |")
    for path in (kernel_md, e2e_md):
        if path.is_file():
            md += ["", path.read_text()]
    (out / "gpu_check.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
