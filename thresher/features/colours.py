"""Colours for drawing labels on a contact sheet: one fixed colour per class index."""

from __future__ import annotations

BOUNDARY = 255  # the index VOC-style masks use for "void / object boundary", drawn white
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40))


def class_colour(index: int) -> tuple[int, int, int]:
    if index == BOUNDARY:
        return (255, 255, 255)
    return PALETTE[index % len(PALETTE)]
