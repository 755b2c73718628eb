"""Query words the corpus never uses, rewritten to WordNet relatives it does use (query expansion).

    from story_pipeline.corpus.lexicon import rewrite_query
    rewrite_query("a tomcat ambles leftward", vocabulary, encoder)   # -> 'a cat walks leftward'

Sentence embeddings place unseen words near their meaning only roughly ("pirouettes" is nearer
"waves" than "twirls" for MiniLM), and BM25 cannot match them at all. WordNet knows them: a
tomcat is a cat, to amble is to walk, a hare is a leporid like a rabbit. For each query word
absent from the corpus's captions, the candidates are the words of its WordNet relatives that the
captions do use — synonyms, hypernyms up to three levels, hyponyms, and the siblings under its
first hypernym (hare -> rabbit), then cousins one level further — only the nearest level that has
any. The bundled text encoder then picks the one whose substitution keeps the query's sentence
embedding closest to the original, less SENSE_PENALTY per WordNet sense rank (context and frequency
choose the sense: "springs" the verb, not the season) and OWN_SENSE_PENALTY per rank of that sense
among the caption word's own (vague words change the sentence embedding least, so the cosine alone
picks "gives" for "flops"). Hypernyms too general to name an action ("travel, go, move") never
stand in, though their other hyponyms may ("hurries" -> "runs", not "moves"). A word after a
determiner ("a", "the", "its") is read as a noun only, and one after a preposition and a determiner
("toward the viewer") is left alone. Each word is read by its use in the sentence (``read_sentence``:
a noun phrase's head, a word before it, a verb, ...), the captions' words likewise, and a query word
stands in only for a caption word the captions use the same way: a verb for a word they use as a
verb ("chases" is no "dogs", "plunks" no "duck"), a noun for a noun; a phrasal verb only for a phrase
they use ("turns on" only where they say it). Two-word lemmas count ("keels over" -> keel_over, "mechanical
man" -> mechanical_man). Words with no relative in the captions, function words and the caller's
``keep`` words (directions) stay as they are.

The lexicon is Princeton WordNet 3.0 (``corpus/wordnet.py``).
"""

import functools
import re

from story_pipeline.corpus.wordnet import POS, wordnet

SENSE_PENALTY = 0.1  # cosine given up per WordNet sense rank: common senses win near-ties ("bounds" = leaps)
# ...and per rank of the relative's synset among the caption word's own senses: "give" is a relative
# of "flop" only in its 26th sense ("collapse"), "fall" in its 2nd ("descend")
OWN_SENSE_PENALTY = 0.1
FAR_SENSE = 1.0  # a relative only through a rare sense (penalty above this) does not end the search...
FARTHER_PENALTY = 0.1  # ...the next distance's relatives compete too, each level costing this much cosine
MAX_CANDIDATES = 12  # relatives per word the encoder chooses between (nearest relations first)
# function words never rewritten (they carry no content the captions could lack)
STOP_WORDS = frozenset(
    "a an the of in on at to into onto from by with and or its it his her their our us we you is are "
    "was be been being this that these those as for off out up down over under around round about "
    "then there here very just so some any behind beside between beyond through across along toward "
    "towards upon within without near onto he she him they them itself one".split())


# a noun after one of these (and a determiner) names a place or thing the motion relates to
PREPOSITIONS = frozenset(
    "of in on at to into onto from by with off over under around round about behind beside between beyond "
    "through across along toward towards upon within without near after like past against before inside "
    "outside beneath below above among amongst amid".split())
DETERMINERS = frozenset("a an the its his her their this that my your our every each".split())
PRONOUNS = frozenset("he she it they we you i".split())  # a whole noun phrase: what follows is its verb
CONJUNCTIONS = frozenset("and or".split())


# --- 1. How a sentence uses its words -----------------------------------------------------------
def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:-[a-z]+)*", text.lower())


def tokens(text: str) -> list[str]:
    """Words and the punctuation that ends a clause (",", ":", ";", ".", "!", "?")."""
    return re.findall(r"[a-z]+(?:-[a-z]+)*|[,:;.!?]", text.lower())


def _inflected_verb(w: str) -> bool:
    """Whether ``w`` is an inflected verb form ("walks", "walking", "walked"), by WordNet's morphology."""
    return any(b != w for b in wordnet().morphy(w, "v"))


