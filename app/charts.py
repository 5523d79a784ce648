"""Figures. Pure functions of plain data (curve points as dicts, as the store returns them)."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.placement import bubble_radius, label_places
from core.formatting import score_interval
from core.vocab.curve import CurvePoint, pick

CURVE = "#1f5fbf"
GAIN = "rgba(242, 142, 43, 0.45)"
GAIN_BELOW = "rgba(44, 160, 44, 0.55)"  # gains at or under the threshold
PICK = "#d62728"
CHOSEN = "#7b3fb5"
THRESHOLD = "#888"
# The curve figure in two bands of its height, so no bar label meets a P(D) marker: the tallest
# bar (its label above it) reaches BARS_TOP, the P(D) curve runs from CURVE_BAND[0] to CURVE_BAND[1]
# and the pick and chosen lines cover the curve's band only.
BARS_TOP = 0.42
CURVE_BAND = (0.56, 0.86)
LINES_FROM = 0.5


def pick_point(points: list[dict], threshold: float) -> tuple[dict, bool]:
    """(picked point, threshold reached) by the paper's rule over stored points: no recomputation."""
    picked, reached = pick([CurvePoint(**p) for p in points], threshold)
    return picked.to_dict(), reached


def curve_figure(points: list[dict], threshold: float, chosen_size: int | None = None) -> go.Figure:
    """P(D) against vocabulary size, the relative gain of each candidate as bars, the threshold,
    the pick (star and line) and, when it differs from the pick, the size the user chose."""
    picked, reached = pick_point(points, threshold)
    candidates = [p for p in points if p["relative_gain"] is not None]
    # Gains go on the primary axis (drawn first, so behind, and put on the right); P(D) on the overlay.
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    _add_gains(fig, candidates, threshold)
    _add_curve(fig, points, picked, reached)
    if chosen_size is not None and chosen_size != picked["vocab_size"]:
        fig.add_vline(x=chosen_size, line_dash="dash", line_color=CHOSEN, line_width=1.5, y0=LINES_FROM,
                      annotation_text=f"chosen {chosen_size:,}", annotation_position="bottom right",
                      annotation_font_color=CHOSEN)
    fig.update_layout(
        height=420, margin=dict(l=10, r=10, t=40, b=10), hovermode="x unified", bargap=0.55,
        legend=dict(orientation="h", yanchor="bottom", y=1.06, xanchor="left", x=0), plot_bgcolor="white",
    )
    sizes = [p["vocab_size"] for p in points]
    spacing = min((b - a for a, b in zip(sizes, sizes[1:])), default=1) or 1
    fig.update_xaxes(title_text="vocabulary size (tokens)", tickformat=",", showgrid=False, automargin=True,
                     tickvals=sizes if len(sizes) <= 12 else None,
                     range=[sizes[0] - 0.35 * spacing, sizes[-1] + 0.35 * spacing])
    _gain_axis(fig, [100 * p["relative_gain"] for p in candidates] + [100 * threshold])
    _curve_axis(fig, [p["log_occurrence"] for p in points])
    return fig


def _add_gains(fig: go.Figure, candidates: list[dict], threshold: float) -> None:
    fig.add_trace(go.Bar(
        x=[p["vocab_size"] for p in candidates], y=[100 * p["relative_gain"] for p in candidates],
        name="relative gain",
        marker_color=[GAIN_BELOW if p["relative_gain"] <= threshold else GAIN for p in candidates],
        text=[f"{p['relative_gain']:.2%}" for p in candidates], textposition="outside", cliponaxis=False,
        hovertemplate="gain %{y:.2f}%<extra></extra>",
    ), secondary_y=False)
    fig.add_hline(y=100 * threshold, line_dash="dash", line_color=THRESHOLD, line_width=1, secondary_y=False)
    fig.add_trace(go.Scatter(  # no data: the threshold line's legend entry
        x=[None], y=[None], mode="lines", name=f"threshold {threshold:.2%}",
        line=dict(color=THRESHOLD, dash="dash", width=1)), secondary_y=False)


