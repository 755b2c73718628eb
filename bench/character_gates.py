"""Issue 18's gates: the same character, recognisable, in every shot — measured on the pipeline as it is.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python bench/character_gates.py   # 5 characters x 12 shots, ~15 min
    .venv/bin/python bench/character_gates.py --characters 1 --shots 3 --steps 4 --render-steps 4   # smoke test

What runs (the pipeline's own stages, no Dagster): a ToyWorld corpus of --clips clips (``sample_specs``: 120
covers every species x motion pair once) is ingested and indexed in LanceDB under --out/corpus (kept between
runs). Per novel character (``NOVEL_CHARACTERS``: colours never in the corpus) a story is written: 4 reference
stills (``write_reference_images``), class word = its species, --shots shots of varied motions and places
("a <tabby> hops along in a meadow", ``bench/table2.prompts_for``), --frames frames at 8 fps, 64 px. The story
is loaded with ``load_story``; the character is learnt with ``learn_character`` (its method, timeinv_lora,
--steps steps); each shot is retrieved (``retrieve_shot_cached``), gets its depth (``shot_depth_for``) and is
rendered by ``render_shot_checked`` with --attempts renders at most (default 1: the first render, no healing;
3: the pipeline's self-healing, which re-renders a shot failing a check, the kind check included), with the
render stage's adaptive structure guidance. Stage artifacts go to a fresh temporary folder, so every run really trains and
renders. Ceiling: ToyWorld renders the same character (its colours, pattern, accessory) doing each shot's
motion in the shot's place; --frames frames spread over the clip, area-resized to 64 px.

Columns (per character, and "all": shots pooled; consistency averaged over characters):
- kind: share of shots whose mean frame embedding toy-CLIP names the character's species (zero-shot,
  ``Judge.recognise``); kind ceil: the same on the ceiling clips (the recogniser's own limit). Gate (a): kind >= 90%.
- ID: mean over shots of ``id_score`` (toy-CLIP cosine of every frame with every reference image);
  ID ceil: the same for the ceiling clips; ratio = ID / ID ceil. Gate (b): ratio >= 0.9.
- cons: mean over pairs of shots of the cosine between their shot embeddings (L2-normalised mean frame
  embedding); cons ceil: the same over the ceiling clips; ratio = cons / cons ceil. Gate (c): ratio >= 0.9.
- passed: share of shots whose kept render passes the render stage's checks (depth adherence, ID, Sem,
  flicker, kind at ``CheckThresholds()``; with --attempts 1 the first render's): informative only, gate (d)
  is the demo's; renders: mean renders per shot.
- seconds: personalization (``learn_character``, with its sample shots), retrieval + depth, render + checks.
Writes summary.json and grid_<token>.png per character (references; middle frame of each shot, the ceiling
clip below it, captioned with the motion, ID and the species recognised) to --out.
"""

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from table2 import TOKENS, build_index, method_config, prompts_for  # noqa: E402  (the same prompts and tokens as Table 2)

from story_pipeline.config import Settings  # noqa: E402
from story_pipeline.corpus.retrieve import retrieval_dir, retrieve_shot_cached  # noqa: E402
from story_pipeline.depth.estimators import load_estimator  # noqa: E402
from story_pipeline.depth.stage import shot_depth_for  # noqa: E402
from story_pipeline.depth.structure import frame_indices  # noqa: E402
from story_pipeline.eval.video import get_judge  # noqa: E402
from story_pipeline.fsutil import atomic_write_text  # noqa: E402
from story_pipeline.metrics import cosine_matrix, id_score  # noqa: E402
from story_pipeline.models.frame_encoder import encode_frames  # noqa: E402
from story_pipeline.personalize.character import learn_character  # noqa: E402
from story_pipeline.render.checks import CheckThresholds  # noqa: E402
from story_pipeline.render.generator import load_generator  # noqa: E402
from story_pipeline.render.shot import load_frames  # noqa: E402
from story_pipeline.render.stage import render_shot_checked  # noqa: E402
from story_pipeline.story_file import load_story  # noqa: E402
from story_pipeline.toyworld import ClipSpec, render_clip  # noqa: E402
from story_pipeline.toyworld.corpus import NOVEL_CHARACTERS, write_reference_images  # noqa: E402

GATE = 0.9  # (a) share of shots, (b) and (c) ratios to the ceiling
FPS = 8
SIZE = 64