def read_sentence(toks: list[str]) -> list[str]:
    """How a caption or query uses each token, read left to right from WordNet's morphology and the
    closed word classes (determiners, prepositions, pronouns): "n" the head of a noun phrase, "m"
    a word before the head ("a *brown* bear", "a *toy* robot"), "v" a verb, "g" an -ing form after a
    bare preposition ("in greeting": noun or verb), "x" another content word after a verb ("walks
    *left*", "waves *hello*"), "p" the head of a noun phrase after a preposition and a determiner
    ("toward the *viewer*"), "q" a word before it, "f" a function word or punctuation.

    A noun phrase starts a clause and follows a determiner or a preposition; it ends before a
    function word, before an -ing form, and (unless a bare preposition began it: "in little *hops*")
    before an inflected verb form ("a blue duck | walks"), which is then its verb. "to" before a word
    WordNet reads as a verb is an infinitive's ("turns to *face*")."""
    wn = wordnet()
    tags = ["f"] * len(toks)
    phrase: list[int] = []  # token indices of the open noun phrase
    state, kind = "np", "subject"  # expecting a noun phrase ("np") or after its verb ("vp"); phrase kind

    def close():
        for i in phrase[:-1]:
            tags[i] = "q" if kind == "det-pp" else "m"
        if phrase:
            tags[phrase[-1]] = "p" if kind == "det-pp" else "n"
        phrase.clear()

    for n, w in enumerate(toks):
        prev = toks[n - 1] if n else ""
        nxt = toks[n + 1] if n + 1 < len(toks) else ""
        if not w[:1].isalpha():  # clause end
            close()
            state, kind = "np", "subject"
        elif w in DETERMINERS:
            close()
            state, kind = "np", ("det-pp" if prev in PREPOSITIONS or kind == "bare-pp" and not phrase
                                 else "object" if state == "vp" else "subject")
        elif w in PREPOSITIONS:
            after_verb = state == "vp" or kind == "object" and phrase
            close()
            if not nxt[:1].isalpha() or nxt in STOP_WORDS or nxt in PREPOSITIONS:
                state = "vp" if after_verb else state  # a particle ("wheels round to", "falls over")
            elif w == "to" and nxt not in DETERMINERS and wn.morphy(nxt, "v") and not wn.morphy(nxt, "n"):
                state = "inf"
            elif w == "to" and nxt not in DETERMINERS and nxt in wn.index["v"] and after_verb:
                state = "inf"  # "turns to face", "sits down to rest": a bare verb after the verb
            else:
                state, kind = "np", "bare-pp"
        elif w in PRONOUNS and state == "np" and not phrase:
            state = "vp"
        elif w in CONJUNCTIONS:
            if state != "np":
                close()
        elif w in STOP_WORDS:
            had = bool(phrase)
            close()
            if state == "np" and had:
                state = "vp"
        elif state == "inf":
            tags[n], state = "v", "vp"
        elif state == "np":
            # after a bare preposition a plural ends the phrase ("with green spots | dashes"), an
            # adjective does not ("in little hops")
            plural = bool(phrase) and any(b != toks[phrase[-1]] for b in wn.morphy(toks[phrase[-1]], "n"))
            ends = w.endswith("ing") or kind != "bare-pp" or plural
            if _inflected_verb(w) and ends and (phrase or kind == "bare-pp"):
                close()
                tags[n], state = ("g" if kind == "bare-pp" and not phrase else "v"), "vp"
            else:
                phrase.append(n)
        else:  # after a verb: another verb when inflected after "and" ("stumbles and topples") or an -ing form
            coordinated = prev in CONJUNCTIONS and _inflected_verb(w)
            tags[n] = "v" if coordinated or w.endswith("ing") and wn.morphy(w, "v") else "x"
    close()
    return tags


# a word's use in a sentence -> the parts of speech it may be read as (WordNet's n, v, a = adjective
# or adverb); "p": none, the noun of a prepositional phrase names a place or part the query is about
# its WordNet senses searched, and the caption uses (n, v, a) a replacement must have: a noun
# phrase's head by its noun senses only ("a *jackrabbit*"), a verb by all its senses (the noun "a
# pounce" is a leap) but only by a word the captions use as a verb
USE_PARTS = {"n": (("n",), "n"), "m": (("n", "a"), "an"), "v": (POS, "v"), "g": (POS, "nv"), "x": (POS, "an"),
             "p": ((), ""), "q": ((), ""), "f": ((), "")}
