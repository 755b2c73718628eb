"""Prose -> key plots: one event each, with who does it, the motion phrase and the place.

Sentences end at . ! ? and blank lines. A sentence splits into clauses at ';', at 'then' ('and then',
', then'), and at 'and'/'but' followed by a new subject doing something ("Clover walked away, and
Ribbit waved") or by an event verb when the verb before has words of its own ("spun on the spot and
waved"); a bare verb before 'and' leads into the next ("slipped and fell down": one plot, whose shot
shows where it ends up, "falls down"). In each clause: the subject (a declared name or alias, "the
<class word>", a pronoun, "the two friends"; ``Context.resolve``), the event verb
(``words.is_event_verb``; after a light verb the noun: "took a seat"), the motion phrase (the verb
and what follows, up to a purpose, manner or time clause: "to catch...", "in surprise", "until...")
and the place (prepositional phrases whose noun names a place: "across the snowy field"), which
carries to later plots. A sentence without an event that names a place or time sets the scene ("It
was a cold night on the city street."); any other sentence without an event is an error, and so is a
capitalised name the header does not declare.
"""

import re
from dataclasses import dataclass, field

from story_pipeline.corpus.lexicon import LIGHT_VERBS, STOP_WORDS
from story_pipeline.plan.context import OBJECT_PRONOUNS, SUBJECT_PRONOUNS, Context, carried
from story_pipeline.plan.script import Script, fail
from story_pipeline.plan.words import (NOT_EVENTS, article, is_adverb_only, is_event_verb,
                                       is_noun, is_place_noun, present, verb_base)

TOKEN = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*(?:-[A-Za-z]+)*|[,;:]|[^\sA-Za-z,;:]")
SENTENCE_END = re.compile(r"[.!?]+[\"'”’)]*(?=\s|$)|\n\s*\n")
DETERMINERS = frozenset("the a an this that".split())
# where a place phrase may start; the prompt says it with the prepositions Story.shot_query strips
PLACE_PREPS = frozenset("in on at through across inside near by under beside along among amid around down up "
                        "from into onto over past toward towards".split())
PREP_AS_PLACE = {"into": "in", "toward": "near", "towards": "near"}  # others -> "on" ("down the street")
PATH_PREPS = frozenset("across along past around".split())
QUERY_PREPS = frozenset("in on at through across inside near by under beside along among amid".split())
CLAUSE_ENDS = frozenset("until because while as when before after so since though although with for whenever "
                        "unless".split())
TIME_WORDS = {"night": "at night", "midnight": "at night", "dusk": "at dusk", "sunset": "at sunset",
              "dawn": "at dawn", "sunrise": "at sunrise", "noon": "at noon"}
SKIP_BEFORE_VERB = frozenset("then also just soon now still again both together all slowly quickly not never "
                             "to was were is are had has did does".split())
BE_FORMS = frozenset("was were is are am be been seemed seems looked looks felt feels".split())


@dataclass
class Tok:
    text: str
    start: int
    end: int

    @property
    def low(self) -> str:
        return self.text.lower()


@dataclass
class Plot:
    line: int  # script line of the clause
    start: int  # character offsets of the clause in the prose (Script.prose)
    end: int
    source: str  # the clause as written
    actors: list  # Member, the subject
    verb: str  # the event verb's base form
    motion: str  # the motion phrase, present tense, characters as tokens ("leaps over a <bolt>")
    place: str  # "across the snowy field at night", or "" (none known yet)
    others: list = field(default_factory=list)  # Member named in the motion phrase
    place_first: bool = False  # say the place before the subject ("on the sand, a <x> dashes across")


def tokens(text: str, offset: int = 0) -> list[Tok]:
    return [Tok(m[0], m.start() + offset, m.end() + offset) for m in TOKEN.finditer(text)]


def sentences(prose: str) -> list[tuple[int, int]]:
    """(start, end) offsets of each sentence of ``prose`` (without its end mark)."""
    out, at = [], 0
    for m in SENTENCE_END.finditer(prose):
        if prose[at:m.start()].strip():
            out.append((at, m.start()))
        at = m.end()
    if prose[at:].strip():
        out.append((at, len(prose)))
    return out


