"""Where the labels of a bubble chart go, so that no label meets another label or another bubble:
computed in pixels of the plotting area as the wide page draws it, before Plotly draws it."""

from __future__ import annotations

# Labels are placed in pixels of the plotting area as a wide page draws it at 1280 px (the chart's
# 440 px less its margins, titles and legend); Plotly draws 12 px text about 7 px a character wide.
PLOT_PX = (820.0, 300.0)
CHAR_PX, LINE_PX = 7.0, 16.0
LABEL_PLACES = ("top center", "bottom center", "middle right", "middle left", "top right", "top left",
                "bottom right", "bottom left")


def bubble_radius(parameters: float | None, largest: float) -> float:
    """A bubble's diameter in px is 12 to 50, by the square root of its parameters."""
    return (12 + 38 * ((parameters or 1) / largest) ** 0.5) / 2


def _label_box(place: str, x: float, y: float, radius: float, width: float) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) in px of a label drawn at `place` beside a bubble at (x, y)."""
    vertical, horizontal = place.split()
    bottom = {"top": y + radius, "bottom": y - radius - LINE_PX, "middle": y - LINE_PX / 2}[vertical]
    left = {"center": x - width / 2, "right": x + radius, "left": x - radius - width}[horizontal]
    return left, bottom, left + width, bottom + LINE_PX


def _overlap(a: tuple, b: tuple) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def label_places(xs: list[float], ys: list[float], texts: list[str], radii: list[float]) -> list[tuple[str, tuple]]:
    """Where each bubble's label goes, and its box in px: bubbles at (xs, ys), fractions of the
    plotting area. Taking the bubbles from left to right, each label takes the first place around
    its bubble that meets no label placed before, no other bubble and stays in the plot (above, below,
    right, left, then the corners); where none is free, the place it overlaps least. A bubble whose
    text is empty has no label and is only kept clear of the others'."""
    width_px, height_px = PLOT_PX
    centres = [(x * width_px, y * height_px) for x, y in zip(xs, ys)]
    bubbles = [(cx - r, cy - r, cx + r, cy + r) for (cx, cy), r in zip(centres, radii)]
    plot = (0.0, 0.0, width_px, height_px)
    placed: dict[int, tuple[str, tuple]] = {}
    for i in sorted(range(len(xs)), key=lambda k: (xs[k], ys[k])):
        if not texts[i]:  # a bubble without a label: only avoided
            placed[i] = ("top center", (*centres[i], *centres[i]))
            continue
        width = CHAR_PX * len(texts[i]) + 4
        best = None
        for place in LABEL_PLACES:
            box = _label_box(place, *centres[i], radii[i], width)
            area = (box[2] - box[0]) * (box[3] - box[1])
            cost = (sum(_overlap(box, other) for _, other in placed.values())
                    + sum(_overlap(box, bubble) for j, bubble in enumerate(bubbles) if j != i)
                    + area - _overlap(box, plot))
            if best is None or cost < best[0]:
                best = (cost, place, box)
            if cost == 0:
                break
        placed[i] = best[1:]
    return [placed[i] for i in range(len(xs))]
