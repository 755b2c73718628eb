"""Generator cost and quality vs steps (ToyWorld video model).

    .venv/bin/python bench/generate.py                 # ~5 min on 2 cores
    .venv/bin/python bench/generate.py --model /path/to/toyworld_video --clips 6

Table 1 (one 16-frame 64x64 shot, classifier-free guidance = batch of 2):
- forward: one U-Net forward (best of 5) and its FLOPs (torch.utils.flop_counter), achieved FLOP/s;
- precision: the generator's (bf16 autocast where the CPU runs bf16 natively, else float32);
- matmul: FLOP/s of a 1024^3 matmul in that precision on this machine, best of 5;
- sampler: ``generate`` at 20 DPM-Solver++ steps; sampler / (forward x steps) (goal <= 1.10), and
  in-call: one generate call's total time / the U-Net time inside it (the same ratio, immune to load
  changing between the separate measurements on a shared machine);
- other precision: one ``generate`` in the other precision (bf16 autocast <-> float32) / the sampler time:
  what the precision choice saves (bf16 emulated on an AVX2-only CPU is ~13x slower);
- layout: ``generate`` with the model's convolution weights in the default (contiguous) layout / in
  channels_last, the layout the generator loads with (alternating, twice each): what that layout saves;
- peak RSS of a fresh process generating one shot (model + text encoder + sampling).
Table 2, quality vs steps on ``--clips`` held-out clips (own caption, own depth, tau 1): depth
adherence (si-RMSE, lower is better), Sem, and species / colour recognised (toy CLIP zero-shot, as
``video_eval``) for DDIM 50 and DPM-Solver++ 20 / 14 / 10 (``--samplers``: other rows, e.g. dpmpp:20,dpmpp:12).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from story_pipeline.depth.estimators import load_estimator
from story_pipeline.render.generator import load_generator  # noqa: E402
from story_pipeline.metrics import sem_score  # noqa: E402
from story_pipeline.eval.video import eval_clips, get_judge  # noqa: E402


def best_of(fn, n=5) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def peak_rss_mb(model: str | None) -> float:
    code = ("import numpy as np, resource; from story_pipeline.render.generator import load_generator; "
            f"g = load_generator('toyworld', {model!r}); "
            "g.generate('a red cat jumps', np.zeros((16, 64, 64), np.float32), steps=20); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--clips", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--samplers", default="ddim:50,dpmpp:20,dpmpp:14,dpmpp:10", help="table 2's rows: sampler:steps,...")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    gen = load_generator("toyworld", a.model)
    model = gen.model
    x = torch.randn(2, 3, 16, 64, 64)
    ctx = torch.cat([gen.null_embeds(), gen.encode_prompt("a red cat jumps in the snow")])
    depth = torch.zeros(1, 1, 16, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=gen.bf16):
        feats = [torch.cat([f, f]) for f in model.structure_features(depth)]
        fwd = best_of(lambda: model(x, torch.tensor(500), ctx, structure=feats))
        with FlopCounterMode(display=False) as fc:
            model(x, torch.tensor(500), ctx, structure=feats)
    flops = fc.get_total_flops()
    a_ = torch.randn(1024, 1024, dtype=torch.bfloat16 if gen.bf16 else torch.float32)
    mm = best_of(lambda: a_ @ a_)
    mm_flops = 2 * 1024 ** 3 / mm
    steps = 20
    d = np.zeros((16, 64, 64), np.float32)
    samp = best_of(lambda: gen.generate("a red cat jumps in the snow", d, steps=steps), n=2)
    meta = gen.generate("a red cat jumps in the snow", d, steps=steps).metadata  # in-call: immune to load changes
    gen.bf16 = not gen.bf16
    try:
        t0 = time.perf_counter()  # once: emulated bf16 takes minutes
        gen.generate("a red cat jumps in the snow", d, steps=steps)
        other = time.perf_counter() - t0
    finally:
        gen.bf16 = not gen.bf16
    layouts = {torch.channels_last: 0.0, torch.contiguous_format: 0.0}
    try:
        for _ in range(2):
            for fmt in layouts:
                model.to(memory_format=fmt)
                t0 = time.perf_counter()
                gen.generate("a red cat jumps in the snow", d, steps=steps)
                layouts[fmt] += time.perf_counter() - t0
    finally:
        model.to(memory_format=torch.channels_last)
    rss = peak_rss_mb(a.model)
    t1 = {"forward_s": fwd, "forward_gflop": flops / 1e9, "achieved_gflops": flops / fwd / 1e9,
          "matmul_gflops": mm_flops / 1e9, "flops_ratio": flops / fwd / mm_flops, "sampler_s": samp,
          "sampler_ratio": samp / (fwd * steps), "in_call_ratio": meta["seconds"] / meta["unet_seconds"],
          "peak_rss_mb": rss, "other_precision_s": other, "other_precision_ratio": other / samp,
          "contiguous_layout_ratio": layouts[torch.contiguous_format] / layouts[torch.channels_last]}
    print(f"precision: {'bf16 autocast' if gen.bf16 else 'float32'} (this CPU runs bf16 natively: {gen.bf16})")
    print("| quantity | value |\n|---|---|")
    for k, v in t1.items():
        print(f"| {k} | {v:.3f} |")

    judge = get_judge()
    with tempfile.TemporaryDirectory() as tmp:
        clips = eval_clips(a.clips, 16, Path(tmp), load_estimator("toyworld"))
    rows = {}
    labels = {"ddim": "DDIM", "dpmpp": "DPM++"}
    for row in a.samplers.split(","):
        sampler, n = row.split(":")
        name, n = f"{labels.get(sampler, sampler)} {n}", int(n)
        adh, sem, secs, species, colour = [], [], [], [], []
        for c in clips:
            t0 = time.perf_counter()
            f = gen.generate(c["caption"], c["depth"], sampler=sampler, steps=n, seed=0).frames
            secs.append(time.perf_counter() - t0)
            adh.append(judge.adherence(f, c["depth"]))
            emb, mean = judge.shot_embedding(f)
            sem.append(sem_score(emb, judge.text.encode([c["caption"]])))
            seen = judge.recognise(mean, c["attrs"]["species"])
            species.append(seen["species"] == c["attrs"]["species"])
            colour.append(seen["colour"] == c["attrs"]["colour"])
        rows[name] = {"adherence": float(np.mean(adh)), "sem": float(np.mean(sem)), "seconds": float(np.mean(secs)),
                      "species": float(np.mean(species)), "colour": float(np.mean(colour))}
    print("\n| sampler | depth si-RMSE | Sem | species | colour | s / shot |\n|---|---|---|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v['adherence']:.4f} | {v['sem']:.3f} | {v['species']:.0%} | {v['colour']:.0%} | "
              f"{v['seconds']:.1f} |")
    print(json.dumps({"cost": t1, "quality": rows}))


if __name__ == "__main__":
    main()