# ...and the parts of speech (n, v, a) a caption word counts as used in: a word before a head counts
# as an adjective ("a *toy* robot", "a *baby* penguin": they qualify, they name no thing)
CAPTION_USE = {"n": "n", "m": "a", "v": "v", "g": "nv", "x": "an", "p": "n", "q": "a", "f": ""}


# --- 2. Query rewriting against a corpus vocabulary ----------------------------------------------


class Vocabulary:
    """The words of a corpus's captions, and for each WordNet base form the caption words that have it."""

    def __init__(self, captions):
        captions = list(captions)
        self.words = {w for c in captions for w in words(c)}
        wn = wordnet()
        # how the captions use each word: its parts of speech (n, v, a) over all captions
        self.uses: dict[str, set[str]] = {}
        # the word runs the captions contain, each with its first word also as a WordNet base form
        # ("turns around" -> ("turn", "around")): a multi-word lemma stands in only as a phrase they use
        self.phrases: set[tuple[str, ...]] = set()
        for c in captions:
            toks = tokens(c)
            for w, use in zip(toks, read_sentence(toks)):
                self.uses.setdefault(w, set()).update(CAPTION_USE[use])
            ws = words(c)
            for i in range(len(ws) - 1):
                for size in (2, 3):
                    rest = tuple(ws[i + 1:i + size])
                    after = ws[i + size] if i + size < len(ws) else ""
                    # a particle, not a preposition: "jumps on | the beach" is no "jumps on"
                    if len(rest) == size - 1 and after not in DETERMINERS:
                        for b in {ws[i]} | set(wn.morphy(ws[i], "v")):
                            self.phrases.add((b,) + rest)
        self.by_base: dict[str, list[str]] = {}
        for w in sorted(self.words):
            for pos in POS:
                for base in wn.morphy(w, pos) or ([w] if pos == "n" else []):
                    if w not in self.by_base.setdefault(base, []):
                        self.by_base[base].append(w)

    def surface(self, lemma: str, like: str, pos: str = "n", uses: str = "nva") -> str | None:
        """Caption words for a WordNet lemma, inflected like ``like`` when the captions allow ("walk"
        like "ambling" -> "walking"); a compound by its head ("brown_bear" -> "bear", "sit_down" ->
        "sits down"), a phrasal verb only where the captions use the phrase ("turns on" only if they
        say "turns on"); None when the captions never use it, only as a function word, or only as
        other parts of speech than ``uses`` ("v": words the captions use as verbs; "n" nouns, "a"
        adjectives or adverbs): a word the query uses as a verb is replaced by a word the captions
        use as one ("chases" by no "dog", "plunks" by no "duck"), a noun by a noun."""
        parts = lemma.split("_")
        if len(parts) > 1:
            head, rest = (parts[0], parts[1:]) if pos == "v" else (parts[-1], [])
            first = self.surface(head, like, pos, uses)
            if first is None:
                return None
            known = tuple(parts) in self.phrases  # "turns on" only where the captions say "turns on"
            return (" ".join([first] + rest) if known else None) if rest else first
        if lemma in STOP_WORDS:
            return None
        forms = [f for f in self.by_base.get(lemma, []) if set(uses) & self.uses.get(f, set())]
        if not forms:
            return None
        for suffix in ("ing", "ed", "s"):
            if like.endswith(suffix):
                same = [f for f in forms if f.endswith(suffix)]
                if same:
                    return same[0]
        return lemma if lemma in forms else forms[0]


# verbs that take their event from the noun after them ("gives a wave", "took a seat"): no motion of their own
LIGHT_VERBS = frozenset("give take make do have get".split())


