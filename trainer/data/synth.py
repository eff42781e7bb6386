"""Generate a synthetic interaction log with learnable sequential structure (``seqrec synth``).

The output is a *raw log folder* (events, item and user features, ``synth.json``), not a dataset folder:
turn it into one with ``seqrec prepare --format synthetic DIR DATASET``.

Example:
  seqrec synth --output data/synthetic-raw --users 2000
  seqrec prepare --format synthetic data/synthetic-raw data/synthetic

The generative model, all vectorised over every event of a block of users (no per-event Python):

* items fall into C categories; item popularity is Zipf (``--zipf``) over a random ranking of all items, and
  category sizes are Zipf too, so a few categories and a few items inside each dominate;
* each user's interest (a category) follows a sticky Markov chain: stay with prob ``--stay-prob``, else move
  to a neighbouring category (c +- 1 on a ring) with prob ``--neighbour-prob``, else jump to the user's home
  category (set by country) or a category drawn by popularity;
* inside a category the items form a chain (a random order, like "next episode"): with prob
  ``--successor-prob`` the next item is the successor of the previous one (when the category did not change),
  otherwise it is drawn from the category's Zipf popularity. This is the signal a sequence model can learn
  and a popularity model cannot;
* every interaction is a view; it reaches the cart with prob ``--cart-prob`` and a purchase from the cart with
  prob ``--purchase-prob``; the ``action`` column holds the deepest stage reached;
* lengths are lognormal (mean about ``--mean-length``) clipped to [``--min-length``, ``--max-length``]:
  most users are short, a long tail reaches the maximum; timestamps increase per user with lognormal gaps.

Determinism: users are generated in blocks of `BLOCK_USERS`, each with its own random stream seeded by
``(seed, block index)``, and the item catalogue by ``seed`` alone. The same seed gives the same events whatever
``--chunk-users`` is (it only sets how many users are written per Parquet row group), and byte-identical files
for the same seed and chunk size. Memory is bounded by one chunk.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from trainer.data.readers.synthetic import (
    ACTIONS,
    EVENTS_FILE,
    EVENTS_SCHEMA,
    IMPRESSIONS_FILE,
    IMPRESSIONS_SCHEMA,
    ITEMS_FILE,
    ITEMS_SCHEMA,
    META_FILE,
    USERS_FILE,
    USERS_SCHEMA,
)
from trainer.data.schema import atomic_output_dir
from trainer.data.synth_impressions import LABELS as IMPRESSION_LABELS
from trainer.data.synth_impressions import block_impressions
from trainer.errors import ConfigError, DataError

log = logging.getLogger(__name__)

BLOCK_USERS = 4096  # users per random stream: the unit of determinism (never change: it changes every log)
DEFAULT_CHUNK_USERS = 98_304  # 24 blocks, about 100k users per write
STATS_MAX_EVENTS = 2_000_000  # transition stats read at most this many events (enough for stable figures)
COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "ES", "IT", "CA", "MX", "PL", "NL", "SE", "KR", "AU")
START_TIME = 1_577_836_800  # 2020-01-01 UTC: users start uniformly within the following year
START_SPAN = 365 * 86_400
GAP_MEDIAN_S = 300.0  # median gap between a user's events; lognormal, so some gaps last days
GAP_SIGMA = 2.0


def _option(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(kw_only=True)
class SynthConfig:
    """Every parameter of the generator; each field is also a ``seqrec synth --<field-name>`` option."""

    users: int = _option(20_000, "number of users")
    items: int = _option(5_000, "number of items")
    categories: int = _option(50, "number of item categories (interest states)")
    seed: int = _option(0, "random seed; the same seed gives byte-identical files")
    mean_length: float = _option(25.0, "mean events per user before clipping (lognormal)")
    length_sigma: float = _option(1.2, "lognormal sigma of the length; larger means a longer tail")
    min_length: int = _option(3, "shortest sequence (>= 3 so leave-one-out keeps a training item)")
    max_length: int = _option(1_000, "longest sequence")
    zipf: float = _option(0.9, "Zipf exponent of item popularity and category sizes")
    stay_prob: float = _option(0.8, "probability that a user's interest stays in the same category")
    neighbour_prob: float = _option(
        0.7, "when the interest moves: probability it moves to a neighbouring category"
    )
    home_prob: float = _option(
        0.3, "when the interest jumps: probability it jumps to the user's home category"
    )
    successor_prob: float = _option(
        0.6, "probability that the next item is the previous item's chain successor"
    )
    cart_prob: float = _option(0.1, "probability that a view reaches the cart")
    purchase_prob: float = _option(0.3, "probability that a cart ends in a purchase")
    impressions: int = _option(
        0, "other items shown at each event besides the engaged one, written to impressions.parquet with "
        "view/cart/purchase labels that depend on the recent history (0 = none; trainer.data.synth_impressions)"
    )

    def validate(self) -> None:
        """Raise `ConfigError` naming the option to change."""
        checks = [
            (self.users >= 1, "--users must be >= 1"),
            (self.categories >= 1, "--categories must be >= 1"),
            (self.items >= self.categories, "--items must be >= --categories (every category needs an item)"),
            (self.seed >= 0, "--seed must be >= 0"),
            (self.min_length >= 3, "--min-length must be >= 3 (leave-one-out needs train, valid and test)"),
            (self.max_length >= self.min_length, "--max-length must be >= --min-length"),
            (self.mean_length > 0, "--mean-length must be > 0"),
            (self.length_sigma >= 0, "--length-sigma must be >= 0"),
            (self.zipf >= 0, "--zipf must be >= 0"),
            (self.impressions >= 0, "--impressions must be >= 0"),
        ]
        for name in (
            "stay_prob",
            "neighbour_prob",
            "home_prob",
            "successor_prob",
            "cart_prob",
            "purchase_prob",
        ):
            value = getattr(self, name)
            checks.append((0.0 <= value <= 1.0, f"--{name.replace('_', '-')} must be in [0, 1], got {value}"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclasses.dataclass
class _Catalogue:
    """The item world shared by all users; items are stored by category, in chain order within a category."""

    item_ids: pa.Array  # raw id string of item k
    by_cat: np.ndarray  # (M,) item index at each slot; category c owns slots cat_start[c] .. + cat_size[c]
    cat_start: np.ndarray  # (C,)
    cat_size: np.ndarray  # (C,)
    slot_cdf: np.ndarray  # (M,) inclusive cumulative popularity over slots
    cat_lo: np.ndarray  # (C,) cumulative popularity before the category's first slot
    cat_mass: np.ndarray  # (C,) total popularity of the category
    cat_cdf: np.ndarray  # (C,) cumulative category popularity, for jumps
    country_p: np.ndarray  # (len(COUNTRIES),) share of users per country
    country_home: np.ndarray  # (len(COUNTRIES),) home category of each country
    items: pa.Table  # items.parquet content


def _zipf_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Zipf weights over a random ranking, so ids carry no popularity information."""
    return (rng.permutation(n) + 1.0) ** -exponent


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    """``prefix + str(n)`` for every n, built in Arrow (no Python loop)."""
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def build_catalogue(config: SynthConfig) -> _Catalogue:
    """Categories, item popularity, chain order, prices and country homes; depends only on the seed."""
    rng = np.random.default_rng([config.seed, 0])
    n_items, n_cats = config.items, config.categories
    size_p = _zipf_weights(rng, n_cats, config.zipf)
    sizes = 1 + rng.multinomial(n_items - n_cats, size_p / size_p.sum())  # every category gets an item
    item_cat = np.repeat(np.arange(n_cats), sizes)[rng.permutation(n_items)]
    by_cat = np.lexsort((rng.random(n_items), item_cat))  # random chain order inside each category
    weights = _zipf_weights(rng, n_items, config.zipf)
    slot_cdf = np.cumsum(weights[by_cat])
    cat_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    cat_lo = slot_cdf[cat_start] - weights[by_cat[cat_start]]
    cat_mass = slot_cdf[cat_start + sizes - 1] - cat_lo
    base_price = rng.lognormal(3.0, 1.0, n_cats)  # categories differ in price level
    price = np.round(base_price[item_cat] * rng.lognormal(0.0, 0.3, n_items), 2)
    country_p = _zipf_weights(rng, len(COUNTRIES), 1.0)
    item_ids = _ids("i", np.arange(n_items))
    items = pa.table(
        {
            "item": item_ids,
            "category": pc.take(_ids("c", np.arange(n_cats)), pa.array(item_cat)),
            "price": price,
        },
        schema=ITEMS_SCHEMA,
    )
    return _Catalogue(
        item_ids=item_ids,
        by_cat=by_cat,
        cat_start=cat_start,
        cat_size=sizes,
        slot_cdf=slot_cdf,
        cat_lo=cat_lo,
        cat_mass=cat_mass,
        cat_cdf=np.cumsum(cat_mass),
        country_p=country_p / country_p.sum(),
        country_home=rng.integers(0, n_cats, len(COUNTRIES)),
        items=items,
    )


