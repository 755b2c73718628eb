"""Retrieval in words the corpus never uses: own queries, each with a word no ToyWorld caption or
held-out query template contains ("a tomcat ambles leftward", "a hare skips along").

    from story_pipeline.eval.wording import WORDING_QUERIES, wording_recall
    r = wording_recall(index, attrs, k=5)      # attrs: {clip_id: ToyWorld attributes}
    r["recall"], r["achievable"], r["misses"]

A query scores when one of the top-k clips of ``search`` shows its kind doing its motion; the
figure is over the queries whose corpus holds such a clip ("what the corpus allows").
``DEVELOPMENT`` was written first and looked at while the query expansion was built; ``HELD_OUT``
(two sets of 48) was written after the method was fixed, each set measured once.
"""

# (query, kind, motion): development set
DEVELOPMENT = [
    ('a tomcat ambles leftward', 'cat', 'walk_left'),
    ('a feline saunters to the right', 'cat', 'walk_right'),
    ('a pussycat scampers across the lawn', 'cat', 'run'),
    ('a moggy springs up', 'cat', 'jump'),
    ('a tabby pirouettes', 'cat', 'spin'),
    ('a hound strides to the left', 'dog', 'walk_left'),
    ('a pooch bolts across the yard', 'dog', 'run'),
    ('a mutt keels over', 'dog', 'fall_over'),
    ('a pup bounds into the air', 'dog', 'jump'),
    ('a canine squats on its haunches', 'dog', 'sit_down'),
    ('a vixen trudges leftward', 'fox', 'walk_left'),
    ('a fennec races along', 'fox', 'run'),
    ('a vixen whirls', 'fox', 'spin'),
    ('a fox cub pivots to look behind it', 'fox', 'turn_around'),
    ('a hare ambles to the right', 'rabbit', 'walk_right'),
    ('a hare skips along', 'rabbit', 'hop'),
    ('a jackrabbit bolts', 'rabbit', 'run'),
    ('a cottontail collapses', 'rabbit', 'fall_over'),
    ('a grizzly plods to the left', 'bear', 'walk_left'),
    ('a grizzly salutes', 'bear', 'wave'),
    ('a bruin heads toward the viewer', 'bear', 'approach'),
    ('a grizzly plops down', 'bear', 'sit_down'),
    ('an android marches rightward', 'robot', 'walk_right'),
    ('an automaton rotates in place', 'robot', 'spin'),
    ('an android retreats into the background', 'robot', 'walk_away'),
    ('an automaton flops to the floor', 'robot', 'fall_over'),
    ('a sparrow skips about', 'bird', 'hop'),
    ('a finch draws near', 'bird', 'approach'),
    ('a robin greets us', 'bird', 'wave'),
    ('a sparrow vaults upward', 'bird', 'jump'),
    ('a mallard waddles to the left', 'duck', 'walk_left'),
    ('a drake departs into the background', 'duck', 'walk_away'),
    ('a mallard gyrates', 'duck', 'spin'),
    ('a drake turns about', 'duck', 'turn_around'),
    ('a toad springs upward', 'frog', 'jump'),
    ('a bullfrog hurries off', 'frog', 'run'),
    ('a toad squats', 'frog', 'sit_down'),
    ('a toad advances toward the lens', 'frog', 'approach'),
    ('an adelie shuffles rightward', 'penguin', 'walk_right'),
    ('an adelie stumbles and topples', 'penguin', 'fall_over'),
    ('an adelie beckons', 'penguin', 'wave'),
    ('an adelie recedes from view', 'penguin', 'walk_away'),
    ('a kitty trots toward the viewer', 'cat', 'approach'),
    ('a doggie wheels round to face backward', 'dog', 'turn_around'),
    ('a bunny hippity-hops', 'rabbit', 'hop'),
    ('a bear cub bounds upward', 'bear', 'jump'),
    ('a little automaton waves its arm in greeting', 'robot', 'wave'),
    ('a songbird settles onto a perch', 'bird', 'sit_down'),
]

