"""TimeInv / Textual Inversion (+ LoRA) on a tiny random video model, and MLflow tracking on sqlite."""

import dataclasses
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from story_pipeline.render.generator import load_generator
from story_pipeline.models.text_encoder import get_text_encoder
from story_pipeline.personalize.concepts import Concepts, render_prompt
from story_pipeline.story_file import load_story
from story_pipeline.personalize.toyworld import ConceptText
from story_pipeline.personalize.config import PersonalizationError, PersonalizeConfig
from story_pipeline.personalize.concept import LearnedConcept, TokenTable, bucket
from story_pipeline.personalize.train import personalize
from story_pipeline.toyworld.corpus import NOVEL_CHARACTERS, write_reference_images
from story_pipeline.personalize.tracking import Tracker



@pytest.fixture(scope="module")
def gen(tmp_path_factory, save_tiny_video_model):
    return load_generator("toyworld", save_tiny_video_model(tmp_path_factory.mktemp("tiny_video"), seed=1))


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    paths = write_reference_images(NOVEL_CHARACTERS[0], tmp_path_factory.mktemp("refs"), n=2, size=64)
    return [Image.open(p).convert("RGB") for p in paths]


def test_token_rows_are_input_embeddings_initialised_from_the_class_word():
    te = get_text_encoder()
    text = ConceptText(te)
    text.add_token("<tabby>")
    cat = text.class_embedding("cat")
    with torch.no_grad():
        states = text.states(["a <tabby> jumps"], {"<tabby>": cat[None]})
    assert torch.allclose(states, torch.from_numpy(te.prompt_states(["a cat jumps"])), atol=1e-5)
    assert "<tabby>" not in te.tokenizer.get_vocab()  # the shared tokenizer is untouched
    assert [int(bucket(t, 10)) for t in (0, 99, 100, 999)] == [0, 0, 1, 9]
    assert [int(bucket(t, 1)) for t in (0, 999)] == [0, 0]


@pytest.mark.parametrize("shared", [False, True])
def test_token_table_starts_at_the_class_word_and_a_shared_vector_moves_every_row(shared):
    init = torch.randn(8)
    table = TokenTable(init, 4, shared=shared)
    assert torch.equal(table.full(), init[None].expand(4, 8)) and torch.equal(table(torch.tensor([2, 0])), table.full()[[2, 0]])
    opt = torch.optim.AdamW(table.parameters(), lr=0.1, weight_decay=0.0)
    table(torch.tensor([1])).sum().backward()  # a gradient through row 1 only
    opt.step()
    moved = (table.full() - init).norm(dim=-1).detach()
    assert moved[1] > 0 and bool((moved[[0, 2, 3]] > 0).all()) == shared  # shared: v moved every row
    assert TokenTable(init, 1, shared=True).shared is None  # one row (Textual Inversion): a plain vector


def test_bad_tokens_and_class_words_are_one_sentence(gen):
    text = ConceptText(get_text_encoder())
    with pytest.raises(PersonalizationError, match=r"\[SEP\] is already a word"):
        text.add_token("[SEP]")
    with pytest.raises(PersonalizationError, match="Class word '🦄' is unknown to the text encoder"):
        text.class_embedding("🦄")
    with pytest.raises(PersonalizationError, match="no usable reference image"):
        personalize([], "<x>", "cat", gen, PersonalizeConfig(steps=1))
    with pytest.raises(PersonalizationError, match="method must be one of"):
        personalize([Image.new("RGB", (64, 64))], "<x>", "cat", gen, PersonalizeConfig(method="dreambooth"))


@pytest.mark.parametrize("method, rows, lora", [("timeinv_lora", 10, True), ("textual_inversion", 1, False)])
def test_only_the_table_and_lora_learn_and_the_model_is_left_as_it_was(gen, refs, method, rows, lora, tmp_path):
    before = {k: v.clone() for k, v in gen.model.state_dict().items()}
    samples = []
    r = personalize(refs, "<tabby>", "cat", gen, PersonalizeConfig(method=method, steps=4, sample_every=2, buckets=10),
                    on_sample=lambda step, c: samples.append(step))
    c = r.learned
    assert c.table.shape == (rows, 384) and bool(c.lora) == lora and samples == [2, 4]
    init = ConceptText(get_text_encoder()).class_embedding("cat")
    assert not torch.allclose(c.table, init[None].expand_as(c.table))  # the rows moved
    after = gen.model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    c2 = LearnedConcept.load(c.save(tmp_path / "c.safetensors"))
    assert c2.digest == c.digest and c2.method == method and c2.token == "<tabby>"


