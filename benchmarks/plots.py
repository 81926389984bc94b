"""PNG plots of the sweeps: fwd+bwd median against N and against P, measured points
only. Needs matplotlib; run.py imports this module only when matplotlib is installed."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_plots(section, out_dir, stem, title):
    """One PNG per sweep (N, P), one panel per regime; returns the paths written."""
    paths = []
    axes_of = (("N", "n", f"N (entries), P = {section['nsweep_p']}"), ("P", "p", "P (positives)"))
    for sweep, x, label in axes_of:
        regimes = {}
        for pt in section["points"]:
            if sweep in pt["sweeps"]:
                regimes.setdefault(pt["regime"], []).append(pt)
        if not regimes:
            continue
        fig, axes = plt.subplots(1, len(regimes), figsize=(6 * len(regimes), 4.5), squeeze=False)
        for ax, (regime, points) in zip(axes[0], regimes.items()):
            points.sort(key=lambda pt: pt[x])
            for name, impl_title in section["titles"].items():
                xy = [(pt[x], pt["impls"][name]["median_s"]) for pt in points
                      if "median_s" in pt["impls"].get(name, {})]
                if xy:
                    ax.plot(*zip(*xy), marker="o", label=impl_title)
            where = f", N = {points[0]['n']:,}" if sweep == "P" else ""
            ax.set(xscale="log", yscale="log", xlabel=label, ylabel="fwd+bwd, median [s]",
                   title=f"regime '{regime}'{where}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f"{stem}-time-vs-{sweep}.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
