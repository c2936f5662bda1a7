"""Bar charts as plain SVG geometry, drawn on the server: no script, no CDN."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, str]]
    top: int


def grouped_bars(groups: list[tuple[str, list[tuple[str, float, str]]]], *, width: int = 640, height: int = 180) -> Chart:
    """`groups`: [(label, [(series css class, value, tooltip), ...]), ...] → bars side by side per group."""
    plot_height = height - 22
    top = max((value for _, series in groups for _, value, _ in series), default=0) or 1
    slot = width / max(len(groups), 1)
    per_group = max((len(series) for _, series in groups), default=1)
    bar_width = min(max(slot * 0.8 / per_group, 1), 48)
    bars, labels = [], []
    for index, (label, series) in enumerate(groups):
        left = index * slot + (slot - bar_width * len(series)) / 2
        for position, (css, value, title) in enumerate(series):
            bar_height = plot_height * value / top
            bars.append(Bar(round(left + position * bar_width, 1), round(plot_height - bar_height, 1),
                            round(bar_width - 1, 1), round(bar_height, 1), css, title))
        labels.append((round(index * slot + slot / 2, 1), label))
    return Chart(width, height, bars, labels, int(top))
