"""Retrieval quality and behaviour on 200-clip ToyWorld caption corpora (nothing rendered).

recall@5: held-out paraphrased queries (ToyWorld's QUERY_* phrasings, which differ from the
caption phrasings), one per species x motion pair (120) per corpus, over 4 independently drawn
corpora (480 queries: one 120-query draw varies by +-2 points); a query scores when a top-5 clip
shows the right species doing the right motion. Each pair has only 1-2 matching clips among 200.
"""

import random

import pyarrow as pa
import pytest
from PIL import Image

from story_pipeline.corpus.index import ClipIndex
from story_pipeline.corpus.search import SearchConfig, build_where, direction_rank, search
from story_pipeline.eval.retrieval import (
    clip_rows, paraphrased_queries, recall_at_k, toyworld_attributes, toyworld_clip_rows,
)
from story_pipeline.corpus.retrieve import retrieve_shot
from story_pipeline.story_file import load_story
from story_pipeline.models.text_encoder import get_text_encoder
from story_pipeline.toyworld import MOTIONS, SETTINGS, SPECIES
from story_pipeline.toyworld.captions import MOTION_PHRASES, SETTING_PHRASES


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    attrs = toyworld_attributes(200, seed=0)
    # the last 20 clips come from a second corpus folder, to test filters
    clips = pa.concat_tables([clip_rows(attrs[:180], seed=0), clip_rows(attrs[180:], seed=0, source="extra")])
    index = ClipIndex(tmp_path_factory.mktemp("lancedb"), encoder=get_text_encoder())
    index.upsert(clips)
    return index, dict(zip(clips["clip_id"].to_pylist(), attrs)), clips


def test_recall_at_5_paraphrased_queries(corpus, tmp_path):
    encoder = get_text_encoder()
    runs = [corpus[:2]]  # corpus seed 0 (the shared fixture), then three more
    for seed in (1, 2, 3):
        clips, attrs = toyworld_clip_rows(200, seed=seed)
        index = ClipIndex(tmp_path / f"lancedb{seed}", encoder=encoder)
        index.upsert(clips)
        runs.append((index, attrs))
    hits = total = 0
    for seed, (index, attrs) in enumerate(runs):
        queries = paraphrased_queries(120, seed=seed + 1)
        recall, misses = recall_at_k(index, queries, attrs, k=5)
        print(f"\ncorpus {seed}: recall@5 {recall:.3f} over {len(queries)} queries")
        for miss in misses[:3]:
            print("  miss:", miss[0], "->", miss[3][0])
        hits, total = hits + round(recall * len(queries)), total + len(queries)
    vector_only, _ = recall_at_k(runs[0][0], paraphrased_queries(120, seed=1), runs[0][1], k=5, mode="vector")
    print(f"recall@5 over {total} paraphrased queries: {hits / total:.3f} (hybrid + late-interaction rerank); "
          f"corpus 0 with the vector leg alone: {vector_only:.3f}")
    assert hits / total >= 0.9


def test_min_duration_and_filters(corpus):
    index, attrs, clips = corpus
    durations = set(clips["duration_s"].to_pylist())
    assert min(durations) < 2.0 < max(durations)
    for mode in ("hybrid", "vector", "fts"):
        hits = search(index, "a dog running", k=10, min_duration=2.0, mode=mode)
        assert len(hits) == 10 and all(h.duration_s >= 2.0 for h in hits)
        extra = search(index, "a dog running", k=5, filters={"source": "extra"}, mode=mode)
        extra_ids = set(clips.filter(pa.compute.equal(clips["source"], "extra"))["clip_id"].to_pylist())
        assert extra and {h.clip_id for h in extra} <= extra_ids
    # filters combine with AND; a filter nothing passes gives no hits rather than an error
    assert search(index, "a dog running", filters={"source": "nowhere"}) == []
    assert build_where(1.5, {"source": ["a", "o'b"]}) == "duration_s >= 1.5 AND source IN ('a', 'o''b')"


