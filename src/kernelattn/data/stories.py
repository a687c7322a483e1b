"""A built-in, offline story corpus whose character names must be recalled from context.

Each story invents rare names from random syllables, introduces them once, and refers
back to them several times, so predicting a name's later occurrences is an in-context
recall problem (the effect BabiStories was designed to test); the rest is simple,
repetitive prose a small model learns quickly. Deterministic from a seed.
"""

from __future__ import annotations

import random

__all__ = ["generate_stories", "make_name"]

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gl", "k", "kl", "l", "m", "n", "p", "pr", "r", "s", "sk", "t",
           "tr", "v", "z", "zh", "th", "qu"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ee", "y"]
_CODAS = ["", "", "n", "r", "l", "x", "s", "th", "m"]
_ANIMALS = ["cat", "dog", "fox", "owl", "rabbit", "bear", "frog", "mouse", "duck", "horse"]
_PLACES = ["the forest", "the river", "the old mill", "the market", "the hill", "the garden", "the beach",
           "the library", "the bakery", "the harbour"]
_THINGS = ["a red ball", "a small boat", "a shiny key", "a blue kite", "a wooden box", "a warm scarf",
           "a golden coin", "a paper map", "a tiny bell", "a green hat"]
_FEELINGS = ["happy", "curious", "brave", "tired", "surprised", "proud", "worried", "excited"]


def make_name(rng: random.Random) -> str:
    """An invented name of two or three syllables, capitalised."""
    n = rng.choice([2, 2, 3])
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n)).capitalize()


def _story(rng: random.Random) -> str:
    hero, friend = make_name(rng), make_name(rng)
    pet_name = make_name(rng)
    animal, place, thing = rng.choice(_ANIMALS), rng.choice(_PLACES), rng.choice(_THINGS)
    kind = rng.choice(["girl", "boy"])
    pron, poss = ("she", "her") if kind == "girl" else ("he", "his")
    feel, feel2 = rng.sample(_FEELINGS, 2)
    s = [f"Once upon a time, there was a little {kind} named {hero}.",
         f"{hero} had a {animal} called {pet_name}.",
         f"Every morning, {hero} and {pet_name} walked to {place}.",
         f"One day, {hero} found {thing} near {place}.",
         f"{hero} felt {feel}. \"Look, {pet_name}!\" {pron} said.",
         f"Then {hero} met a friend named {friend}.",
         f"{friend} asked, \"{hero}, can I see {thing.replace('a ', 'the ', 1)}?\"",
         f"{hero} showed it to {friend}, and {pet_name} wagged happily.",
         f"{friend} and {hero} played together until the sun went down.",
         f"In the evening, {hero} went home with {poss} {animal}, {pet_name}, feeling {feel2}.",
         f"{friend} waved goodbye to {hero} and {pet_name}."]
    if rng.random() < 0.5:  # vary the story shape a little
        s.insert(6, f"\"Hello, {friend}!\" said {hero}. \"This is {pet_name}.\"")
    return " ".join(s)


def generate_stories(n: int = 2000, seed: int = 0) -> str:
    """``n`` stories separated by blank lines (about 700 bytes each)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)
    return "\n\n".join(_story(rng) for _ in range(n))