def _last_true(mask: np.ndarray) -> np.ndarray:
    """For every position, the index of the latest True at or before it (mask[user start] is always True)."""
    return np.maximum.accumulate(np.where(mask, np.arange(mask.size), 0))


def _lengths(rng: np.random.Generator, n: int, config: SynthConfig) -> np.ndarray:
    mu = np.log(config.mean_length) - config.length_sigma**2 / 2  # so the unclipped mean is mean_length
    raw = np.rint(rng.lognormal(mu, config.length_sigma, n))
    return np.clip(raw, config.min_length, config.max_length).astype(np.int64)


def _categories(
    rng: np.random.Generator, cat: _Catalogue, config: SynthConfig, first: np.ndarray, home: np.ndarray
) -> np.ndarray:
    """The interest category at every event: a sticky ring walk with occasional jumps (reset points)."""
    t = first.size
    move = rng.random(t) >= config.stay_prob
    step_to_neighbour = move & ~first & (rng.random(t) < config.neighbour_prob)
    reset = first | (move & ~step_to_neighbour)
    steps = np.where(rng.random(t) < 0.5, -1, 1) * step_to_neighbour
    n_reset = int(reset.sum())
    by_popularity = np.searchsorted(cat.cat_cdf, rng.random(n_reset) * cat.cat_cdf[-1], side="right")
    by_popularity = np.minimum(by_popularity, config.categories - 1)
    reset_value = np.zeros(t, np.int64)
    reset_value[reset] = np.where(rng.random(n_reset) < config.home_prob, home[reset], by_popularity)
    anchor = _last_true(reset)
    walk = np.cumsum(steps)
    return (reset_value[anchor] + walk - walk[anchor]) % config.categories