def test_hits_carry_clip_spans_best_first(corpus):
    index, _, clips = corpus
    rows = {r["clip_id"]: r for r in clips.to_pylist()}
    for mode in ("hybrid", "vector", "fts"):
        hits = search(index, "a bunny hopping in the snow", k=5, mode=mode)
        assert len(hits) == 5
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        for h in hits:
            row = rows[h.clip_id]
            assert (h.path, h.start_frame, h.end_frame, h.fps, h.caption) == (
                row["path"], row["start_frame"], row["end_frame"], row["fps"], row["caption"])
    fused = search(index, "a bunny hopping in the snow", k=5, config=SearchConfig(rerank="rrf"))
    assert len(fused) == 5


def test_bad_arguments(corpus):
    index, _, _ = corpus
    for kwargs in ({"query": ""}, {"query": "cat", "k": 0}, {"query": "cat", "mode": "magic"},
                   {"query": "cat", "filters": {"colour": "red"}}, {"query": "cat", "min_duration": -1}):
        with pytest.raises(ValueError):
            search(index, **kwargs)


def test_shot_prompts_naming_a_motion_retrieve_that_motion(corpus, tmp_path):
    """The issue's gate: shots whose prompts name a ToyWorld motion (with a place, as stories are
    written) retrieve a clip of that motion for >= 90% of shots. 12 motions x 3 species, every
    phrasing of the motion tables, a setting phrase after it; clips must last the shot's 2 s."""
    index, attrs, _ = corpus
    rng = random.Random(3)
    shots, want = [], []
    for motion in MOTIONS:
        for i, species in enumerate(rng.sample(SPECIES, 3)):
            phrase = MOTION_PHRASES[motion][i % len(MOTION_PHRASES[motion])][0]
            place = rng.choice(SETTING_PHRASES[rng.choice(SETTINGS)])
            shots.append(f"  - id: s{len(shots)}\n    prompt: a <{species}x> {phrase} {place}\n")
            want.append(motion)
    chars = "".join(f"  - token: <{s}x>\n    class_word: {s}\n    images: [{s}.png]\n" for s in SPECIES)
    for s in SPECIES:
        Image.new("RGB", (64, 64), (200, 100, 50)).save(tmp_path / f"{s}.png")
    path = tmp_path / "story.yaml"
    path.write_text(f"id: motions\ncharacters:\n{chars}shots:\n{''.join(shots)}")
    story = load_story(path, check_images=False)
    got = [attrs[retrieve_shot(index, story, shot, k=1).chosen["clip_id"]]["motion"] for shot in story.shots]
    right = sum(g == w for g, w in zip(got, want))
    print(f"\n{right}/{len(want)} shots retrieved the named motion; misses: "
          f"{[(story.shot_query(s), g) for s, g, w in zip(story.shots, got, want) if g != w]}")
    assert right / len(want) >= 0.9
    # what the query rules buy: the raw prompt (place phrase kept) and no direction check do worse
    raw = sum(attrs[search(index, s.prompt.replace(f"<{s.prompt.split('<')[1].split('>')[0]}>",
                                                   s.prompt.split('<')[1].split('x>')[0]),
                           k=1, min_duration=2.0, config=SearchConfig(direction_check=False))[0].clip_id]["motion"] == w
              for s, w in zip(story.shots, want))
    print(f"raw prompts without the direction check: {raw}/{len(want)}")
    assert raw < right


def test_direction_words_rank_same_side_first_and_opposite_last(corpus):
    index, attrs, _ = corpus
    for query, bad in (("a dog strolls to the left", "walk_right"), ("a cat strolls to the right", "walk_left"),
                       ("a bear walks toward the camera", "walk_away"), ("a fox walks away from the camera", "approach")):
        hits = search(index, query, k=3, min_duration=2.0)
        assert bad not in [attrs[h.clip_id]["motion"] for h in hits], query
    assert direction_rank("walks left", "a cat strolling to the right") == 2
    assert direction_rank("walks left", "a cat walking to the left") == 0
    assert direction_rank("walks left", "a cat sits down") == 1
    assert direction_rank("a cat sits", "a cat walking to the right") == 1  # no direction asked


