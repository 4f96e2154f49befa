"""The segmentation's two geometric primitives against plain references on random masks: the flood
fill (4-connected reconstruction, from scipy.ndimage's connected components) and the square erosion (now a
summed-area table), including mazes whose paths turn many times and radii wider than the mask."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from inference.segmentation import erode, flood


def reference_flood(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Breadth-first search, one pixel at a time."""
    region = np.zeros_like(mask)
    queue = deque(zip(*np.nonzero(seeds & mask), strict=True))
    for y, x in queue:
        region[y, x] = True
    while queue:
        y, x = queue.popleft()
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not region[ny, nx]:
                region[ny, nx] = True
                queue.append((ny, nx))
    return region


def reference_erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Every pixel whose (2 radius + 1)-square window, beyond the frame counting as outside, is all mask."""
    padded = np.pad(mask, radius, constant_values=False)
    side = 2 * radius + 1
    return np.array([[padded[y : y + side, x : x + side].all() for x in range(mask.shape[1])]
                     for y in range(mask.shape[0])]).reshape(mask.shape)  # fmt: skip


@pytest.mark.parametrize("seed", range(40))
def test_flood_is_the_connected_reconstruction(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random(tuple(rng.integers(1, 50, 2))) < rng.uniform(0.3, 0.8)
    seeds = rng.random(mask.shape) < 0.03
    assert np.array_equal(flood(mask, seeds), reference_flood(mask, seeds))


def test_flood_follows_a_winding_path() -> None:
    maze = np.zeros((61, 61), bool)
    maze[::4, :] = True  # corridors joined alternately at the right and the left end: a serpentine
    for row in range(0, 57, 4):
        maze[row : row + 5, 60 if row % 8 == 0 else 0] = True
    seeds = np.zeros_like(maze)
    seeds[0, 0] = True
    assert np.array_equal(flood(maze, seeds), reference_flood(maze, seeds))
    assert flood(maze, seeds)[56, 30]


@pytest.mark.parametrize("seed", range(20))
def test_erosion_is_the_square_window(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random(tuple(rng.integers(1, 30, 2))) < rng.uniform(0.6, 0.99)
    radius = int(rng.integers(0, 8))
    assert np.array_equal(erode(mask, radius), reference_erode(mask, radius) if radius else mask)
