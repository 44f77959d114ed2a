"""A regime's world as two keys: the data its target was pretrained on (``DATA``: members duplicated or not) and
the target's width (``TARGET``: its profile's own or H4's wider UNet); and ``LABELS``, the one table of the labels
that shards and published tables carry in their ``world`` column for them."""

from __future__ import annotations

import pandas as pd

DATA, TARGET = "data", "target"  # the key columns of a world
DUPLICATED, IID = "duplicated", "iid"  # DATA: members duplicated (a non-empty ``member_duplicates``) or not
GRID, WIDE = "grid", "wide"  # TARGET: the profile's own widths, or ``WIDE_CHANNELS``
WIDE_CHANNELS = (32, 64)  # H4's wider target (pre-registered)
LABEL = "world"  # the column that holds a world's label in shards and published tables
LABELS = {(DUPLICATED, GRID): "duplicated", (IID, GRID): "i.i.d.", (DUPLICATED, WIDE): "duplicated, UNet 32-64"}
_KEYS = {text: keys for keys, text in LABELS.items()}


def world_of(params: dict) -> tuple[str, str]:
    """A run's world from its parameters: (``DUPLICATED`` or ``IID``, ``WIDE`` on H4's wider target, else
    ``GRID``: any other width is its profile's grid target, e.g. the smoke stand-in's)."""
    data = DUPLICATED if len(params["member_duplicates"]) else IID
    return data, WIDE if tuple(params["unet_channels"]) == WIDE_CHANNELS else GRID


def label(data: str, target: str = GRID) -> str:
    """The label of the world (``data``, ``target``), as stored and printed; raises ValueError on a world not in
    ``LABELS`` (add its label there first: stored labels are never built from parts)."""
    try:
        return LABELS[(data, target)]
    except KeyError:
        raise ValueError(f"no label for the world {(data, target)}; known: {list(LABELS)}") from None


def keys(text: str) -> tuple[str, str]:
    """(data, target) of a stored world label; raises ValueError on a label not in ``LABELS``."""
    try:
        return _KEYS[text]
    except KeyError:
        raise ValueError(f"unknown world label {text!r}; known: {list(_KEYS)}") from None


def with_keys(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its ``LABEL`` column replaced, in place of it, by the ``DATA`` and ``TARGET`` keys."""
    if LABEL not in table:
        return table
    parts = pd.DataFrame([keys(text) for text in table[LABEL]], columns=[DATA, TARGET], index=table.index)
    at = table.columns.get_loc(LABEL)
    return pd.concat([table.iloc[:, :at], parts, table.iloc[:, at + 1:]], axis=1)


def with_labels(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its ``DATA`` and ``TARGET`` keys replaced, in place of ``DATA``, by the ``LABEL`` column; a
    table that has ``DATA`` but no ``TARGET`` (a contrast between targets) carries no world label."""
    if DATA not in table:
        return table
    if TARGET not in table:
        return table.drop(columns=DATA)
    at = [c for c in table.columns if c != TARGET].index(DATA)
    text = pd.Series([label(d, t) for d, t in zip(table[DATA], table[TARGET], strict=True)], index=table.index,
                     name=LABEL)
    rest = table.drop(columns=[DATA, TARGET])
    return pd.concat([rest.iloc[:, :at], text, rest.iloc[:, at:]], axis=1)