# --- corpus and story -----------------------------------------------------------------------------
def write_story(folder: Path, k: int, shots: int, frames: int, render_steps: int | None,
                guidance: float | None = None):
    """Reference images + story.yaml for novel character k; -> (story, [(motion, setting)] per shot)."""
    ch, token = NOVEL_CHARACTERS[k], TOKENS[k]
    refs = write_reference_images(ch, folder / "refs", n=4)
    prompts = prompts_for(token, shots)
    render = (f"\n  steps: {render_steps}" if render_steps else "") + (f"\n  guidance: {guidance}" if guidance else "")
    lines = [f"id: gates-{token.strip('<>')}", f"title: {ch.colour} {ch.species} in {shots} shots",
             f"defaults:\n  frames: {frames}\n  fps: {FPS}\n  resolution: {SIZE}{render}",
             f"characters:\n  - token: {token}\n    class_word: {ch.species}\n    images: ["
             + ", ".join(f"refs/{p.name}" for p in refs) + "]", "shots:"]
    lines += [f"  - id: s{i:02d}-{m.replace('_', '-')}\n    prompt: {p}" for i, (p, m, _) in enumerate(prompts)]
    path = folder / "story.yaml"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return load_story(path), [(m, s) for _, m, s in prompts]


# --- the pipeline's stages --------------------------------------------------------------------------
def personalize_character(art: Path, story, gen, index, steps: int, overrides: str = "") -> float:
    """``learn_character`` as the character asset runs it (settings' sample steps and prior clips), with
    ``overrides`` (``key=value:key=value``) of ``PersonalizeConfig`` on top."""
    s = Settings()
    config = method_config(":".join(["timeinv_lora", f"sample_steps={s.personalize_sample_steps}",
                                     f"prior_clips={s.personalize_prior_clips}"] + ([overrides] if overrides else [])),
                           steps)
    t = time.perf_counter()
    learn_character(art, story, story.characters[0], gen, config, open_index=lambda: index,
                    load_estimator=lambda: load_estimator("toyworld"))
    return time.perf_counter() - t


def run_shot(art: Path, story, shot, index, gen, judge, attempts: int = 1) -> dict:
    """Retrieve, depth, render (``attempts`` renders at most: 1 = the first render, more = the render stage's
    self-healing) and check one shot; -> frames of the kept render, chosen clip, seconds, checks."""
    t = time.perf_counter()
    r = retrieve_shot_cached(index, story, shot, cache_dir=retrieval_dir(art, story.id) / ".memo")
    atomic_write_text(retrieval_dir(art, story.id) / f"{shot.id}.json", r.to_json())
    shot_depth_for(art, story, shot, lambda: load_estimator("toyworld"), "clip")
    t_depth = time.perf_counter() - t
    t = time.perf_counter()
    c = render_shot_checked(art, story, shot, gen, lambda: load_estimator("toyworld"), "clip", CheckThresholds(),
                            attempts=attempts, judge=judge)
    return {"frames": load_frames(c.best.rendered.frames_path), "clip": r.chosen["caption"],
            "kind_fit": r.chosen.get("kind_fit"), "guidance": c.guidance, "passed": c.best.report.passed,
            "failed": c.best.report.failed, "renders": len(c.attempts), "retrieve_depth_s": t_depth,
            "render_s": time.perf_counter() - t}


def ceiling_frames(k: int, motion: str, setting: str, frames: int, seed: int) -> np.ndarray:
    """ToyWorld's own render of novel character k doing ``motion`` in ``setting``: (frames, 64, 64, 3) uint8."""
    clip = render_clip(ClipSpec(NOVEL_CHARACTERS[k], motion, setting, seed=seed))
    x = torch.from_numpy(clip.rgb[frame_indices(0, len(clip.rgb), frames)]).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="area")
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


# --- measures ----------------------------------------------------------------------------------------
def shot_measures(judge, frames: np.ndarray, ref_emb: np.ndarray, species: str) -> dict:
    emb, mean = judge.shot_embedding(frames)
    seen = judge.recognise(mean, species)["species"]
    return {"id": id_score(emb, ref_emb), "seen": seen, "kind_ok": seen == species, "emb": mean}


def consistency(embs: list[np.ndarray]) -> float:
    """Mean cosine over the pairs of shot embeddings."""
    if len(embs) < 2:
        return float("nan")
    c = cosine_matrix(np.stack(embs), np.stack(embs))
    return float(np.mean([c[i, j] for i, j in itertools.combinations(range(len(embs)), 2)]))


def summarise(shots: list[dict], ceil: list[dict]) -> dict:
    m = lambda rows, k: float(np.mean([r[k] for r in rows]))  # noqa: E731
    return {"kind": m(shots, "kind_ok"), "kind_ceil": m(ceil, "kind_ok"), "id": m(shots, "id"),
            "id_ceil": m(ceil, "id"), "cons": consistency([r["emb"] for r in shots]),
            "cons_ceil": consistency([r["emb"] for r in ceil]), "pass1": m(shots, "passed"),
            "renders": m(shots, "renders")}


