"""Readable run names (``brave-otter``), as Prefect users know them."""

from __future__ import annotations

import random

ADJECTIVES = (
    "able amber bold brave bright calm clever cool crisp daring eager fancy fast fierce gentle glad "
    "golden grand happy jolly keen kind lively lucky merry mighty neat noble polite proud quick quiet "
    "rapid shiny silent smart snappy solid steady sunny swift tidy vivid warm wise witty zesty"
).split()
ANIMALS = (
    "ant badger bat bear beaver bison camel cat cheetah cobra crab crane deer dingo dolphin eagle eel "
    "falcon ferret finch fox gecko gibbon goose hare hawk heron ibis jackal koala lemur lion llama lynx "
    "marmot mole moose newt otter owl panda parrot puffin quail raven seal shark sloth swan tapir tiger "
    "toad walrus wolf wombat yak zebra"
).split()


# Run names need no cryptographic randomness; ``secrets`` costs a second per 30,000 runs.
_names = random.Random()


def random_run_name() -> str:
    return f"{_names.choice(ADJECTIVES)}-{_names.choice(ANIMALS)}"
