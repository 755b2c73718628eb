"""Who and where the story is at, as the planner reads it: the characters named last (for pronouns)
and the place and time of the scene."""

SUBJECT_PRONOUNS = {"he": 1, "she": 1, "it": 1, "they": 2}
OBJECT_PRONOUNS = {"him": 1, "her": 1, "them": 2}
GENDER = {"he": "m", "him": "m", "she": "f", "her": "f"}


def carried(place: str) -> str:
    """A place said with a motion, as the place of later shots ("across the field" -> "on the field")."""
    prep, rest = place.split(" ", 1)
    if prep in ("across", "along", "over", "onto", "down", "up", "from", "past"):
        prep = "on"
    elif prep in ("through", "into", "among", "amid", "around", "inside"):
        prep = "in"
    return f"{prep} {rest}"


class Context:
    """Who was named last (pronouns), and the place and time the story is at."""

    def __init__(self, cast: list):
        self.cast = cast
        self.last: list = []  # the last subject
        self.recent: list = []  # members, most recently named last
        self.place, self.time = "", ""
        self.bound: dict = {}  # "f"/"m" -> the character the pronoun last meant

    def at(self, places: list[str], time: str) -> None:
        """A new place (a new scene: the time is the one given with it) or a time alone."""
        if places:
            self.place = " ".join(carried(p) for p in places)
            self.time = time
        elif time:
            self.time = time

    def named(self, members: list) -> None:
        for m in members:
            if m in self.recent:
                self.recent.remove(m)
            self.recent.append(m)

    def resolve(self, pronoun: str, exclude=()) -> list:
        """he/she/it: the last subject, unless the same pronoun last meant another character ("Fennec
        chased her. She hopped": she is who 'her' was); they: the last group, else the last two named."""
        want = SUBJECT_PRONOUNS.get(pronoun, OBJECT_PRONOUNS.get(pronoun, 1))
        if want == 2:
            if len(self.last) > 1 and not set(self.last) & set(exclude):
                return list(self.last)
            return [m for m in self.recent if m not in exclude][-2:]
        gender = GENDER.get(pronoun)
        bound = self.bound.get(gender)
        if len(self.last) == 1 and self.last[0] not in exclude and (bound is None or bound == self.last[0]):
            who = list(self.last)
        elif bound is not None and bound not in exclude:
            who = [bound]
        else:
            who = [m for m in self.recent if m not in exclude][-1:]
        if gender and who:
            self.bound[gender] = who[0]
            self.bound.update({g: None for g, m in self.bound.items() if m == who[0] and g != gender})
        return who