def _add_curve(fig: go.Figure, points: list[dict], picked: dict, reached: bool) -> None:
    fig.add_trace(go.Scatter(
        x=[p["vocab_size"] for p in points], y=[p["log_occurrence"] for p in points], mode="lines+markers",
        name="P(D)", line=dict(color=CURVE, width=3), marker=dict(size=8),
        customdata=[[p["added_tokens"], p["tokens_per_word"], p["split_word_share"]] for p in points],
        hovertemplate=("P(D) %{y:.3f}<br>+%{customdata[0]:,} tokens<br>%{customdata[1]:.3f} tokens/word"
                       "<br>%{customdata[2]:.1%} words split<extra></extra>"),
    ), secondary_y=True)
    fig.add_trace(go.Scatter(
        x=[picked["vocab_size"]], y=[picked["log_occurrence"]], mode="markers",
        name="pick" if reached else "pick (threshold not reached: largest)",
        marker=dict(symbol="star", size=20, color=PICK, line=dict(color="white", width=1.5)),
        hovertemplate="pick %{x:,}<extra></extra>",
    ), secondary_y=True)
    fig.add_vline(x=picked["vocab_size"], line_dash="dot", line_color=PICK, line_width=1.5, y0=LINES_FROM,
                  annotation_text=f"pick {picked['vocab_size']:,} (+{picked['added_tokens']:,})",
                  annotation_position="top left", annotation_font_color=PICK)


def _gain_axis(fig: go.Figure, gains: list[float]) -> None:
    """Gains in percent, on the right. The first candidate usually gains tens of percent and later
    ones a few: when they span more than 20x, a log axis keeps the small ones and the threshold readable."""
    if min(gains) > 0 and max(gains) / min(gains) > 20:
        low = min(gains) / 2
        ticks = _one_two_five(low, max(gains) * 3)
        top = math.log10(low) + (math.log10(max(gains)) - math.log10(low)) / BARS_TOP
        fig.update_yaxes(title_text="relative gain (%, log scale)", type="log",
                         range=[math.log10(low), top], tickvals=ticks,
                         ticktext=[f"{v:g}" for v in ticks], secondary_y=False)
    else:
        bottom = 1.25 * min(0.0, *gains)
        step = _nice_step((max(gains) - bottom) / 4)
        fig.update_yaxes(title_text="relative gain (%)", range=[bottom, bottom + (max(gains) - bottom) / BARS_TOP],
                         tickvals=[round(k * step, 12) for k in range(math.ceil(bottom / step),
                                                                      math.floor(max(gains) / step) + 2)],
                         secondary_y=False)
    fig.update_yaxes(side="right", showgrid=False, automargin=True, secondary_y=False)


def _curve_axis(fig: go.Figure, values: list[float]) -> None:
    """P(D) on the left, in its band of the height, with explicit ticks within the band: Plotly
    otherwise syncs an overlaying axis's ticks to the base axis, which gives odd values."""
    low, high = min(values), max(values)
    span = (high - low or 1.0) / (CURVE_BAND[1] - CURVE_BAND[0])
    bottom, top = low - CURVE_BAND[0] * span, high + (1 - CURVE_BAND[1]) * span
    step = _nice_step((high - low or 1.0) / 3)
    ticks = [round(k * step, 12) for k in range(math.ceil((low - 0.05 * (high - low)) / step),
                                                math.floor(top / step) + 1)]
    fig.update_yaxes(title_text="P(D): mean log P(s) per document", side="left", showgrid=True, gridcolor="#eee",
                     range=[bottom, top], tickvals=ticks, automargin=True, secondary_y=True)