def test_captions_and_render_prompts_name_the_class_beside_the_token(gen, refs, tmp_path):
    """DreamBooth's "a [V] dog": the kind stays in the prompt, the token learns the look."""
    config = PersonalizeConfig(method="timeinv", steps=3, sample_every=0)
    c = personalize(refs, "<tabby>", "cat", gen, config).learned
    bare = personalize(refs, "<tabby>", "cat", gen, dataclasses.replace(config, class_in_prompt=False)).learned
    assert c.prompt_phrase == "<tabby> cat" and bare.prompt_phrase == "<tabby>"
    assert not torch.equal(c.table, bare.table)  # same seed, other captions: the training read the phrase
    r = personalize(refs, "<tabby>", "cat", gen, dataclasses.replace(config, steps=4, eval_every=2))
    assert sorted(r.eval_losses) == [0, 2, 4] and all(v > 0 for v in r.eval_losses.values())
    assert torch.equal(r.learned.table, personalize(refs, "<tabby>", "cat", gen, dataclasses.replace(
        config, steps=4, eval_every=0)).learned.table)  # the probe draws nothing from training's noise
    assert LearnedConcept.load(c.save(tmp_path / "c.safetensors")).prompt_phrase == "<tabby> cat"
    (tmp_path / "s.yaml").write_text("characters:\n  - token: <tabby>\n    class_word: cat\n    images: [c.png]\n"
                                     "shots:\n  - {id: a, prompt: a <tabby> jumps}\n"
                                     "  - {id: b, prompt: a <tabby> cat naps beside a <tabby>}\n")
    refs[0].save(tmp_path / "c.png")
    story = load_story(tmp_path / "s.yaml")
    assert render_prompt(story, story.shots[0], {"<tabby>": "<tabby> cat"})[0] == "a <tabby> cat jumps"
    assert render_prompt(story, story.shots[1], {"<tabby>": "<tabby> cat"})[0] == "a <tabby> cat naps beside a <tabby> cat"
    assert render_prompt(story, story.shots[0], {"<tabby>": bare.prompt_phrase})[0] == "a <tabby> jumps"  # older concepts
    assert render_prompt(story, story.shots[0], {})[0] == "a cat jumps"  # not learnt: the class word


def test_concepts_condition_every_step_and_remove_their_lora_after(gen, refs):
    c = personalize(refs, "<tabby>", "cat", gen, PersonalizeConfig(steps=3, sample_every=0, buckets=10)).learned
    c.table[5:] += 0.5  # late rows differ from early ones: the hook must pick rows by timestep
    concepts = Concepts(gen).add(c)
    hook = concepts.step_embeds("a <tabby> jumps")
    assert torch.equal(hook(0, 999), hook(1, 950)) and not torch.equal(hook(0, 999), hook(9, 10))
    depth = np.zeros((2, 16, 16), np.float32)
    with_lora = concepts.generate("a <tabby> jumps", depth, steps=2, seed=0).frames
    assert not any("lora" in n for n, _ in gen.model.named_parameters())
    no_lora = Concepts(gen).add(LearnedConcept(c.token, c.class_word, "timeinv", c.table))
    assert not np.array_equal(with_lora, no_lora.generate("a <tabby> jumps", depth, steps=2, seed=0).frames)


def test_mlflow_runs_finish_fail_and_dead_runs_are_reaped(tmp_path):
    t = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", tmp_path / "local")
    with t.run("ok", tags={"dagster.run_id": "abc"}, params={"steps": 3}) as run:
        run.log_metric("loss", 0.5, 1)
        art = tmp_path / "a.txt"
        art.write_text("x")
        run.log_artifact(art, "samples")
    r = t.client.get_run(run.run_id)
    assert r.info.status == "FINISHED" and r.data.params["steps"] == "3" and r.data.tags["dagster.run_id"] == "abc"
    assert [m.value for m in t.client.get_metric_history(run.run_id, "loss")] == [0.5]
    assert run.url.endswith(f"/runs/{run.run_id}")
    with pytest.raises(RuntimeError):
        with t.run("crash") as crashed:
            raise RuntimeError("boom")
    assert t.client.get_run(crashed.run_id).info.status == "FAILED"
    # a SIGKILLed trainer leaves its run RUNNING; the next run marks it FAILED
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = t.client.create_run(t.experiment_id(), tags={"story.pid": dead.stdout.strip(),
                                                          "story.host": os.uname().nodename}).info.run_id
    with t.run("next"):
        pass
    assert t.client.get_run(orphan).info.status == "FAILED"