def _mention(toks: list[Tok], i: int, cast: list) -> tuple[list, int] | None:
    """Declared characters named at toks[i] -> (members, tokens used)."""
    best = None
    for m in cast:
        for phrase in [m.name] + m.aliases:
            words = phrase.split()
            got = [t.text for t in toks[i:i + len(words)]]
            if [w.lower() for w in got] == [w.lower() for w in words] and (phrase != m.name or got == words):
                if best is None or len(words) > best[1]:
                    best = ([m], len(words))
    if best is None and i + 1 < len(toks) and toks[i].low in DETERMINERS:
        noun = toks[i + 1].low if toks[i + 1].low not in ("little", "young", "old", "big", "small") else (
            toks[i + 2].low if i + 2 < len(toks) else "")
        used = 2 if noun == toks[i + 1].low else 3
        kinds = [m for m in (cast) if _names_kind(noun, m.class_word)]
        if len(kinds) == 1:
            best = (kinds, used)
    return best


GROUP_WORDS = frozenset("friends pair two both everyone trio three all".split())


def _group(toks: list[Tok], i: int) -> int:
    """Tokens of a plural reference at toks[i] ("the two friends", "both", "the friends") -> 0 if none."""
    j = i
    if j < len(toks) and toks[j].low in DETERMINERS:
        j += 1
    k = j
    while k < len(toks) and k - j < 3 and toks[k].low in GROUP_WORDS:
        k += 1
    if k == j:
        return 0
    if k < len(toks) and toks[k].low == "of" and k + 1 < len(toks) and toks[k + 1].low == "them":
        k += 2
    return k - i


def _names_kind(noun: str, class_word: str) -> bool:
    from story_pipeline.corpus.wordnet import wordnet

    if not noun:
        return False
    if noun in (class_word, class_word + "s"):
        return True
    rel = wordnet().relatives(class_word, ("n",))
    return any(d <= 1 and sense == 0 and lemma == noun for d, sense, _, lemma, _ in rel)


def _unknown_name(toks: list[Tok], cast: list) -> str | None:
    """A capitalised word that names someone the header does not declare: mid-sentence (not after a
    place preposition: "in Paris"), or first in a sentence or after a comma and followed by a verb
    ("Pip jumped"). Sentence-initial words that are no subject ("Then", "Suddenly", "The") pass."""
    for i, t in enumerate(toks):
        if not t.text[:1].isupper() or t.text == "I" or t.low in STOP_WORDS | DETERMINERS \
                or _mention(toks, i, cast) or any(t.text in m.name.split() for m in cast):
            continue
        if i == 0 or toks[i - 1].text in ",;:":
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            if nxt is None or is_adverb_only(t.text) or not (_finite_verb(nxt.text) or (
                    nxt.low.endswith("s") and verb_base(nxt.text))):
                continue
        elif toks[i - 1].low in PLACE_PREPS or (toks[i - 1].text[:1].isupper() and toks[i - 1].low not in STOP_WORDS
                                                 and not is_adverb_only(toks[i - 1].text)):
            continue  # "in Paris", "New York"
        return t.text
    return None


def split_clauses(toks: list[Tok], cast: list) -> list[list[Tok]]:
    """Clauses of one sentence (module docstring)."""
    out, cur = [], []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.text == ";":
            out.append(cur)
            cur, i = [], i + 1
            continue
        if t.low == "then" and cur:
            while cur and (cur[-1].low in ("and", ",")):
                cur.pop()
            out.append(cur)
            cur, i = [], i + 1
            continue
        if t.low in ("and", "but") and any(verb_base(c.text) for c in cur[1:]) and i + 1 < len(toks) \
                and (_new_subject(toks, i + 1, cast) or _own_action(cur, toks, i + 1)):
            while cur and cur[-1].text == ",":
                cur.pop()
            out.append(cur)
            cur, i = [], i + 1
            continue
        cur.append(t)
        i += 1
    out.append(cur)
    return [c for c in out if c]


def _own_action(cur: list[Tok], toks: list[Tok], i: int) -> bool:
    """Whether 'and' at toks[i - 1] joins two actions of one subject, each a plot: an event verb follows
    and the verb before has words of its own ("spun on the spot and waved"). A bare verb before 'and'
    leads into the next one ("slipped and fell down", "tripped and tumbled"): one event, no cut."""
    if not (is_event_verb(toks[i].text) and verb_base(toks[i].text) and not toks[i].low.endswith("ing")):
        return False
    last = cur[-1]
    return not (verb_base(last.text) and (is_event_verb(last.text) or not is_noun(last.text))) and any(
        is_event_verb(c.text) for c in cur[1:])


