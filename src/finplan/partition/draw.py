"""Draw a plan: blocks on the nodes (grouped by tier), transfers with their sizes (PNG)."""
from __future__ import annotations

import io

from finplan.errors import EnvironmentFault
from finplan.units import decimal_bytes, ms

TIER_ORDER = {"mobile": 0, "device": 0, "iot": 0, "phone": 0, "edge": 1, "fog": 1, "cloud": 2}


def plan_png(doc: dict) -> bytes:
    """Render a plan document as PNG bytes; one panel per application.

    Parameters
    ----------
    doc : dict
        A ``finplan.plan/1`` document.

    Returns
    -------
    bytes
        The PNG (Agg backend, no Software metadata).

    Raises
    ------
    EnvironmentFault
        When matplotlib (the ``[plot]`` extra) is not installed.

    Notes
    -----
    Complexity: O(A B) drawing calls.
    """
    try:
        import matplotlib
    except ImportError:
        raise EnvironmentFault("drawing needs matplotlib, which this Python does not have",
                               check="pip install 'finplan[plot]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = doc["network"]["nodes"]
    order = sorted(range(len(nodes)), key=lambda i: (TIER_ORDER.get(str(nodes[i].get("tier", "")).lower(), 1), i))
    row = {nodes[i]["name"]: y for y, i in enumerate(order)}
    labels = [f"{nodes[i]['name']} ({nodes[i].get('tier', '?')})" for i in order]
    apps = doc["applications"]
    fig, axes = plt.subplots(len(apps), 1, figsize=(9, 1.2 + 1.0 * max(2, len(nodes)) * len(apps) ** 0.5 + 0.6 * len(apps)),
                             squeeze=False)
    for ax, app in zip(axes[:, 0], apps):
        ax.set_yticks(range(len(labels)), labels)
        ax.set_ylim(-0.6, len(labels) - 0.4)
        placement = app["placement"]
        title = f"{app['name']} ({app['model']['name']}, source {app['source']})"
        if not app["feasible"]:
            ax.set_title(title + ": infeasible")
            ax.text(0.5, 0.5, app.get("reason", ""), transform=ax.transAxes, ha="center", va="center", wrap=True, fontsize=8)
        if placement:
            xs = list(range(1, len(placement) + 1))
            ys = [row[p["node"]] for p in placement]
            ax.plot(xs, ys, "-", color="0.7", zorder=1)
            ax.scatter(xs, ys, s=160, color="tab:blue", zorder=2)
            for x, y, p in zip(xs, ys, placement):
                ax.annotate(p["block"], (x, y), textcoords="offset points", xytext=(0, 10), ha="center", fontsize=7)
            blocks = [p["block"] for p in placement]
            for t in app["transfers"]:
                x = 0.5 if t["after_block"] == "input" else blocks.index(t["after_block"]) + 1.5
                y = (row[t["from"]] + row[t["to"]]) / 2
                ax.annotate(decimal_bytes(t["bytes"]) + (f" x{t['probability']:.2f}" if t["probability"] < 1 else ""),
                            (x, y), ha="center", fontsize=7, color="tab:red",
                            bbox={"boxstyle": "round", "fc": "white", "ec": "tab:red", "lw": 0.5})
            ax.scatter([xs[-1] + 0.35], [ys[-1]], marker=">", s=80, color="tab:green", zorder=3)
            ax.annotate(app["final_exit"], (xs[-1] + 0.35, ys[-1]), textcoords="offset points", xytext=(0, -14),
                        ha="center", fontsize=7, color="tab:green")
            ax.set_xticks(xs)
            ax.set_xlim(0.3, len(xs) + 0.8)
            pred = app["predicted"]
            if app["feasible"] and pred:
                ax.set_title(f"{title}: {pred['energy_j']:.4g} J, {ms(pred['latency_s'])}, "
                             f"accuracy {pred['accuracy']:.4f}", fontsize=9)
        ax.set_xlabel("block")
        ax.grid(axis="y", color="0.92")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