# held-out sets, written after the method was fixed, each measured once: the first 48, then 48 more
HELD_OUT = [
    ('a housecat paces leftwards', 'cat', 'walk_left'),
    ('a tabby cat wanders eastward to the right', 'cat', 'walk_right'),
    ('a tomcat sprawls on the grass after tripping', 'cat', 'fall_over'),
    ('a feline rests on its rump', 'cat', 'sit_down'),
    ('a kitty leaps skyward', 'cat', 'jump'),
    ('a retriever lopes along the path', 'dog', 'run'),
    ('a terrier revolves on the spot', 'dog', 'spin'),
    ('a spaniel lifts a paw to greet us', 'dog', 'wave'),
    ('a beagle hikes off into the distance', 'dog', 'walk_away'),
    ('a pooch saunters leftward', 'dog', 'walk_left'),
    ('a reynard dashes off', 'fox', 'run'),
    ('a vixen rotates around', 'fox', 'spin'),
    ('a fox comes nearer to the camera', 'fox', 'approach'),
    ('a fox pup capers about', 'fox', 'hop'),
    ('a leveret hops along merrily', 'rabbit', 'hop'),
    ('a hare spins like a top', 'rabbit', 'spin'),
    ('a bunny rabbit plunks itself down', 'rabbit', 'sit_down'),
    ('a cottontail wanders off to the left', 'rabbit', 'walk_left'),
    ('a grizzly lumbers to the right', 'bear', 'walk_right'),
    ('a brown bear keels over', 'bear', 'fall_over'),
    ('a bruin spins on its heels', 'bear', 'spin'),
    ('a teddy bear gallops', 'bear', 'run'),
    ('a mechanical man strides to the left', 'robot', 'walk_left'),
    ('an android swivels to face the other way', 'robot', 'turn_around'),
    ('an automaton bounds into the sky', 'robot', 'jump'),
    ('a droid hops on the spot', 'robot', 'hop'),
    ('a robin flutters up and down', 'bird', 'hop'),
    ('a sparrow pirouettes', 'bird', 'spin'),
    ('a finch marches rightward', 'bird', 'walk_right'),
    ('a bluebird tumbles over', 'bird', 'fall_over'),
    ('a mallard sprints away', 'duck', 'run'),
    ('a drake nods hello with its wing', 'duck', 'wave'),
    ('a mallard plods toward the lens', 'duck', 'approach'),
    ('a duckling ambles to the right', 'duck', 'walk_right'),
    ('a bullfrog squats down', 'frog', 'sit_down'),
    ('a tree frog rotates in place', 'frog', 'spin'),
    ('a toad treads off to the left', 'frog', 'walk_left'),
    ('a bullfrog bounds upward', 'frog', 'jump'),
    ('an emperor penguin shuffles leftward', 'penguin', 'walk_left'),
    ('an adelie scurries along', 'penguin', 'run'),
    ('a penguin chick vaults up high', 'penguin', 'jump'),
    ('an emperor penguin greets the viewer with a flipper', 'penguin', 'wave'),
    ('a puppy trudges toward us', 'dog', 'approach'),
    ('a feline turns tail and departs', 'cat', 'walk_away'),
    ('a hare about-faces', 'rabbit', 'turn_around'),
    ('a grizzly settles onto its haunches', 'bear', 'sit_down'),
    ('a robot plummets to the ground', 'robot', 'fall_over'),
    ('a songbird wheels round to look back', 'bird', 'turn_around'),
    # the second held-out set
    ('a kitty creeps leftwards', 'cat', 'walk_left'),
    ('a tomcat prowls to the right', 'cat', 'walk_right'),
    ('a moggie gallops off', 'cat', 'run'),
    ('a housecat twists around and around', 'cat', 'spin'),
    ('a kitten plunges over onto its side', 'cat', 'fall_over'),
    ('a feline hops up and down', 'cat', 'hop'),
    ('a terrier trots to the left', 'dog', 'walk_left'),
    ('a puppy tiptoes toward the camera', 'dog', 'approach'),
    ('a hound leaps high', 'dog', 'jump'),
    ('a collie whirls around', 'dog', 'spin'),
    ('a beagle sits on its bottom', 'dog', 'sit_down'),
    ('a vixen lopes to the right', 'fox', 'walk_right'),
    ('a fox kit somersaults over and falls', 'fox', 'fall_over'),
    ('a reynard waves a paw', 'fox', 'wave'),
    ('a fox saunters off into the distance', 'fox', 'walk_away'),
    ('a bunny rabbit darts past', 'rabbit', 'run'),
    ('a hare lands on its rump', 'rabbit', 'sit_down'),
    ('a jackrabbit bounds skyward', 'rabbit', 'jump'),
    ('a cottontail revolves in a circle', 'rabbit', 'spin'),
    ('a grizzly hikes leftward', 'bear', 'walk_left'),
    ('a panda bear spins around', 'bear', 'spin'),
    ('a bruin hops about', 'bear', 'hop'),
    ('a brown bear ambles off into the distance', 'bear', 'walk_away'),
    ('a droid topples over', 'robot', 'fall_over'),
    ('an android sits down', 'robot', 'sit_down'),
    ('a mechanical man wanders toward the camera', 'robot', 'approach'),
    ('a cyborg waves at us', 'robot', 'wave'),
    ('a robot scurries along', 'robot', 'run'),
    ('a sparrow flits to the left', 'bird', 'walk_left'),
    ('a robin pivots on its feet', 'bird', 'turn_around'),
    ('a finch darts across', 'bird', 'run'),
    ('a songbird leaps into the sky', 'bird', 'jump'),
    ('a mallard tumbles over', 'duck', 'fall_over'),
    ('a drake hops along', 'duck', 'hop'),
    ('a drake moves off into the distance', 'duck', 'walk_away'),
    ('a mallard settles down', 'duck', 'sit_down'),
    ('a toad crawls to the right', 'frog', 'walk_right'),
    ('a bullfrog waves hello', 'frog', 'wave'),
    ('a tree frog hurries along', 'frog', 'run'),
    ('a toad flips around to face backward', 'frog', 'turn_around'),
    ('an adelie waddles toward the camera', 'penguin', 'approach'),
    ('a penguin chick twirls around', 'penguin', 'spin'),
    ('an emperor penguin sits on the ice', 'penguin', 'sit_down'),
    ('an adelie bounces along', 'penguin', 'hop'),
    ('a kitten about-turns', 'cat', 'turn_around'),
    ('a pooch walks off away from us', 'dog', 'walk_away'),
    ('a hare strolls leftward', 'rabbit', 'walk_left'),
    ('a grizzly lifts its paw to say hi', 'bear', 'wave'),
]

WORDING_QUERIES = DEVELOPMENT + HELD_OUT


def wording_recall(index, attrs: dict[str, dict], queries=None, k: int = 5, **search_kwargs) -> dict:
    """Share of achievable queries with a clip of the right kind and motion in the top ``k``."""
    from story_pipeline.corpus.search import search

    have = {(a["species"], a["motion"]) for a in attrs.values()}
    queries = [q for q in (WORDING_QUERIES if queries is None else queries) if (q[1], q[2]) in have]
    misses = []
    for query, kind, motion in queries:
        hits = search(index, query, k=k, **search_kwargs)
        got = [(attrs[h.clip_id]["species"], attrs[h.clip_id]["motion"]) for h in hits]
        if (kind, motion) not in got:
            misses.append((query, kind, motion, got[:3]))
    return {"recall": 1.0 - len(misses) / max(1, len(queries)), "achievable": len(queries), "misses": misses}