def _items(
    rng: np.random.Generator, cat: _Catalogue, config: SynthConfig, first: np.ndarray, cats: np.ndarray
) -> np.ndarray:
    """The item at every event: chain successors of the last fresh draw, fresh draws by in-category Zipf."""
    t = first.size
    same_cat = np.zeros(t, bool)
    same_cat[1:] = cats[1:] == cats[:-1]
    fresh = ~(same_cat & ~first & (rng.random(t) < config.successor_prob))
    fc = cats[fresh]
    target = cat.cat_lo[fc] + rng.random(fc.size) * cat.cat_mass[fc]
    slot = np.searchsorted(cat.slot_cdf, target, side="right")
    slot = np.clip(
        slot, cat.cat_start[fc], cat.cat_start[fc] + cat.cat_size[fc] - 1
    )  # float rounding at edges
    chain_pos = np.zeros(t, np.int64)
    chain_pos[fresh] = slot - cat.cat_start[fc]
    anchor = _last_true(fresh)
    chain_pos = (chain_pos[anchor] + np.arange(t) - anchor) % cat.cat_size[cats]
    return cat.by_cat[cat.cat_start[cats] + chain_pos]


def _timestamps(
    rng: np.random.Generator, lengths: np.ndarray, offsets: np.ndarray, first: np.ndarray
) -> np.ndarray:
    """Strictly increasing seconds per user: a random start plus lognormal gaps of at least one second."""
    start = START_TIME + rng.integers(0, START_SPAN, lengths.size)
    gaps = np.maximum(1, np.rint(rng.lognormal(np.log(GAP_MEDIAN_S), GAP_SIGMA, first.size))).astype(np.int64)
    gaps[first] = 0
    elapsed = np.cumsum(gaps)
    return np.repeat(start, lengths) + elapsed - np.repeat(elapsed[offsets], lengths)