def test_shots_retrieve_their_characters_kind_doing_the_motion(corpus, tmp_path):
    """Issue 17's first gate on a held-out corpus (200 clips, not the one MOTION_RATIO was chosen on):
    of the (kind, motion) shots whose corpus holds such a clip, >= 0.95 choose one that shows both
    (the motion-only fusion alone chose the right kind about half the time); the retrieval says why."""
    from story_pipeline.eval.shot_retrieval import kind_motion_accuracy

    index, attrs, _ = corpus
    r = kind_motion_accuracy(index, attrs, tmp_path)
    print(f"\n{r['shots']} shots: kind+motion {r['both']:.3f}, motion {r['motion']:.3f}, kind {r['kind']:.3f}; "
          f"{r['absent_shots']} shots of kinds that never do the motion: motion {r['absent_motion']:.3f}")
    assert r["shots"] >= 40 and r["both"] >= 0.95
    # kinds that never do the motion still get a clip showing it (0.725 here; 0.625 when a kind's clip of
    # another motion in the same verb, "walks away" for "walks to the left", counted as showing it)
    assert r["absent_shots"] >= 20 and r["absent_motion"] >= 0.7
    # each chosen clip says whether its actor is the character's kind (the render relaxes structure if not)
    assert r["kind_fit_right"] >= 0.95
    story = load_story(tmp_path / "story.yaml", check_images=False)
    got = retrieve_shot(index, story, story.shots[0])
    kind = story.characters_in(story.shots[0])[0].class_word
    assert got.reason.startswith("shows the motion") and kind in got.reason


def test_query_words_no_caption_uses_become_their_wordnet_relatives(corpus):
    from story_pipeline.corpus.lexicon import rewrite_query
    from story_pipeline.corpus.search import DIRECTION_WORDS

    index = corpus[0]
    vocab, enc = index.vocabulary(), index.encoder

    def rewrite(q):
        return rewrite_query(q, vocab, enc, keep=DIRECTION_WORDS)

    assert rewrite("a tomcat ambles leftward") in ("a cat walks leftward", "a cat strolls leftward")
    assert rewrite("an android marches rightward").startswith("a robot ")  # article agrees
    assert rewrite("a hare skips along").split()[1] == "rabbit"  # sibling under the first hypernym
    assert rewrite("a mutt keels over").split()[-1] in ("falls", "topples", "tumbles")  # two-word lemma
    assert rewrite("a dog walks to the left") == "a dog walks to the left"  # known words stay
    assert rewrite("a toad springs upward").endswith(" upward")  # direction words stay


def test_query_verbs_are_rewritten_only_to_words_the_captions_use_as_verbs(corpus):
    """Issue 17 item 2, third round: a query word is replaced only by a caption word of the part of
    speech the query uses it as ("to dog" is to chase and "to duck" to dip, but captions use "dog"
    and "duck" as nouns), and a phrasal verb only by a phrase the captions use ("turns on" never)."""
    from story_pipeline.corpus.lexicon import read_sentence, rewrite_query, tokens
    from story_pipeline.corpus.search import DIRECTION_WORDS

    index = corpus[0]
    vocab, enc = index.vocabulary(), index.encoder
    toks = tokens("in the snow, a blue duck walks to the left")
    assert read_sentence(toks) == ["f", "f", "p", "f", "f", "m", "n", "v", "f", "f", "p"]
    assert "v" not in vocab.uses["dog"] and "n" in vocab.uses["dog"]
    assert "v" in vocab.uses["walks"]
    for query, at, verb in (("a sheepdog chases its tail", 2, "chases"),
                            ("a bunny rabbit plunks itself down", 3, "plunks")):
        word = rewrite_query(query, vocab, enc, keep=DIRECTION_WORDS).split()[at]
        assert word == verb or "v" in vocab.uses.get(word, ()), (query, word)
    assert "turns on" not in rewrite_query("a drake trips and sprawls", vocab, enc, keep=DIRECTION_WORDS)


def test_a_light_verb_or_a_rare_sense_does_not_stand_in_for_a_query_verb(corpus):
    """Issue 17 item 2, fourth round: "heads" (go) is no "takes", whose motion lies in its object;
    "crashes" is "dashes" only in a rare sense, so the next relation's "falls" competes too."""
    from story_pipeline.corpus.lexicon import candidates
    from story_pipeline.corpus.wordnet import POS

    vocab = corpus[0].vocabulary()
    assert {"takes", "falls", "dashes"} <= {w for w, uses in vocab.uses.items() if "v" in uses}

    def verbs(word):
        return [c for c, _, _ in candidates(word, vocab, frozenset(), POS, "v")]

    assert "takes" not in verbs("heads") and "gives" not in verbs("salutes")
    assert {"dashes", "falls"} <= set(verbs("crashes"))