def with_gates(s: dict) -> dict:
    s["id_ratio"], s["cons_ratio"] = s["id"] / s["id_ceil"], s["cons"] / s["cons_ceil"]
    s["gates"] = {"a": s["kind"] >= GATE, "b": s["id_ratio"] >= GATE, "c": s["cons_ratio"] >= GATE}
    return s


# --- output --------------------------------------------------------------------------------------------
def table(rows: dict[str, dict]) -> str:
    g = lambda ok: "MET" if ok else "MISSED"  # noqa: E731
    head = ("| character | kind | kind ceil | (a) | ID | ID ceil | ratio | (b) | cons | cons ceil | ratio | (c) "
            "| passed | renders | personalize s | retrieve+depth s | render s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, s in rows.items():
        lines.append(f"| {name} | {s['kind']:.0%} | {s['kind_ceil']:.0%} | {g(s['gates']['a'])} | {s['id']:.3f} | "
                     f"{s['id_ceil']:.3f} | {s['id_ratio']:.2f} | {g(s['gates']['b'])} | {s['cons']:.3f} | "
                     f"{s['cons_ceil']:.3f} | {s['cons_ratio']:.2f} | {g(s['gates']['c'])} | {s['pass1']:.0%} | {s['renders']:.2f} | "
                     f"{s['personalize_s']:.0f} | {s['retrieve_depth_s']:.0f} | {s['render_s']:.0f} |")
    return "\n".join(lines)


def _tile(img: np.ndarray, text: list[str], scale: int = 2) -> Image.Image:
    im = Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST)
    canvas = Image.new("RGB", (im.width, im.height + 11 * len(text) + 2), "white")
    canvas.paste(im, (0, 0))
    for n, line in enumerate(text):
        ImageDraw.Draw(canvas).text((2, im.height + 1 + 11 * n), line[:22], fill="black")
    return canvas