def _new_subject(toks: list[Tok], i: int, cast: list) -> bool:
    """Whether a subject doing something starts at toks[i] ("Ribbit waved", "she fell", "the bear sat")."""
    got = _mention(toks, i, cast)
    n = got[1] if got else (1 if toks[i].low in SUBJECT_PRONOUNS else 0)
    if not n:
        return False
    j = i + n
    while j < len(toks) and (toks[j].low in SKIP_BEFORE_VERB or is_adverb_only(toks[j].text)):
        j += 1
    return j < len(toks) and verb_base(toks[j].text) is not None


def _np_end(toks: list[Tok], j: int) -> int:
    """End of the noun phrase starting at toks[j] (up to 5 words, before a preposition, comma or 'and')."""
    k = j
    while k < len(toks) and k - j < 5 and toks[k].text[:1].isalpha() and toks[k].low not in PLACE_PREPS \
            and toks[k].low not in ("and", "or", "to", "toward", "towards") and toks[k].low not in CLAUSE_ENDS:
        k += 1
    return k


def _places(toks: list[Tok]) -> tuple[list[Tok], list[str], str]:
    """Take place and time phrases out of ``toks`` -> (the rest, place phrases, time phrase)."""
    rest, places, time = [], [], ""
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.low in TIME_WORDS:
            time = TIME_WORDS[t.low]
        if t.low in PLACE_PREPS and i + 1 < len(toks):
            k = _np_end(toks, i + 1)
            head = toks[k - 1] if k > i + 1 else None
            if head is not None and head.low in TIME_WORDS:
                time, i = TIME_WORDS[head.low], k
                continue
            if head is not None and head.text[:1].islower() and is_place_noun(head.text):
                prep = t.low if t.low in QUERY_PREPS else PREP_AS_PLACE.get(t.low, "on")
                places.append(" ".join([prep] + [x.text for x in toks[i + 1:k]]))
                i = k
                continue
        rest.append(t)
        i += 1
    return rest, places, time


