"""Personalization cost: TimeInv step / Textual Inversion step, wall time per character, peak memory.

    .venv/bin/python bench/timeinv.py            # ~4 min on 2 cores

- step ratio: mean optimizer-step time of TimeInv vs TI (no LoRA), same everything else, measured
  back to back in one process on ``--steps`` steps each, alternating 3 times (goal <= 1.10);
- layout ratio: the default method's step with the model's convolution weights in the default (contiguous)
  layout / in channels_last, the layout the generator loads with; alternating 3 times (what it saves);
- wall: ``personalize`` at the default settings (TimeInv + LoRA, PersonalizeConfig()) for one novel
  character, including the concept bank (goal <= 2 min);
- peak RSS of a fresh process doing that.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from story_pipeline.render.generator import load_generator  # noqa: E402
from story_pipeline.personalize.config import PersonalizeConfig
from story_pipeline.personalize.train import personalize  # noqa: E402
from story_pipeline.toyworld.corpus import NOVEL_CHARACTERS, write_reference_images  # noqa: E402

WALL = """
import sys, time, resource
from PIL import Image
from story_pipeline.render.generator import load_generator
from story_pipeline.personalize.config import PersonalizeConfig
from story_pipeline.personalize.train import personalize
from story_pipeline.toyworld.corpus import NOVEL_CHARACTERS, write_reference_images
refs = [Image.open(p).convert("RGB") for p in write_reference_images(NOVEL_CHARACTERS[0], sys.argv[1], n=4)]
g = load_generator("toyworld", sys.argv[2] or None)
t0 = time.perf_counter()
r = personalize(refs, "<tabby>", "cat", g, PersonalizeConfig(sample_every=0))
print(time.perf_counter() - t0, r.step_seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="")
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    tmp = Path("data/bench/timeinv_refs")
    refs = [Image.open(q).convert("RGB") for q in write_reference_images(NOVEL_CHARACTERS[0], tmp, n=4)]
    gen = load_generator("toyworld", a.model or None)
    times = {"timeinv": [], "textual_inversion": []}
    for _ in range(3):
        for m in times:
            times[m].append(personalize(refs, "<tabby>", "cat", gen,
                                        PersonalizeConfig(method=m, steps=a.steps, sample_every=0)).step_seconds)
    ti, tinv = float(np.min(times["textual_inversion"])), float(np.min(times["timeinv"]))
    layouts = {torch.channels_last: [], torch.contiguous_format: []}
    try:
        for _ in range(3):
            for fmt in layouts:
                gen.model.to(memory_format=fmt)
                layouts[fmt].append(personalize(refs, "<tabby>", "cat", gen, PersonalizeConfig(
                    steps=a.steps, sample_every=0, eval_every=0)).step_seconds)
    finally:
        gen.model.to(memory_format=torch.channels_last)
    layout_ratio = float(np.min(layouts[torch.contiguous_format]) / np.min(layouts[torch.channels_last]))
    out = subprocess.run([sys.executable, "-c", WALL, str(tmp), a.model], capture_output=True, text=True, check=True)
    wall, step, rss = (float(x) for x in out.stdout.split()[-3:])
    res = {"ti_step_s": ti, "timeinv_step_s": tinv, "step_ratio": tinv / ti, "layout_ratio": layout_ratio,
           "default_wall_s": wall, "default_step_s": step, "default_steps": PersonalizeConfig().steps,
           "peak_rss_mb": rss / 1024}
    print("| quantity | value |\n|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v:.3f} |")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
