"""Histories' training windows: the newest window per row, and the whole history tiled."""

from __future__ import annotations

import numpy as np
import pytest

from directrec.data.histories import Histories


def _rows(*lengths: int) -> Histories:
    """Rows of consecutive item indices: row r holds `lengths[r]` items."""
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Histories(indptr, np.arange(indptr[-1]), np.arange(len(lengths)), int(indptr[-1]))


def test_tiles_match_a_hand_tiled_history():
    """A row of 8 items (tokens 1..8) in windows of 3: four windows, newest first, each
    sharing one item with the next older; a row of 1 and of 3 items give one window."""
    tiles = _rows(8, 1, 3).tiles(3)
    assert tiles.tolist() == [
        [6, 7, 8],
        [0, 0, 9],
        [10, 11, 12],
        [4, 5, 6],
        [2, 3, 4],
        [0, 1, 2],
    ]


def test_tiles_make_every_item_but_the_first_a_target_once():
    h = _rows(1, 2, 5, 40, 41, 42, 200)
    for length in (2, 5, 41):
        tiles = h.tiles(length)
        newest = h.windows(length)
        assert np.array_equal(tiles[: len(h)], newest)
        # next-item targets: a token whose left neighbour in the window is a real item
        targets = tiles[:, 1:][(tiles[:, :-1] > 0) & (tiles[:, 1:] > 0)]
        firsts = h.items[h.indptr[:-1]] + 1
        expected = np.setdiff1d(h.items + 1, firsts)
        assert np.array_equal(np.sort(targets), expected), length


def test_tiles_refuse_a_window_without_a_target():
    with pytest.raises(ValueError, match="length >= 2"):
        _rows(3).tiles(1)


def test_training_windows_name_the_newest_window_or_the_tiles():
    h = _rows(8, 1, 3)
    assert np.array_equal(h.training_windows(3, "last"), h.windows(3))
    assert np.array_equal(h.training_windows(3, "all"), h.tiles(3))
    with pytest.raises(ValueError, match="windows must be last or all"):
        h.training_windows(3, "some")
