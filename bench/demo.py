"""The README demo, timed by stage, with its peak memory: `story demo`'s own code, in-process, on a
fresh temporary data root (ToyWorld corpus of 300 clips, the tabby story at demo settings).

    .venv/bin/python bench/demo.py            # ~5 min on 2 cores

Goal (issue 6): the whole demo <= 5 minutes on this machine after installation. Model loading is
included (a user pays it); the Python import of the CLI is not (~3 s).
"""

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["STORY_DATA_ROOT"] = str(Path(tmp) / "data")
        from story_pipeline.cli import run_demo

        t0 = time.perf_counter()
        timings = run_demo()
        total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print("\nREADME demo (`story demo`), in-process, one run")
    print(f"{'stage':<52}| {'seconds':>8} | {'share':>6}")
    for stage, sec in timings.items():
        print(f"{stage:<52}| {sec:8.1f} | {sec / total:6.1%}")
    print(f"{'total':<52}| {total:8.1f} | goal <= 300 s {'MET' if total <= 300 else 'MISSED'}")
    print(f"peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    main()