def _block(cat: _Catalogue, config: SynthConfig, block: int) -> dict[str, np.ndarray]:
    """All events and user features of one block of users, from the block's own random stream."""
    rng = np.random.default_rng([config.seed, 1, block])
    first_user = block * BLOCK_USERS
    n = min(BLOCK_USERS, config.users - first_user)
    lengths = _lengths(rng, n, config)
    country = rng.choice(len(COUNTRIES), size=n, p=cat.country_p)
    age = np.clip(np.rint(rng.normal(38.0, 13.0, n)), 16, 85)
    offsets = np.cumsum(lengths) - lengths
    first = np.zeros(int(lengths.sum()), bool)
    first[offsets] = True
    cats = _categories(rng, cat, config, first, np.repeat(cat.country_home[country], lengths))
    items = _items(rng, cat, config, first, cats)
    timestamps = _timestamps(rng, lengths, offsets, first)
    r = rng.random(first.size)  # one draw for the funnel: purchase implies cart implies view
    action = (r < config.cart_prob).astype(np.int8) + (r < config.cart_prob * config.purchase_prob)
    user = np.repeat(np.arange(first_user, first_user + n), lengths)
    out = {
        "user": user,
        "item": items,
        "timestamp": timestamps,
        "action": action,
        "lengths": lengths,
        "age": age,
        "country": country,
    }
    if config.impressions:  # a random stream of its own: the events do not change
        out.update(block_impressions(np.random.default_rng([config.seed, 2, block]), cat, config.impressions, out,
                                     cats, first, config.cart_prob, config.purchase_prob))
    return out


def _chunk_tables(cat: _Catalogue, config: SynthConfig, blocks: range) -> tuple[pa.Table, pa.Table, dict]:
    """Events and users tables of a run of blocks (concatenated in block order), plus the raw arrays."""
    parts = [_block(cat, config, b) for b in blocks]
    arrays = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    first_user = blocks.start * BLOCK_USERS
    user_ids = _ids("u", np.arange(first_user, first_user + arrays["lengths"].size))
    events = pa.table(
        {
            "user": pc.take(user_ids, pa.array(arrays["user"] - first_user)),
            "item": pc.take(cat.item_ids, pa.array(arrays["item"])),
            "timestamp": arrays["timestamp"],
            "action": pc.take(pa.array(ACTIONS), pa.array(arrays["action"])),
        },
        schema=EVENTS_SCHEMA,
    )
    users = pa.table(
        {
            "user": user_ids,
            "age": arrays["age"],
            "country": pc.take(pa.array(COUNTRIES), pa.array(arrays["country"])),
        },
        schema=USERS_SCHEMA,
    )
    return events, users, arrays


def _impressions_table(cat: _Catalogue, arrays: dict[str, np.ndarray], first_user: int) -> pa.Table:
    """The chunk's impressions in raw ids (`IMPRESSIONS_SCHEMA`)."""
    user_ids = _ids("u", np.arange(first_user, first_user + arrays["lengths"].size))
    columns = {"user": pc.take(user_ids, pa.array(arrays["imp_user"] - first_user)),
               "item": pc.take(cat.item_ids, pa.array(arrays["imp_item"])), "timestamp": arrays["imp_time"]}
    columns.update({name: arrays[f"imp_{name}"] for name in IMPRESSION_LABELS})
    return pa.table(columns, schema=IMPRESSIONS_SCHEMA)