def test_a_query_in_the_captions_words_also_searches_their_other_words_for_its_verb(corpus):
    """A corpus that words falling "tumbles over" and "topples over" is also searched that way for
    "falls"; a verb the captions do not use, an adjective or a noun is not reworded."""
    from story_pipeline.corpus.lexicon import caption_rewordings

    vocab = corpus[0].vocabulary()
    assert "a robot tumbles to the ground" in caption_rewordings("a robot falls to the ground", vocab)
    assert "a cat twirls on the spot" in caption_rewordings("a cat spins on the spot", vocab)
    assert not any("running" in r for r in caption_rewordings("a dog runs", vocab))  # its own forms are no other word
    assert caption_rewordings("a brown bear in a park", vocab) == []


def test_direction_rerank_reads_up_and_down_only_as_directions():
    assert direction_rank("a cat springs up", "a cat sits down") == 1  # particles, no direction
    assert direction_rank("a cat wakes up", "a cat falls down") == 1
    assert direction_rank("a cat climbs up the hill", "a cat runs down the slope") == 2
    assert direction_rank("a cat jumps up high", "a cat jumping up high") == 0


def test_wording_the_captions_never_use_finds_kind_and_motion(corpus):
    """Issue 17's second gate on the held-out wording sets (eval/wording.py, each written after the
    method it tests was fixed, 240 queries): right kind and motion in the top 5 for >= 0.85 of what
    the corpus allows (0.89 here; 0.90-0.94 on three 300-clip corpora, bench/retrieval.py --shots),
    far above the same search without expansion (0.73 here)."""
    from story_pipeline.eval.wording import ALL_HELD_OUT, wording_recall

    index, attrs, _ = corpus
    r = wording_recall(index, attrs, ALL_HELD_OUT)
    plain = wording_recall(index, attrs, ALL_HELD_OUT, config=SearchConfig(expand=False))
    print(f"\nheld-out wording: {r['recall']:.3f} of {r['achievable']} (no expansion {plain['recall']:.3f})")
    for miss in r["misses"]:
        print("  miss:", miss)
    assert r["achievable"] >= 120 and r["recall"] >= 0.85 and r["recall"] >= plain["recall"] + 0.1


def test_a_class_word_the_captions_never_use_still_finds_the_kind(corpus, tmp_path):
    """A character of class "hare" gets the clips a "rabbit" gets (the captions' word for its kind)."""
    from story_pipeline.corpus.retrieve import corpus_kind
    from story_pipeline.eval.shot_retrieval import achievable_pairs

    index, attrs, _ = corpus
    synonyms = {"hare": "rabbit", "tomcat": "cat", "mallard": "duck"}
    assert [corpus_kind(index, w) for w in [*synonyms, "cat"]] == [*synonyms.values(), "cat"]
    table = index.table.to_arrow()
    have = set(achievable_pairs(attrs, dict(zip(table["clip_id"].to_pylist(), table["duration_s"].to_pylist())), 2.0))
    does = {"walk_right": "walks to the right", "spin": "spins", "run": "runs", "wave": "waves"}
    cases = [(w, m) for w, s in synonyms.items() for m in does if (s, m) in have]
    (tmp_path / "r.png").write_bytes(b"x")
    lines = ["id: synonyms", "defaults: {frames: 16, fps: 8, resolution: 64}", "characters:"]
    lines += [f"  - {{token: '<{w}>', class_word: {w}, images: [r.png]}}" for w in [*synonyms, *synonyms.values()]]
    lines += ["shots:"] + [f"  - {{id: s{i}{w}, prompt: 'a <{w}> {does[m]} in a park'}}"
                           for i, (word, m) in enumerate(cases) for w in (word, synonyms[word])]
    (tmp_path / "story.yaml").write_text("\n".join(lines) + "\n")
    story = load_story(tmp_path / "story.yaml", check_images=False)
    got = [attrs[retrieve_shot(index, story, shot).chosen["clip_id"]] for shot in story.shots]
    as_synonym, as_caption_word = got[0::2], got[1::2]
    assert len(cases) >= 6 and as_synonym == as_caption_word
    right = sum(a["species"] == synonyms[w] and a["motion"] == m for (w, m), a in zip(cases, as_synonym))
    assert right >= len(cases) - 1, [(c, a["species"], a["motion"]) for c, a in zip(cases, as_synonym)]