def _clip(text: str, n: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _finite_verb(word: str) -> bool:
    """A word that reads as a finite verb after a noun phrase ("was", "blew", "fell", "rolled")."""
    from story_pipeline.corpus.wordnet import wordnet

    w = word.lower()
    if w in ("was", "were", "is", "are", "had", "has"):
        return True
    base = verb_base(w)
    return base is not None and (w in wordnet().exceptions["v"] or w.endswith("ed") or not is_noun(w))


def _verb_at(toks: list[Tok], i: int) -> tuple[int, str] | None:
    """(index where the motion phrase starts, event verb base) for a clause whose subject ends at i: the
    first verb if it is an event ("leaped"), the noun after a light verb ("took a seat"), a verb after
    'and'/'to' that is ("laughed and fell", "decided to run"), the -ing form after 'was' ("was
    running"); a predicate after 'was' is no event ("was full of falling leaves")."""
    j = i
    while j < len(toks) and (toks[j].low in SKIP_BEFORE_VERB - BE_FORMS or toks[j].text == ","
                             or (is_adverb_only(toks[j].text) and not is_event_verb(toks[j].text))):
        j += 1
    first, k = None, j
    while k < len(toks):
        t = toks[k]
        if t.low in BE_FORMS:
            if k + 1 < len(toks) and toks[k + 1].low.endswith("ing") and is_event_verb(toks[k + 1].text):
                return k + 1, verb_base(toks[k + 1].text)  # "was running"
            k = next((n for n in range(k + 1, len(toks)) if toks[n].low == "and"), len(toks)) + 1
            first = None
            continue
        base = verb_base(t.text)
        if base is None:
            k += 1
            continue
        if is_event_verb(t.text) and (first is None or toks[k - 1].low in ("and", "to")):
            return (first if first is not None else k), base
        if base in LIGHT_VERBS and first is None:
            m = k + 1
            while m < len(toks) and m <= k + 4 and not is_event_verb(toks[m].text):
                m += 1
            if m < len(toks) and m <= k + 4 and toks[m - 1].low not in ("and", "to"):
                return k, verb_base(toks[m].text)
        if first is None:
            first = k
        elif toks[k - 1].low not in ("and", "to"):
            break
        k += 1
    return None


def plan_plots(script: Script) -> list[Plot]:
    """Key plots of the script's prose, in order (module docstring); StoryError on a problem."""
    ctx = Context(script.cast)
    plots: list[Plot] = []
    names = ", ".join(m.name for m in script.cast)
    for start, end in sentences(script.prose):
        toks = tokens(script.prose[start:end], start)
        if not toks:
            continue
        line = script.prose_line + script.prose[:toks[0].start].count("\n")
        said = _clip(script.prose[toks[0].start:toks[-1].end])
        if (unknown := _unknown_name(toks, script.cast)) is not None:
            raise fail(script.file, line, f"'{unknown}' is not a declared character; add {unknown} to the "
                                          f"header's characters: (token, class_word, images), or name one of "
                                          f"{names}.")
        found = []
        for clause in split_clauses(toks, script.cast):
            found.append(_plot(clause, ctx, script, line, said))
        made = [p for p in found if isinstance(p, Plot)]
        if not made and not any(found):
            raise fail(script.file, line, f"\"{said}\" has no event a shot can show (no action verb such as walks, "
                                          "leaps or sits); say what a character does, or say where the story is "
                                          "(\"They were in the park.\").")
        plots += made
    if not plots:
        raise fail(script.file, script.prose_line, "the script has no event a shot can show; write what the "
                                                   f"characters ({names}) do, one event per sentence or clause.")
    return plots


def _plot(clause: list[Tok], ctx: Context, script: Script, line: int, said: str):
    """A Plot, True for a clause that only set the scene, or False (no event, no scene)."""
    cast = script.cast
    names = ", ".join(m.name for m in cast)
    # a leading adverbial ("In the desert,", "Late at night,", "Exhausted,") names no character
    if "," in [t.text for t in clause]:
        k = [t.text for t in clause].index(",")
        head = clause[:k]
        if head and not any(_mention(clause, j, cast) or clause[j].low in SUBJECT_PRONOUNS for j in range(k)):
            _, places, time = _places(head)
            ctx.at(places, time)
            clause = clause[k + 1:]
    while clause and (clause[0].low in ("then", "and", "but", "so") or clause[0].text == ","):
        clause = clause[1:]
    # "Suddenly he ...", "A moment later she ...", "Together they ...": words before the subject
    first = next((j for j in range(len(clause)) if _mention(clause, j, cast) or clause[j].low in SUBJECT_PRONOUNS
                  or _group(clause, j)), None)
    if first and not any(verb_base(t.text) and not is_adverb_only(t.text) and t.low not in SKIP_BEFORE_VERB
                         and not is_noun(t.text) for t in clause[:first]):
        clause = clause[first:]
    if not clause:
        return False
    if (n := _group(clause, 0)):  # "the two friends", "both of them": they
        clause = [Tok("they", clause[0].start, clause[n - 1].end)] + clause[n:]
    i, actors, plural = 0, [], False
    got = _mention(clause, 0, cast)
    if got:
        actors, i = list(got[0]), got[1]
        while i + 1 < len(clause) and clause[i].low == "and" and (more := _mention(clause, i + 1, cast)):
            actors += [m for m in more[0] if m not in actors]
            i += 1 + more[1]
    elif clause[0].low in SUBJECT_PRONOUNS:
        actors, i = ctx.resolve(clause[0].low), 1
        plural = clause[0].low == "they"
    elif clause[0].low in DETERMINERS or (clause[0].text[:1].isupper() and not verb_base(clause[0].text)):
        i = None  # a subject that is no character ("The wind blew", "The park was quiet")
    verb = _verb_at(clause, i or 0) if i is not None else None
    if i is None:
        subject_end = next((k for k in range(1, len(clause)) if _finite_verb(clause[k].text)), len(clause))
        verb = _verb_at(clause, subject_end)
        _, places, time = _places(clause)
        if not places and any(is_place_noun(t.text) for t in clause[:subject_end] if t.text[:1].islower()):
            places = ["in " + " ".join(t.text.lower() for t in clause[:subject_end])]
        if verb is not None and is_event_verb(clause[verb[0]].text):
            raise fail(script.file, line, f"\"{said}\" shows no declared character doing it; name one of {names} "
                                          "as the one who acts, or describe the place without an action.")
        if places or time:
            ctx.at(places, time)
            return True
        return False
    if verb is None:
        _, places, time = _places(clause)
        if places or time:
            ctx.at(places, time)
            return True
        return False
    if not actors:
        actors = list(ctx.last)
    if not actors:
        raise fail(script.file, line, f"\"{said}\" names no declared character; say who does it ({names}).")
    plural = plural or len(actors) > 1
    motion, base, others = _motion(clause[verb[0]:], ctx, actors, plural)
    base = base or verb[1]
    rest, places, time = _places(motion)
    ctx.at(places, time)
    ctx.named(actors + others)
    ctx.last = actors
    # "dashed across the sand": the path word is part of the motion ("dashes across", as captions say it)
    # when the verb has nothing else; the place is then said first ("on the sand, a <x> dashes across")
    path = len(rest) == 1 and places and places[0].split(" ", 1)[0] in PATH_PREPS
    if path:
        rest.append(Tok(places[0].split(" ", 1)[0], rest[0].end, rest[0].end))
        places = [carried(p) for p in places]
    place = " ".join(x for x in (" ".join(places) or ctx.place, ctx.time) if x)
    return Plot(line, clause[0].start, clause[-1].end, script.prose[clause[0].start:clause[-1].end], actors, base,
                _join(rest), place, others, place_first=bool(path))


def _motion(toks: list[Tok], ctx: Context, actors: list, plural: bool) -> tuple[list[Tok], str, list]:
    """(the motion phrase, its verb's base, characters it names besides the actors): verbs in the present,
    up to a purpose, manner or time clause ("to catch...", "in surprise", "until..."); other characters
    by their class word ("waves to a duck": the shot shows its actors; an object's token would make the
    retrieval look for clips of both kinds). Verbs joined by 'and' are one plot, and its shot shows the
    last of them, where the action ends up ("slipped and fell down" -> "falls down")."""
    out, others, verbs = [], [], []
    n = 0
    while n < len(toks):
        t = toks[n]
        nxt = toks[n + 1] if n + 1 < len(toks) else None
        if n and (t.text == "," or t.low in CLAUSE_ENDS):
            break
        if n and t.low == "to" and nxt is not None and verb_base(nxt.text) and nxt.low != "face" \
                and (not is_noun(nxt.text) or nxt.low in ("look", "see", "catch", "get", "rest")):
            break
        if n and t.low == "in" and nxt is not None and nxt.low not in DETERMINERS and not is_place_noun(nxt.text):
            break  # "in surprise", "in circles", "in little hops": how, not what
        got = _mention(toks, n, ctx.cast) if n else None
        who = got[0] if got else None
        if who is None and n and t.low in OBJECT_PRONOUNS and (
                t.low != "her" or nxt is None or not nxt.text[:1].isalpha()
                or nxt.low in QUERY_PREPS | PLACE_PREPS | CLAUSE_ENDS):
            who = ctx.resolve(t.low, exclude=actors) or None
        if who:
            others += [m for m in who if m not in actors and m not in others]
            out.append(Tok(" and ".join(f"{article(m.class_word)} {m.class_word}" for m in who), t.start, t.end))
            n += got[1] if got else 1
            continue
        if n == 0 or (toks[n - 1].low == "and" and verb_base(t.text) and
                      (is_event_verb(t.text) or not is_noun(t.text))) or (
                n == 1 and toks[0].low in LIGHT_VERBS | NOT_EVENTS):
            base = verb_base(t.text)
            if base:
                if n and toks[n - 1].low == "and":
                    verbs.append(len(out) - 1)  # the 'and' before it
                out.append(Tok(present(base, plural), t.start, t.end))
                n += 1
                continue
        out.append(t)
        n += 1
    if verbs:
        out = out[verbs[-1] + 1:]
    base = verb_base(out[0].text) if out else None
    if base in LIGHT_VERBS:  # "takes a seat": the verb is the noun's
        base = next((verb_base(t.text) for t in out[1:] if is_event_verb(t.text)), base)
    return out, base, others


def _join(toks: list[Tok]) -> str:
    text = ""
    for t in toks:
        text += t.text if t.text in ",;:" or not text else " " + t.text
    return text.strip()