def generate(
    config: SynthConfig,
    output: str | Path,
    *,
    overwrite: bool = False,
    chunk_users: int = DEFAULT_CHUNK_USERS,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the raw log folder ``output`` atomically and return the content of its ``synth.json``.

    ``chunk_users`` (rounded up to a multiple of `BLOCK_USERS`) bounds memory and sets the row-group size; it
    does not change the events.
    """
    config.validate()
    if chunk_users < 1:
        raise ConfigError("--chunk-users must be >= 1")
    blocks_per_chunk = -(-chunk_users // BLOCK_USERS)
    n_blocks = -(-config.users // BLOCK_USERS)
    cat = build_catalogue(config)
    action_counts = np.zeros(len(ACTIONS), np.int64)
    length_hist = np.zeros(config.max_length + 1, np.int64)
    imp_out = None
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        pq.write_table(cat.items, tmp / ITEMS_FILE)
        with (
            pq.ParquetWriter(tmp / EVENTS_FILE, EVENTS_SCHEMA) as events_out,
            pq.ParquetWriter(tmp / USERS_FILE, USERS_SCHEMA) as users_out,
            tqdm(total=config.users, unit="user", disable=not progress, desc="synth") as bar,
        ):
            for start in range(0, n_blocks, blocks_per_chunk):
                events, users, arrays = _chunk_tables(
                    cat, config, range(start, min(start + blocks_per_chunk, n_blocks))
                )
                events_out.write_table(events, row_group_size=events.num_rows)
                if config.impressions:
                    imp = _impressions_table(cat, arrays, start * BLOCK_USERS)
                    imp_out = imp_out or pq.ParquetWriter(tmp / IMPRESSIONS_FILE, IMPRESSIONS_SCHEMA)
                    imp_out.write_table(imp, row_group_size=imp.num_rows)
                users_out.write_table(users, row_group_size=users.num_rows)
                action_counts += np.bincount(arrays["action"], minlength=len(ACTIONS))
                length_hist += np.bincount(arrays["lengths"], minlength=config.max_length + 1)
                bar.update(users.num_rows)
        if imp_out is not None:
            imp_out.close()
        meta = {
            "generator": "seqrec synth",
            "seed": config.seed,
            "params": dataclasses.asdict(config),
            "block_users": BLOCK_USERS,
            "chunk_users": blocks_per_chunk * BLOCK_USERS,
            "counts": _counts(config, action_counts, length_hist),
            "transition_stats": transition_stats(tmp / EVENTS_FILE),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def _counts(config: SynthConfig, action_counts: np.ndarray, length_hist: np.ndarray) -> dict[str, Any]:
    """Counts for ``synth.json``; lengths summarised from their histogram (bounded memory)."""
    cumulative = np.cumsum(length_hist) / config.users
    lengths = np.flatnonzero(length_hist)
    return {
        "users": config.users,
        "items": config.items,
        "categories": config.categories,
        "events": int(action_counts.sum()),
        "actions": {name: int(n) for name, n in zip(ACTIONS, action_counts)},
        "length": {
            "min": int(lengths[0]),
            "max": int(lengths[-1]),
            "mean": float(np.dot(np.arange(length_hist.size), length_hist) / config.users),
            "median": int(np.searchsorted(cumulative, 0.5)),
            "p99": int(np.searchsorted(cumulative, 0.99)),
            "users_at_max_length": int(length_hist[config.max_length]),
        },
    }


# ---------------------------------------------------------------------------------------------------------------
# Transition statistics: how far next-item transitions are from what popularity or user taste alone explain.


def transition_stats(
    events: pa.Table | str | Path, *, max_events: int | None = STATS_MAX_EVENTS, seed: int = 0
) -> dict[str, float]:
    """Next-item statistics of consecutive pairs (a -> b) within each user.

    ``events`` is a table with ``user``, ``item``, ``timestamp`` columns, an events Parquet file, or a folder
    holding ``events.parquet``; at most ``max_events`` rows are read (None = all). Returns:

    * ``top_successor_hit_rate``: fraction of pairs where b is the most common successor of a (in-sample);
    * ``shuffled_top_successor_hit_rate``: the same after shuffling each user's items, which keeps user taste
      and popularity but destroys order (the in-sample bias of the statistic is the same in both);
    * ``popularity_hit_rate``: fraction of pairs where b is the single most common next item;
    * ``lift_over_shuffled``: the ratio of the first two;
    * ``entropy_next_bits`` H(next), ``conditional_entropy_bits`` H(next | current) and its shuffled value.
    """
    table = _stats_table(events, max_events)
    user = pc.dictionary_encode(table.column("user").combine_chunks()).indices.to_numpy()
    item = pc.dictionary_encode(table.column("item").combine_chunks()).indices.to_numpy().astype(np.int64)
    order = np.lexsort((table.column("timestamp").to_numpy(), user))  # stable: input order breaks ties
    user, item = user[order], item[order]
    n_items = int(item.max()) + 1 if item.size else 1
    rng = np.random.default_rng(seed)
    shuffled = item[
        np.lexsort((rng.random(item.size), user))
    ]  # user is sorted, so this permutes within users
    same_user = user[1:] == user[:-1]
    real = _pair_stats(item[:-1][same_user], item[1:][same_user], n_items)
    base = _pair_stats(shuffled[:-1][same_user], shuffled[1:][same_user], n_items)
    return {
        "users": int(np.unique(user).size),
        "pairs": int(same_user.sum()),
        "top_successor_hit_rate": real["hit"],
        "shuffled_top_successor_hit_rate": base["hit"],
        "lift_over_shuffled": real["hit"] / base["hit"] if base["hit"] > 0 else float("inf"),
        "popularity_hit_rate": real["popular"],
        "entropy_next_bits": real["h_next"],
        "conditional_entropy_bits": real["h_cond"],
        "shuffled_conditional_entropy_bits": base["h_cond"],
    }


def _stats_table(events: pa.Table | str | Path, max_events: int | None) -> pa.Table:
    """The first ``max_events`` rows of the user, item and timestamp columns."""
    columns = ["user", "item", "timestamp"]
    if isinstance(events, pa.Table):
        table = events.select(columns)
        return table if max_events is None else table.slice(0, max_events)
    path = Path(events)
    path = path / EVENTS_FILE if path.is_dir() else path
    batches, rows = [], 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 18, columns=columns):
        batches.append(batch)
        rows += batch.num_rows
        if max_events is not None and rows >= max_events:
            break
    if not batches:
        raise DataError("no events", file=path)
    table = pa.Table.from_batches(batches)
    return table if max_events is None else table.slice(0, max_events)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _pair_stats(a: np.ndarray, b: np.ndarray, n_items: int) -> dict[str, float]:
    if a.size == 0:
        return {"hit": 0.0, "popular": 0.0, "h_next": 0.0, "h_cond": 0.0}
    keys, counts = np.unique(a * n_items + b, return_counts=True)  # sorted by a, then b
    first_of_a = np.flatnonzero(np.r_[True, np.diff(keys // n_items) > 0])
    next_counts = np.bincount(b, minlength=n_items)
    return {
        "hit": float(np.maximum.reduceat(counts, first_of_a).sum() / a.size),
        "popular": float(next_counts.max() / a.size),
        "h_next": _entropy(next_counts),
        "h_cond": _entropy(counts) - _entropy(np.bincount(a, minlength=n_items)),  # H(a, b) - H(a)
    }


def format_stats(stats: dict[str, float]) -> str:
    """A short human-readable summary of `transition_stats`."""
    return "\n".join(
        [
            f"transition stats over {stats['pairs']:,} consecutive pairs of {stats['users']:,} users:",
            f"  next == most common successor of current: {stats['top_successor_hit_rate']:.3f} "
            f"(within-user shuffle: {stats['shuffled_top_successor_hit_rate']:.3f}, "
            f"lift x{stats['lift_over_shuffled']:.1f})",
            f"  next == most popular item:               {stats['popularity_hit_rate']:.3f}",
            f"  H(next) = {stats['entropy_next_bits']:.2f} bits, H(next | current) = "
            f"{stats['conditional_entropy_bits']:.2f} bits (shuffled: {stats['shuffled_conditional_entropy_bits']:.2f})",
        ]
    )


# ---------------------------------------------------------------------------------------------------------------
# Command line.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``seqrec synth`` options: one per `SynthConfig` field, plus output, chunking and overwrite."""
    parser.add_argument("--output", "-o", required=True, type=Path, help="raw log folder to write")
    for field in dataclasses.fields(SynthConfig):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=type(field.default),
            default=field.default,
            help=f"{field.metadata['help']} (default: %(default)s)",
        )
    parser.add_argument(
        "--chunk-users",
        type=int,
        default=DEFAULT_CHUNK_USERS,
        help="users generated and written per chunk; bounds memory, does not change the events (default: %(default)s)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Generate the log, then print its counts and transition statistics."""
    config = SynthConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SynthConfig)})
    started = time.perf_counter()
    meta = generate(
        config,
        args.output,
        overwrite=args.overwrite,
        chunk_users=args.chunk_users,
        progress=not args.no_progress,
    )
    counts = meta["counts"]
    print(
        f"wrote {args.output}: {counts['users']:,} users, {counts['items']:,} items, {counts['events']:,} events "
        f"in {time.perf_counter() - started:.1f} s"
    )
    print(
        f"  lengths: min {counts['length']['min']}, median {counts['length']['median']}, mean "
        f"{counts['length']['mean']:.1f}, p99 {counts['length']['p99']}, max {counts['length']['max']}; actions: "
        + ", ".join(f"{k} {v:,}" for k, v in counts["actions"].items())
    )
    print(format_stats(meta["transition_stats"]))
    print(f"make a dataset from it with: seqrec prepare --format synthetic {args.output} DATASET_FOLDER")
    return 0
