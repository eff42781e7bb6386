"""Impressions for the synthetic log (``seqrec synth --impressions S``): what was shown at each engaged event.

At every event of a user (time t, item i, the funnel stage reached) the generator logs ``1 + S`` impressions at
request time t: the engaged item itself (view = 1, cart / purchase as its funnel stage) and S other items shown
next to it. Half of those come from the category of the user's *previous* event (a "related items" slot) and
half from global popularity. A shown item is viewed with probability ``hit_prob`` when it belongs to the user's
*current* interest category, else ``miss_prob``; cart and purchase follow the same funnel as events. The current
interest is a sticky walk over categories (`trainer.data.synth`), so the recent history predicts which shown
items get engaged with while a user's static profile (home category, popularity) predicts it far less: a sequence
model can beat a static one. Drawn from a random stream of its own, so the events are the same with or without.
"""

from __future__ import annotations

from typing import Any

import numpy as np

HIT_PROB = 0.4
MISS_PROB = 0.03
LABELS = ("view", "cart", "purchase")


def item_categories(cat: Any) -> np.ndarray:
    """``(M,)`` category of every item of a `trainer.data.synth._Catalogue`."""
    item_cat = np.empty(len(cat.by_cat), np.int64)
    item_cat[cat.by_cat] = np.repeat(np.arange(len(cat.cat_size)), cat.cat_size)
    return item_cat


def _draw(rng: np.random.Generator, cat: Any, cats: np.ndarray | None, n: int) -> np.ndarray:
    """Items by popularity, inside category ``cats[k]`` for each draw (or over the whole catalogue)."""
    if cats is None:
        slot = np.searchsorted(cat.slot_cdf, rng.random(n) * cat.slot_cdf[-1], side="right")
        return cat.by_cat[np.minimum(slot, len(cat.by_cat) - 1)]
    target = cat.cat_lo[cats] + rng.random(n) * cat.cat_mass[cats]
    slot = np.clip(np.searchsorted(cat.slot_cdf, target, side="right"), cat.cat_start[cats],
                   cat.cat_start[cats] + cat.cat_size[cats] - 1)
    return cat.by_cat[slot]


def block_impressions(rng: np.random.Generator, cat: Any, shown: int, events: dict[str, np.ndarray],
                      cats: np.ndarray, first: np.ndarray, cart_prob: float, purchase_prob: float
                      ) -> dict[str, np.ndarray]:
    """Impressions of one block's events: ``imp_user, imp_item, imp_time`` and one 0/1 array per label."""
    t = len(cats)
    previous = np.where(first, cats, np.roll(cats, 1))  # a user's first event: its own category
    event = np.repeat(np.arange(t), shown)
    related = rng.random(t * shown) < 0.5
    items = _draw(rng, cat, None, t * shown)
    items[related] = _draw(rng, cat, previous[event[related]], int(related.sum()))
    p = np.where(item_categories(cat)[items] == cats[event], HIT_PROB, MISS_PROB)
    view = rng.random(t * shown) < p
    r = rng.random(t * shown)
    cart = view & (r < cart_prob)
    purchase = cart & (r < cart_prob * purchase_prob)
    stage = events["action"]
    order = np.argsort(np.r_[np.arange(t) * (shown + 1), event * (shown + 1) + 1 + np.tile(np.arange(shown), t)],
                       kind="stable")
    return {
        "imp_user": np.r_[events["user"], events["user"][event]][order],
        "imp_item": np.r_[events["item"], items][order],
        "imp_time": np.r_[events["timestamp"], events["timestamp"][event]][order],
        "imp_view": np.r_[np.ones(t, np.int8), view.astype(np.int8)][order],
        "imp_cart": np.r_[(stage >= 1).astype(np.int8), cart.astype(np.int8)][order],
        "imp_purchase": np.r_[(stage >= 2).astype(np.int8), purchase.astype(np.int8)][order],
    }
