"""What loading the code location costs: `import story_pipeline.definitions` (every Dagster run and
step process pays it) beside `import dagster` alone, in fresh interpreters, with peak memory.

    .venv/bin/python bench/imports.py                       # ~1 min on 2 cores
    .venv/bin/python bench/imports.py --repo ../old-checkout # the same for another checkout (a before figure)

Goal: the definitions import <= 2 s on this machine (heavy libraries are imported where they are
used, not when the code location loads). Also lists which heavy modules the import pulls in.
"""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # measured tree (--repo changes it)
HEAVY = ("torch", "diffusers", "transformers", "lancedb", "decord", "av", "scenedetect", "mlflow", "cv2",
         "controlnet_aux", "peft")
PROBE = """
import json, resource, sys, time
t = time.perf_counter()
import {module}
s = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"s": s, "mb": peak, "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def measure(module: str, runs: int, repo: Path) -> dict:
    out = []
    env = dict(os.environ, PYTHONPATH=str(repo))
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)], capture_output=True,
                           text=True, cwd=repo, env=env, check=True)
        out.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return {"s": statistics.median(o["s"] for o in out), "mb": statistics.median(o["mb"] for o in out),
            "heavy": out[-1]["heavy"]}


def main(runs: int = 5, repo: Path = REPO) -> None:
    rows = {m: measure(m, runs, repo) for m in ("dagster", "story_pipeline.definitions", "story_pipeline.cli")}
    base = rows["dagster"]["s"]
    print(f"\nImport cost in a fresh interpreter (median of {runs}), tree {repo}")
    print(f"{'module':<30}| {'seconds':>8} | {'x dagster':>9} | {'peak MB':>8} | heavy modules loaded")
    for m, r in rows.items():
        print(f"{m:<30}| {r['s']:8.2f} | {r['s'] / base:9.2f} | {r['mb']:8.0f} | {', '.join(r['heavy']) or '-'}")
    d = rows["story_pipeline.definitions"]["s"]
    print(f"goal: story_pipeline.definitions <= 2 s: {'MET' if d <= 2 else 'MISSED'} ({d:.2f} s)")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout to measure (default: this one)")
    args = parser.parse_args()
    main(args.runs, args.repo.resolve())
