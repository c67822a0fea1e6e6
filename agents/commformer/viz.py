"""Pictures of the communication graph for TensorBoard: heatmap, top-k mask, node-link drawing."""

from __future__ import annotations

import math

import numpy as np


def _to_array(fig) -> np.ndarray:
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return img


def heatmap(matrix: np.ndarray, names: list[str], title: str, vmax: float | None = None) -> np.ndarray:
    """HWC uint8 image of a receiver x sender matrix with agent names on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    size = 2.5 + 0.35 * n
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=80)
    im = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=vmax if vmax is not None else max(matrix.max(), 1e-6))
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("sender")
    ax.set_ylabel("receiver")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _to_array(fig)


def node_link(probs: np.ndarray, mask: np.ndarray, names: list[str], gate_open: np.ndarray | None) -> np.ndarray:
    """Agents on a circle; kept edges as arrows whose width follows the probability; closed gates hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    ang = [2 * math.pi * i / n for i in range(n)]
    pos = np.array([(math.cos(a), math.sin(a)) for a in ang])
    fig, ax = plt.subplots(figsize=(5, 5), dpi=80)
    top = probs[~np.eye(n, dtype=bool)].max() if n > 1 else 1.0
    for i in range(n):  # receiver
        for j in range(n):  # sender
            if i == j or mask[i, j] <= 0:
                continue
            w = 0.5 + 3.5 * probs[i, j] / max(top, 1e-9)
            ax.annotate("", xy=pos[i] * 0.9, xytext=pos[j] * 0.9,
                        arrowprops=dict(arrowstyle="-|>", lw=w, color="tab:blue", alpha=0.7, shrinkA=8, shrinkB=8))
    for i, name in enumerate(names):
        closed = gate_open is not None and gate_open[i] < 0.5
        ax.scatter(*pos[i] * 0.9, s=260, facecolors="white" if closed else "tab:orange", edgecolors="black",
                   zorder=3)
        ax.text(*(pos[i] * 1.12), name, ha="center", va="center", fontsize=7)
    ax.set_xlim(-1.35, 1.35)
    ax.set_ylim(-1.35, 1.35)
    ax.set_aspect("equal")
    ax.axis("off")
    title = "kept edges (sender -> receiver), width = probability"
    if gate_open is not None:
        title += "\nhollow: gate mostly closed"
    ax.set_title(title, fontsize=8)
    return _to_array(fig)


def graph_images(probs: np.ndarray, mask: np.ndarray, names: list[str], gate_open) -> dict[str, np.ndarray]:
    """The three TensorBoard images of one snapshot of the graph."""
    n = len(names)
    shown = probs.copy()
    shown[np.eye(n, dtype=bool)] = np.nan
    gates = None if gate_open is None else np.asarray(gate_open)
    return {"graph/edge_heatmap": heatmap(np.nan_to_num(shown), names, "edge probabilities (row softmax)"),
            "graph/topk_mask": heatmap(mask, names, "deterministic top-k mask (+ self loops)", vmax=1.0),
            "graph/node_link": node_link(probs, mask, names, gates)}