def _nice_step(span: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least span."""
    power = 10 ** math.floor(math.log10(span)) if span > 0 else 1.0
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= span)


def _one_two_five(low: float, high: float) -> list[float]:
    """1, 2, 5, 10, 20, 50... between low and high (ticks for a log axis)."""
    values, power = [], 10 ** math.floor(math.log10(low))
    while power <= high:
        values += [m * power for m in (1, 2, 5) if low <= m * power <= high]
        power *= 10
    return values


# --- training curves ---------------------------------------------------------------------------

TRAIN_LOSS = "#1f5fbf"
HELDOUT = "#d62728"
RELATION = "#7b3fb5"
MLM = "#2ca02c"
LR = "#888"
# (metric, legend name, colour, held-out: drawn with markers, the points are sparse)
LOSS_SERIES = (
    ("loss", "training loss", TRAIN_LOSS, False),
    ("relation_loss", "relation loss (training)", RELATION, False),
    ("mlm_loss", "MLM loss (training)", MLM, False),
    ("heldout_loss", "held-out MLM loss", HELDOUT, True),
    ("heldout_relation_loss", "held-out relation loss", HELDOUT, True),
)


def _mode(steps: list, markers: bool = False) -> str:
    """Lines, with markers when asked or when a series has too few points for a line to be seen."""
    return "lines+markers" if markers or len(steps) < 3 else "lines"


def loss_figure(history: dict[str, dict[str, list]]) -> go.Figure | None:
    """Training and held-out losses against the optimizer step, from a metric history
    ({name: {"step": [...], "value": [...]}}); None when no loss is recorded yet. The relation
    and MLM parts of a distillation loss are drawn only when there is an MLM part: without one the
    relation loss is the training loss."""
    names = [s for s in LOSS_SERIES if history.get(s[0], {}).get("step")]
    if "mlm_loss" not in history:
        names = [s for s in names if s[0] != "relation_loss"]
    if not names:
        return None
    fig = go.Figure()
    for name, label, color, heldout in names:
        series = history[name]
        fig.add_trace(go.Scatter(
            x=series["step"], y=series["value"], name=label, mode=_mode(series["step"], heldout),
            line=dict(color=color, width=2.5 if heldout else 2, dash="dash" if heldout and name != "heldout_loss"
                      else None),
            marker=dict(size=8 if heldout else 6),
            hovertemplate=f"{label} %{{y:.4f}} at step %{{x:,}}<extra></extra>",
        ))
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=30, b=10), hovermode="x unified", plot_bgcolor="white",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    fig.update_xaxes(title_text="optimizer step", tickformat=",", showgrid=False, rangemode="tozero")
    fig.update_yaxes(title_text="loss", showgrid=True, gridcolor="#eee", tickformat=".3~g")  # no SI suffixes
    mark_resumes(fig, history, labelled=True)
    return fig


def mark_resumes(fig: go.Figure, history: dict[str, dict[str, list]], labelled: bool = False) -> None:
    """A dotted line at each step a resumed attempt went on from (the "resumed" metric, valued
    with the attempt), labelled on the side with more room, so no label runs off an edge."""
    series = history.get("resumed") or {}
    last = max((max(v["step"]) for v in history.values() if v.get("step")), default=0)
    for step, attempt in zip(series.get("step", []), series.get("value", [])):
        fig.add_vline(x=step, line=dict(color="#888", width=1, dash="dot"))
        if labelled:
            side = "left" if step < last / 2 else "right"
            fig.add_annotation(x=step, y=1, yref="paper", yanchor="top", xanchor=side, showarrow=False,
                               text=f"attempt {int(attempt)} from here", font=dict(size=11, color="#666"),
                               bgcolor="rgba(255,255,255,0.8)")


def lr_figure(history: dict[str, dict[str, list]]) -> go.Figure | None:
    """The learning rate against the step (warmup, then the schedule); None before it is logged."""
    series = history.get("lr") or {}
    if not series.get("step"):
        return None
    fig = go.Figure(go.Scatter(x=series["step"], y=series["value"], name="learning rate", mode=_mode(series["step"]),
                               line=dict(color=LR, width=2), hovertemplate="lr %{y:.3g} at step %{x:,}<extra></extra>"))
    fig.update_layout(height=200, margin=dict(l=10, r=10, t=10, b=10), plot_bgcolor="white", showlegend=False)
    fig.update_xaxes(title_text="optimizer step", tickformat=",", showgrid=False, rangemode="tozero")
    fig.update_yaxes(title_text="learning rate", exponentformat="e", showgrid=True, gridcolor="#eee",
                     rangemode="tozero")
    mark_resumes(fig, history)
    return fig


# --- judging models -----------------------------------------------------------------------------

PARETO = "#d62728"
POINT_COLORS = ("#1f5fbf", "#2ca02c", "#7b3fb5", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (latency, score) points: True where no other point is at least as fast and as good and
    strictly better in one of the two (lower latency is better, higher score is better)."""
    front = []
    for i, (latency, score) in enumerate(points):
        dominated = any((ol <= latency and os_ >= score) and (ol < latency or os_ > score)
                        for j, (ol, os_) in enumerate(points) if j != i)
        front.append(not dominated)
    return front


def tradeoff_figure(rows: list[dict], metric: str, group_key: str | None = None) -> go.Figure | None:
    """Score against latency at batch 1 (log axis): a bubble per model sized by its parameters,
    error bars of the 95% interval over test examples, the Pareto front drawn through the models no
    other beats on both. rows: {label, score, score_ci95, latency_ms_p50, parameters[, group_key][,
    context]}: rows that carry the speed context they were measured in must share it (latencies
    from different devices, shapes or threads never go on one axis); it is named under the axis.
    None when no row has both a score and a latency."""
    rows = [r for r in rows if r.get("score") is not None and r.get("latency_ms_p50")]
    if not rows:
        return None
    contexts = {r["context"] for r in rows if r.get("context")}
    if len(contexts) > 1:
        raise ValueError(f"latencies measured in different contexts cannot share an axis: {sorted(contexts)}")
    front = pareto_front([(r["latency_ms_p50"], r["score"]) for r in rows])
    largest = max(r.get("parameters") or 1 for r in rows)
    fastest, slowest = (math.log10(f([r["latency_ms_p50"] for r in rows])) for f in (min, max))
    x_pad = max(0.05, 0.12 * (slowest - fastest))  # decades: room for the bubbles and their labels
    scores = [r["score"] for r in rows]
    y_pad = max(0.02, 0.3 * (max(scores) - min(scores)))  # room for a label above or below a bubble
    width, height = slowest - fastest + 2 * x_pad, max(scores) - min(scores) + 2 * y_pad
    radii = [bubble_radius(r.get("parameters"), largest) for r in rows]
    places = label_places([(math.log10(r["latency_ms_p50"]) - fastest + x_pad) / width for r in rows],
                          [(r["score"] - min(scores) + y_pad) / height for r in rows],
                          [r["label"] for r in rows], radii)
    side_of = {id(r): place for r, (place, _) in zip(rows, places)}
    per_model = False
    if group_key:  # a colour and a legend entry per group (an experiment)
        groups = [(str(g), [r for r in rows if r.get(group_key) == g])
                  for g in dict.fromkeys(r.get(group_key) for r in rows)]
    elif per_model := all(r.get("name") for r in rows):  # a legend entry per model, saying what it is
        groups = [(r["name"], [r]) for r in rows]
    else:
        groups = [("models", rows)]
    fig = go.Figure()
    for g, (group, members) in enumerate(groups):
        fig.add_trace(go.Scatter(
            x=[r["latency_ms_p50"] for r in members], y=[r["score"] for r in members], mode="markers+text",
            name=group, text=[r["label"] for r in members],
            textposition=[side_of[id(r)] for r in members], cliponaxis=False,
            marker=dict(size=[2 * bubble_radius(r.get("parameters"), largest) for r in members],
                        color=POINT_COLORS[g % len(POINT_COLORS)], opacity=0.75, line=dict(color="white", width=1)),
            # the 95% interval over test examples where there is one; none rather than a made-up "± 0"
            error_y=dict(type="data", symmetric=False, visible=True, color="#999", thickness=1,
                         array=[max(0.0, r["score_ci95"][1] - r["score"]) if r.get("score_ci95") else 0
                                for r in members],
                         arrayminus=[max(0.0, r["score"] - r["score_ci95"][0]) if r.get("score_ci95") else 0
                                     for r in members]),
            customdata=[[r.get("parameters") or 0, score_interval(r.get("score_ci95")) or "not computed"]
                        for r in members],
            hovertemplate=("%{fullData.name}" if per_model else "%{text}")
            + f"<br>{metric} %{{y:.4f}}, 95% interval %{{customdata[1]}}<br>%{{x:.2f}} ms at batch 1<br>"
              "%{customdata[0]:,} parameters<extra></extra>",
        ))
    best = sorted(((r["latency_ms_p50"], r["score"]) for r, on in zip(rows, front) if on))
    fig.add_trace(go.Scatter(x=[p[0] for p in best], y=[p[1] for p in best], mode="lines", name="Pareto front",
                             line=dict(color=PARETO, dash="dot", width=2), hoverinfo="skip"))
    if per_model:  # a long name per model: the legend lists them above the plot, clear of the axis title
        fig.update_layout(height=440 + 20 * len(groups), margin=dict(l=10, r=10, t=30 + 20 * len(groups), b=10),
                          plot_bgcolor="white", legend=dict(orientation="v", yanchor="bottom", y=1.02, xanchor="left",
                                                            x=0))
    else:
        fig.update_layout(height=440, margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white",
                          legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    measured_in = f"<br>measured in {next(iter(contexts))}" if contexts else ""
    fig.update_xaxes(title_text=f"latency at batch 1 (ms, log scale): lower is faster{measured_in}", type="log",
                     showgrid=True, gridcolor="#eee", automargin=True, range=[fastest - x_pad, slowest + x_pad])
    fig.update_yaxes(title_text=f"{metric} on test (mean over seeds)", range=[min(scores) - y_pad, max(scores) + y_pad],
                     showgrid=True, gridcolor="#eee", automargin=True)
    return fig


def dev_curves_figure(history: dict[str, dict[str, list]], metric: str) -> go.Figure | None:
    """An evaluation's dev score per epoch, a line per seed (metric names 'seed<N>/dev_<metric>'),
    so a user sees whether each seed levelled off; None before the first epoch ends."""
    seeds = sorted(name for name in history if name.endswith(f"/dev_{metric}"))
    if not seeds:
        return None
    fig = go.Figure()
    for i, name in enumerate(seeds):
        series = history[name]
        fig.add_trace(go.Scatter(x=series["step"], y=series["value"], mode="lines+markers", name=name.split("/")[0],
                                 line=dict(color=POINT_COLORS[i % len(POINT_COLORS)], width=2),
                                 hovertemplate=f"{name.split('/')[0]} epoch %{{x}}: {metric} %{{y:.4f}}<extra></extra>"))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10), plot_bgcolor="white",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    fig.update_xaxes(title_text="epoch", dtick=1, showgrid=False)
    fig.update_yaxes(title_text=f"dev {metric}", showgrid=True, gridcolor="#eee")
    return fig


def overlay_figure(histories: dict[str, dict[str, list]], names: tuple[str, ...] = ("loss", "heldout_loss",
                                                                                     "heldout_relation_loss")
                   ) -> go.Figure | None:
    """The training and held-out losses of several runs on one chart (a colour per run, dashed for
    held-out); None when none of them logged a loss."""
    fig = go.Figure()
    for i, (label, history) in enumerate(histories.items()):
        for name in names:
            series = history.get(name) or {}
            if not series.get("step"):
                continue
            heldout = name != "loss"
            fig.add_trace(go.Scatter(x=series["step"], y=series["value"], name=f"{label} · {name.replace('_', ' ')}",
                                     mode=_mode(series["step"], heldout),
                                     line=dict(color=POINT_COLORS[i % len(POINT_COLORS)], dash="dash" if heldout
                                               else None, width=2)))
    if not fig.data:
        return None
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=30, b=10), plot_bgcolor="white", hovermode="x unified",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    fig.update_xaxes(title_text="optimizer step", tickformat=",", showgrid=False, rangemode="tozero")
    fig.update_yaxes(title_text="loss", showgrid=True, gridcolor="#eee", tickformat=".3~g")
    return fig