def candidates(word: str, vocab: Vocabulary, avoid=frozenset(), parts=POS,
               uses: str = "nva", like: str | None = None) -> list[tuple[str, int, float]]:
    """(caption words, distance, penalty) for ``word``'s nearest WordNet relatives that the captions
    use as ``uses`` (``Vocabulary.surface``): those at the nearest distance that has any (at most
    MAX_CANDIDATES; a relative through a rare sense only, penalty above FAR_SENSE, lets the next
    distance compete too: "crashes" is "dashes" only in a rare sense, "falls" is one step further),
    no light verb for a verb, none with a word of ``avoid``; ``parts``: the parts of speech of
    ``word``'s senses searched; ``like``: the query word whose inflection the caption words take
    (``word``'s first part by default). The penalty (cosine given up) grows with the rank of ``word``'s sense the relative
    came from and with the rank of that synset among the relative's own senses: the sentence
    cosine alone favours vague words ("gives", "moves"), which change a sentence's embedding least."""
    out, seen, nearest = [], set(), None
    for d, sense, pos, lemma, own in wordnet().relatives(word, parts):
        if nearest is not None and d > nearest:
            break
        if "v" in uses and lemma.split("_")[0] in LIGHT_VERBS:
            continue  # a light verb names no motion of its own ("heads" is no "takes", "salutes" no "gives")
        s = vocab.surface(lemma, like or word.split("_")[0], pos, uses)
        if s and s != word and s not in seen and not set(s.split()) & avoid:
            seen.add(s)
            penalty = SENSE_PENALTY * sense + OWN_SENSE_PENALTY * own
            out.append((s, d, penalty + FARTHER_PENALTY * (d - out[0][1] if out else 0)))
            if penalty <= FAR_SENSE:
                nearest = d
        if len(out) >= MAX_CANDIDATES:
            break
    return out


SYNONYM_PENALTY = 0.3  # a caption verb in the same synset through a common sense: another wording of the motion


def caption_rewordings(query: str, vocab: Vocabulary) -> list[str]:
    """``query`` with each verb the captions use replaced in turn by the captions' other verbs for it:
    its WordNet synonyms through common senses ("falls" -> "tumbles", "sprints" -> "dashes", "spins"
    -> "twirls"), so a query in the corpus's own words also finds the clips worded the other way."""
    wn = wordnet()
    text = re.findall(r"[A-Za-z]+(?:-[A-Za-z]+)*|[^A-Za-z]+", query)
    at = [i for i, t in enumerate(text) if t[:1].isalpha()]
    toks = tokens(query)
    uses = [u for t, u in zip(toks, read_sentence(toks)) if t[:1].isalpha()]
    out = []
    for i, use in zip(at, uses):
        w = text[i].lower()
        if use != "v" or "v" not in vocab.uses.get(w, ()):
            continue
        bases = set(wn.morphy(w, "v")) | {w}
        for c, d, penalty in candidates(w, vocab, frozenset(), POS, "v"):
            if d == 0 and penalty <= SYNONYM_PENALTY and not set(wn.morphy(c.split()[0], "v")) & bases:
                out.append("".join(text[:i] + [c] + text[i + 1:]))
    return out


def _collocation(w: str, nxt: str, parts=POS) -> tuple[str | None, tuple | None]:
    """(the WordNet lemma of two query words read as one, its reading as in ``USE_PARTS``): ("keels
    over" -> "keel_over", a verb; "mechanical man" -> "mechanical_man", a noun), or (None, None);
    ``parts``: how the sentence may read ``w`` (a phrasal verb starts with a verb, a compound noun
    with a noun or an adjective)."""
    wn = wordnet()
    if "v" in parts:
        for base in wn.morphy(w, "v"):  # a phrasal verb inflects its first word
            if f"{base}_{nxt}" in wn.index["v"]:
                return f"{base}_{nxt}", (("v",), "v")
    if "n" in parts or "a" in parts:
        for base in wn.morphy(nxt, "n") or [nxt]:  # a compound noun its last ("mechanical men")
            if f"{w}_{base}" in wn.index["n"]:
                return f"{w}_{base}", (("n",), "n")
    return None, None


def parts_of_speech(text: str) -> list[tuple[tuple[str, ...], str]]:
    """(the parts of speech of its WordNet senses searched, the caption uses a replacement needs) for
    each word of ``text``, by its use (``read_sentence``, ``USE_PARTS``): a noun phrase's head by
    nouns ("a *jackrabbit*"), a verb by words the captions use as verbs ("a hare *bounds*"); nothing
    for a function word or the noun of a prepositional phrase ("toward the viewer", "onto its haunches"):
    it names a place or body part, which captions word as their settings, so a relative ("the other",
    "its back") only drifts the query, while the original wording is searched anyway."""
    toks = tokens(text)
    return [USE_PARTS[t] for w, t in zip(toks, read_sentence(toks)) if w[:1].isalpha()]