def test_unusable_mlflow_warns_and_records_locally(tmp_path):
    t = Tracker("sqlite:////proc/no/such/dir/mlflow.db", tmp_path / "artifacts", tmp_path / "local")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with t.run("offline", params={"steps": 2}) as run:
            run.log_metric("loss", 0.25, 0)
    assert run.run_id is None and any("records the run under" in str(x.message) for x in w)
    assert '"value": 0.25' in (run.local_dir / "metrics.jsonl").read_text()
    assert (run.local_dir / "status").read_text() == "FINISHED"


def test_samples_during_training_keep_the_training_lora(gen, refs, tmp_path):
    """The personalization asset renders sample shots mid-training; that must not remove the
    adapter being trained (LoRA B starts at zero, so trained B weights must be non-zero)."""
    from story_pipeline.personalize.character import sample_shots

    seen = []

    def on_sample(step, concept):
        live = dataclasses.replace(concept, lora={}) if step < 4 else concept
        sample_shots(Concepts(gen).add(live), concept, np.zeros((2, 16, 16), np.float32), steps=1)
        seen.append(any("lora" in n for n, _ in gen.model.named_parameters()))

    r = personalize(refs, "<tabby>", "cat", gen, PersonalizeConfig(steps=4, sample_every=2), on_sample=on_sample)
    assert seen == [True, False]  # mid-training the live adapter is there; after training it is gone
    assert any(float(v.abs().sum()) > 0 for k, v in r.learned.lora.items() if "lora_B" in k)


@pytest.mark.parametrize("shared", [False, True])
def test_an_interrupted_personalization_resumes_from_its_checkpoint_to_the_same_weights(gen, refs, tmp_path, shared):
    config = PersonalizeConfig(steps=6, checkpoint_every=2, sample_every=0, shared_table=shared)
    clean = personalize(refs, "<tabby>", "cat", gen, config).learned

    class Killed(Exception):
        pass

    def die_at_5(done, total):
        if done == 5:  # after the step-4 checkpoint, before the end
            raise Killed

    ckpt = tmp_path / "tabby.ckpt.safetensors"
    with pytest.raises(Killed):
        personalize(refs, "<tabby>", "cat", gen, config, progress=die_at_5, checkpoint=ckpt)
    assert ckpt.exists() and not any("lora" in n for n, _ in gen.model.named_parameters())
    started = []
    resumed = personalize(refs, "<tabby>", "cat", gen, config, checkpoint=ckpt,
                          progress=lambda done, total: started.append(done))
    assert started[0] == 4 and len(resumed.losses) == 6  # resumed at step 4, losses of steps 1-4 kept
    assert torch.equal(resumed.learned.table, clean.table)
    assert resumed.learned.lora.keys() == clean.lora.keys()
    assert all(torch.equal(resumed.learned.lora[k], clean.lora[k]) for k in clean.lora)
    other = dataclasses.replace(config, lr_embed=1e-3)  # another configuration ignores the checkpoint
    assert len(personalize(refs, "<tabby>", "cat", gen, other, checkpoint=ckpt).losses) == 6


def test_regularisation_clips_train_the_lora_on_their_own_captions(gen, refs):
    """prior_clips > 0: each step adds the loss of a class clip captioned without the token (LoRA
    methods only); the adapter then differs from one trained without them."""
    from story_pipeline.personalize.data import prior_bank
    from story_pipeline.toyworld import render_clip, sample_specs

    clip = render_clip(sample_specs(1, 5)[0])
    bank = prior_bank([(clip.rgb[:4], np.zeros((4, 64, 64), np.float32), clip.caption, "c0")], size=64)
    assert bank.x.shape == (1, 3, 4, 64, 64) and bank.depth.shape == (1, 1, 4, 64, 64)
    config = PersonalizeConfig(steps=3, prior_clips=1)
    logged = []
    with_prior = personalize(refs, "<tabby>", "cat", gen, config, prior=bank,
                             log=lambda name, v, step: logged.append(name)).learned
    plain = personalize(refs, "<tabby>", "cat", gen, config).learned
    assert logged.count("prior_loss") == 3
    assert any(not torch.equal(with_prior.lora[k], plain.lora[k]) for k in plain.lora)
    ti = dataclasses.replace(config, method="timeinv")  # nothing for the prior to train: ignored
    assert torch.equal(personalize(refs, "<tabby>", "cat", gen, ti, prior=bank).learned.table,
                       personalize(refs, "<tabby>", "cat", gen, ti).learned.table)
    with pytest.raises(PersonalizationError, match="prior_clips, prior_weight and eval_every"):
        personalize(refs, "<tabby>", "cat", gen, PersonalizeConfig(prior_clips=-1))