def test_a_caption_naming_the_verb_otherwise_counts_as_showing_the_motion(corpus, tmp_path):
    """The test corpus's only long-enough rabbit hop is "… hopping around …", which scores under half
    of "… in little hops" for the query "hops"; it still shows the motion (same verb, WordNet base)."""
    index, attrs, _ = corpus
    (tmp_path / "r.png").write_bytes(b"x")
    (tmp_path / "story.yaml").write_text(
        "id: inflect\ndefaults: {frames: 16, fps: 8, resolution: 64}\n"
        "characters:\n  - {token: '<r>', class_word: rabbit, images: [r.png]}\n"
        "shots:\n  - {id: hop, prompt: 'a <r> hops in a park'}\n")
    story = load_story(tmp_path / "story.yaml", check_images=False)
    got = retrieve_shot(index, story, story.shots[0])
    assert "hopping" in got.chosen["caption"]
    assert (attrs[got.chosen["clip_id"]]["species"], attrs[got.chosen["clip_id"]]["motion"]) == ("rabbit", "hop")
    assert got.reason.startswith("shows the motion")


# The dog clips and the spin clips of a 120-clip ToyWorld corpus (one clip per kind and motion): the
# dog's spin is worded "twirling", and its turn-around scores higher on "spins in circles".
ONE_PER_PAIR = [
    "a red and pink puppy twirling in the forest", "a video of a grey penguin in a white wool hat twirling on a "
    "dark city street at night", "a video of a grey little fox spinning on the spot among autumn leaves in a park",
    "a spotted grey dog jumping in a meadow", "a two-tone blue and black dog toppling over on a sunny beach",
    "a red songbird spinning in circles on a sunny beach", "a pink dog with red spots walking away from the camera "
    "in a snowy field", "a striped black cat spinning on the spot in a winter snow field",
    "a video of a striped white frog twirling in the woods", "a video of a grey bear cub with brown stripes "
    "twirling on a green meadow", "on a snowy field: a yellow dog running", "in a sandy desert, a two-tone green "
    "and black dog approaches the camera", "on a dark city street at night, a blue dog with green spots walks to "
    "the right", "a video of a red and blue robot spinning on the spot in the forest", "a pink duck in a woolly "
    "orange scarf spinning in circles in an autumn park", "a striped white dog sits down in the dry desert",
    "a video of a spotted blue puppy wearing a woolly white scarf walking left in the forest",
    "on the beach, a blue and green dog turns around", "in the woods, a red and orange bunny spins on the spot",
    "a pink puppy in a woolly purple scarf waves hello on a beach by the sea",
    "in a dense forest, a pink dog bounces along in little hops",
]


def test_the_kinds_clip_naming_the_motions_verb_comes_first(tmp_path):
    """Among the kind's clips that pass the motion test, one whose caption names the motion's verb (or a
    synonym: "twirling" for "spins") is taken before one that only scores higher ("turns around")."""
    clips, _ = toyworld_clip_rows(120, seed=0)
    long_enough = [r for r in clips.to_pylist() if r["duration_s"] >= 2.5]  # every clip can hold the 2-s shot
    rows = [dict(r, caption=c) for r, c in zip(long_enough, ONE_PER_PAIR)]
    index = ClipIndex(tmp_path / "lancedb", encoder=get_text_encoder())
    index.upsert(pa.Table.from_pylist(rows, schema=clips.schema))
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "a.png").write_bytes(b"never opened")
    (tmp_path / "story.yaml").write_text("characters:\n  - token: <patch>\n    class_word: dog\n    images: [refs/a.png]\n"
                                         "shots:\n  - id: spin\n    prompt: a <patch> spins in circles in the snow\n")
    story = load_story(tmp_path / "story.yaml", check_images=False)
    got = retrieve_shot(index, story, story.shots[0])
    assert got.chosen["caption"] == ONE_PER_PAIR[0] and got.chosen["kind_fit"], got.chosen["caption"]