def rewrite_query(query: str, vocab: Vocabulary, encoder, keep=frozenset()) -> str:
    """``query`` with each content word (or two-word WordNet collocation) the captions never use
    replaced by the caption words of its WordNet relative that keeps the query's meaning best
    (sentence-embedding cosine); the query itself when every word is known or has no relative.
    ``keep``: words never rewritten (direction words, which the search's direction check reads)."""
    import numpy as np

    text = re.findall(r"[A-Za-z]+(?:-[A-Za-z]+)*|[^A-Za-z]+", query)  # words and what lies between
    at = [i for i, t in enumerate(text) if t[:1].isalpha()]
    reading = parts_of_speech(query)
    changed = False
    for n, i in enumerate(at):
        w = text[i].lower()
        if not w or w in vocab.words or w in STOP_WORDS or w in keep or len(w) < 3:
            continue
        parts, uses = reading[n]
        if not parts:
            continue
        j = at[n + 1] if n + 1 < len(at) else None
        unit, unit_pos = _collocation(w, text[j].lower(), parts) if j is not None else (None, None)
        if unit is None and "-" in w and w.split("-")[-1] in vocab.words:  # "hippity-hops"
            text[i], changed = w.split("-")[-1], True
            continue
        # (replacement, last text index replaced, penalty): the word alone, or the collocation with its next word
        cands = [(c, i, pen) for c, _, pen in candidates(w, vocab, keep, parts, uses)]
        cands += [(c, j, pen) for c, _, pen in (candidates(unit, vocab, keep, *unit_pos, like=w) if unit else [])]
        if not cands:
            continue
        variants = ["".join(text[:i] + [c] + text[end + 1:]) for c, end, _ in cands]
        vecs = encoder.encode(["".join(text)] + variants)  # (1 + C, D), unit norm
        score = vecs[1:] @ vecs[0] - np.array([penalty for _, _, penalty in cands])
        best, end, _ = cands[int(np.argmax(score))]
        for k in range(i + 1, end + 1):
            text[k] = ""
        text[i], changed = best, True
    if not changed:
        return query
    out = re.sub(r"\s+", " ", "".join(text)).strip()
    out = re.sub(r"\b(\w+)(?: \1\b)+", r"\1", out)  # "a teddy bear" -> "a bear bear" -> "a bear"
    return _articles(out)


def _articles(text: str) -> str:
    """'a'/'an' agreeing with the next word after a rewrite ("an android" -> "a robot")."""
    return re.sub(r"\b([Aa])n? ([A-Za-z])", lambda m: m[1] + ("n " if m[2].lower() in "aeiou" else " ") + m[2], text)


def main_verb(text: str) -> str | None:
    """The base form of the first word of ``text`` that WordNet reads as a verb ("hops along" -> "hop");
    after a light verb, the next word that can be one ("gives a friendly wave" -> "wave")."""
    first = None
    for w in re.findall(r"[a-z]+", text.lower()):
        if w not in STOP_WORDS and (bases := wordnet().morphy(w, "v")):
            if first is None and bases[0] in LIGHT_VERBS:
                first = bases[0]
                continue
            return bases[0]
    return first


@functools.lru_cache(maxsize=4096)
def near_verbs(verb: str, senses: int = 2) -> frozenset[str]:
    """``verb`` and its WordNet synonyms in its ``senses`` most frequent senses, single words only
    ("twirl" -> {"twirl", "spin", "whirl", ...}; hypernyms are too broad: to hop is to jump)."""
    return frozenset({lemma for d, sense, pos, lemma, _ in wordnet().relatives(verb, ("v",))
                      if d == 0 and sense < senses and pos == "v" and "_" not in lemma} | {verb})


def same_verb(verb: str, text: str) -> bool:
    """Whether ``text`` uses ``verb`` or a synonym of it, either way round: "twirls" is among spin's
    synonyms only in its third sense, but spin is twirl's first ("a robot twirls" for "spins")."""
    return any(b in near_verbs(verb) or verb in near_verbs(b) for b in verb_bases(text))


def verb_bases(text: str) -> set[str]:
    """Base forms of every word of ``text`` that WordNet reads as a verb ("hopping around" -> {"hop"})."""
    return {b for w in re.findall(r"[a-z]+", text.lower()) if w not in STOP_WORDS for b in wordnet().morphy(w, "v")}