def grid(path: Path, title: str, refs: list[np.ndarray], shots: list[dict], ceil: list[dict], motions: list) -> None:
    """References on top; per shot a column: the shot's middle frame above the ceiling clip's."""
    ref_tiles = [_tile(r, ["reference"]) for r in refs]
    cols = []
    for s, c, (motion, _) in zip(shots, ceil, motions):
        a = _tile(s["frames"][len(s["frames"]) // 2], [motion, f"ID {s['id']:.2f} {s['seen']}"])
        b = _tile(c["frames"][len(c["frames"]) // 2], ["ceiling", f"ID {c['id']:.2f} {c['seen']}"])
        cols.append((a, b))
    tw = max(t.width for t in ref_tiles + [a for a, _ in cols]) + 4
    th = max(a.height + b.height for a, b in cols) + 4
    rh = max(t.height for t in ref_tiles) + 4
    canvas = Image.new("RGB", (tw * max(len(cols), len(ref_tiles)), 14 + rh + th), "white")
    ImageDraw.Draw(canvas).text((2, 1), title, fill="black")
    for i, t in enumerate(ref_tiles):
        canvas.paste(t, (i * tw, 14))
    for i, (a, b) in enumerate(cols):
        canvas.paste(a, (i * tw, 14 + rh))
        canvas.paste(b, (i * tw, 14 + rh + a.height + 2))
    canvas.save(path)


# --- main -------------------------------------------------------------------------------------------------
def run_character(k: int, a, work: Path, index, gen, judge) -> tuple[dict, list[dict], list[dict]]:
    ch, token = NOVEL_CHARACTERS[k], TOKENS[k]
    story, motions = write_story(work / token.strip("<>"), k, a.shots, a.frames, a.render_steps, a.guidance)
    refs = [np.asarray(Image.open(p).convert("RGB")) for p in story.reference_images(story.characters[0])]
    ref_emb = encode_frames(judge.fe, np.stack(refs))
    art = work / "artifacts"
    secs = {"personalize_s": personalize_character(art, story, gen, index, a.steps, a.personalize), "retrieve_depth_s": 0.0,
            "render_s": 0.0}
    shots, ceil = [], []
    for i, (shot, (motion, setting)) in enumerate(zip(story.shots, motions)):
        r = run_shot(art, story, shot, index, gen, judge, a.attempts)
        secs["retrieve_depth_s"] += r.pop("retrieve_depth_s")
        secs["render_s"] += r.pop("render_s")
        shots.append({**r, **shot_measures(judge, r["frames"], ref_emb, ch.species)})
        cf = ceiling_frames(k, motion, setting, a.frames, seed=1000 + i)
        ceil.append({"frames": cf, "passed": True, **shot_measures(judge, cf, ref_emb, ch.species)})
        print(f"  {token} {shot.id}: ID {shots[-1]['id']:.3f} (ceiling {ceil[-1]['id']:.3f}), seen "
              f"{shots[-1]['seen']}, clip {r['clip']!r} kind_fit {r['kind_fit']}, checks "
              f"{'passed' if r['passed'] else 'failed ' + ','.join(r['failed'])}", flush=True)
    s = with_gates({**summarise(shots, ceil), **secs})
    grid(Path(a.out) / f"grid_{token.strip('<>')}.png", f"{token}: {ch.colour}/{ch.colour2} {ch.pattern} "
         f"{ch.species}, {ch.accessory}; top row of each column: pipeline shot, below: ToyWorld ceiling",
         [np.asarray(Image.fromarray(r).resize((SIZE, SIZE), Image.BILINEAR)) for r in refs], shots, ceil, motions)
    return s, shots, ceil


def overall(per: dict[str, dict], all_shots: list[dict], all_ceil: list[dict]) -> dict:
    s = summarise(all_shots, all_ceil)
    s["cons"] = float(np.mean([p["cons"] for p in per.values()]))  # within a character only
    s["cons_ceil"] = float(np.mean([p["cons_ceil"] for p in per.values()]))
    for k in ("personalize_s", "retrieve_depth_s", "render_s"):
        s[k] = float(sum(p[k] for p in per.values()))
    return with_gates(s)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--characters", default=",".join(t.strip("<>") for t in TOKENS[:len(NOVEL_CHARACTERS)]),
                   help="comma-separated token names (tabby,bolt,puddle,patch,bramble) or a count")
    p.add_argument("--shots", type=int, default=12)
    p.add_argument("--steps", type=int, default=100, help="personalization steps")
    p.add_argument("--personalize", default="", help="PersonalizeConfig overrides, e.g. prior_clips=4:frames=2 "
                   "(the method stays the story's)")
    p.add_argument("--render-steps", type=int, default=None, help="sampling steps (default: the generator's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the generator's)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--attempts", type=int, default=1, help="renders per shot: 1 = the first render (default), "
                   "3 = the pipeline's self-healing (STORY_HEAL_ATTEMPTS)")
    p.add_argument("--clips", type=int, default=120, help="ToyWorld corpus size")
    p.add_argument("--seed", type=int, default=0, help="ToyWorld corpus seed")
    p.add_argument("--out", default="data/eval/gates")
    a = p.parse_args(argv)
    names = [t.strip("<>") for t in TOKENS]
    a.indices = list(range(int(a.characters))) if a.characters.isdigit() else \
        [names.index(n.strip().strip("<>")) for n in a.characters.split(",")]
    return a


def main(argv=None) -> dict:
    a = parse(argv)
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    index = build_index(out / "corpus", a.clips, a.seed)
    t_corpus = time.perf_counter() - t0
    print(f"corpus + index: {index.count()} clips in {t_corpus:.0f} s", flush=True)
    gen, judge = load_generator("toyworld"), get_judge()
    per, all_shots, all_ceil = {}, [], []
    with tempfile.TemporaryDirectory(prefix="gates-", dir=out) as tmp:
        for k in a.indices:
            s, shots, ceil = run_character(k, a, Path(tmp), index, gen, judge)
            ch = NOVEL_CHARACTERS[k]
            per[f"{TOKENS[k]} ({ch.colour} {ch.species})"] = s
            all_shots += shots
            all_ceil += ceil
    per["all"] = overall(per, all_shots, all_ceil)
    print(f"\n{len(a.indices)} characters x {a.shots} shots, {a.frames} frames, personalization {a.steps} steps, "
          f"render steps {a.render_steps or gen.default_steps}, guidance {a.guidance or gen.default_guidance}, "
          f"corpus {a.clips} clips; gates at {GATE:.0%}")
    print(table(per))
    summary = {"args": vars(a), "model_id": gen.model_id, "corpus_s": t_corpus,
               "total_s": time.perf_counter() - t0, "per_character": per,
               "shots": [{k: v for k, v in r.items() if k not in ("frames", "emb")} for r in all_shots]}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str))
    print(f"total {summary['total_s']:.0f} s (corpus + index {t_corpus:.0f} s); grids and summary.json in {out}")
    return summary


if __name__ == "__main__":
    main()
