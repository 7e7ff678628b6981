"""The run report's two PNG plots, drawn with matplotlib: the learning curve and a confusion matrix.

Both are pure: they take what ``State`` and ``Metrics`` already hold and return PNG bytes. Figures are bare
``matplotlib.figure.Figure`` objects on the Agg canvas, never pyplot, so no global state or GUI backend is
involved. ``core.report`` decides whether and where the plots are written.

Not here: computing metrics, writing to storage, or the markdown that links the plots.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from core.run.state import IterationRecord, State
from core.schema import Metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _new_figure(width: float, height: float) -> Figure:
    # A bare Figure, not pyplot: nothing enters pyplot's global figure registry, so nothing leaks when a
    # long-lived process renders many reports, and no GUI backend is ever chosen.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    fig.clear()
    return buf.getvalue()


def _curve(iterations: list[IterationRecord], attr: str) -> tuple[list[int], list[float], list[list[float]]]:
    xs, ys, err = [], [], [[], []]
    for it in iterations:
        m = getattr(it, attr)
        if m:
            lo, hi = m["accuracy_ci95"]
            xs.append(it.train_examples)
            ys.append(m["accuracy"])
            err[0].append(max(0.0, m["accuracy"] - lo))
            err[1].append(max(0.0, hi - m["accuracy"]))
    return xs, ys, err


def learning_curve_png(state: State, required_accuracy: float | None) -> bytes | None:
    """Accuracy vs labeled training examples with 95% CI bars; None before the first evaluation."""
    xs, ys, err = _curve(state.iterations, "metrics")
    if not xs:
        return None
    fig = _new_figure(6.5, 4.0)
    ax = fig.add_subplot()
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, label="accuracy vs LLM test labels")
    gx, gy, gerr = _curve(state.iterations, "gold_metrics")
    if gx:
        ax.errorbar(gx, gy, yerr=gerr, marker="s", capsize=4, linestyle="--", label="accuracy vs human labels")
    if required_accuracy is not None:
        ax.axhline(required_accuracy, color="tab:red", linestyle=":", label=f"required {required_accuracy:.2f}")
    for it in state.iterations:
        if it.metrics:
            ax.annotate(str(it.n), (it.train_examples, it.metrics["accuracy"]), textcoords="offset points",
                        xytext=(5, -12), fontsize=8)
    ax.set_xlabel("labeled training examples")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.02)
    ax.set_title("Learning curve (numbers: iteration)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def confusion_matrix_png(metrics: Metrics, title: str = "Confusion matrix") -> bytes:
    k = len(metrics.labels)
    side = max(4.0, 0.7 * k + 2.0)
    fig = _new_figure(side, side)
    ax = fig.add_subplot()
    image = ax.imshow(metrics.confusion, cmap="Blues")
    peak = max((max(row) for row in metrics.confusion if row), default=0)
    for i, row in enumerate(metrics.confusion):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=9,
                    color="white" if peak and count > peak / 2 else "black")
    names = [n if len(n) <= 24 else n[:23] + "…" for n in metrics.labels]
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("test label")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _png(fig)
