"""Draw assets/framework.png: the VideoMamba architecture and its spatiotemporal scan order.

Run `python tools/draw_framework.py` after changing the figure; the PNG is committed.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).resolve().parent.parent / "assets" / "framework.png"


def box(ax, x, y, w, h, text, color, fontsize=9):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.05", fc=color, ec="#333333"))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def arrow(ax, x0, y0, x1, y1):
    ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=10, color="#333333"))


def architecture(ax):
    ax.set_title("(a) VideoMamba", fontsize=11)
    box(ax, 0.1, 0.05, 0.8, 0.09, "video (B, 3, T, H, W)", "#eeeeee")
    box(ax, 0.1, 0.2, 0.8, 0.09, "3D patch embedding (tubelet k x 16 x 16)", "#cde4f7")
    box(
        ax,
        0.1,
        0.35,
        0.8,
        0.09,
        "[CLS] + frame-major patch tokens\n+ spatial pos_embed + temporal_pos_embedding",
        "#cde4f7",
        8,
    )
    box(
        ax,
        0.1,
        0.52,
        0.8,
        0.2,
        "L x bidirectional Mamba block\nAdd -> RMSNorm -> Mamba(forward scan + backward scan)\n"
        "out_proj(silu(z) * (y_fwd + y_bwd))",
        "#fde3c8",
        8,
    )
    box(ax, 0.1, 0.78, 0.8, 0.07, "final RMSNorm (norm_f)", "#e2f0d9")
    box(ax, 0.1, 0.9, 0.8, 0.07, "[CLS] feature -> linear head", "#e2f0d9")
    for y0, y1 in ((0.14, 0.2), (0.29, 0.35), (0.44, 0.52), (0.72, 0.78), (0.85, 0.9)):
        arrow(ax, 0.5, y0, 0.5, y1)


def scan_order(ax):
    ax.set_title("(b) spatiotemporal scan (spatial first)", fontsize=11)
    frames, side = 3, 3
    for t in range(frames):
        x0 = 0.08 + t * 0.31
        for i in range(side):
            for j in range(side):
                ax.add_patch(plt.Rectangle((x0 + j * 0.08, 0.55 - i * 0.08), 0.075, 0.075, fc="#cde4f7", ec="#555555"))
                ax.text(
                    x0 + j * 0.08 + 0.037,
                    0.55 - i * 0.08 + 0.037,
                    str(1 + t * 9 + i * 3 + j),
                    fontsize=7,
                    ha="center",
                    va="center",
                )
        ax.text(x0 + 0.12, 0.66, f"frame {t + 1}", ha="center", fontsize=8)
    ax.add_patch(plt.Rectangle((0.0, 0.8), 0.075, 0.075, fc="#e2f0d9", ec="#555555"))
    ax.text(0.037, 0.837, "0", fontsize=7, ha="center", va="center")
    ax.text(0.1, 0.84, "[CLS] is token 0", fontsize=8, va="center")
    arrow(ax, 0.05, 0.2, 0.95, 0.2)
    ax.text(0.5, 0.23, "forward scan: 0, 1, 2, ..., 27", ha="center", fontsize=8)
    arrow(ax, 0.95, 0.1, 0.05, 0.1)
    ax.text(0.5, 0.02, "backward scan: 27, ..., 1, 0 (reverse scan, no flipped copy)", ha="center", fontsize=8)


def main():
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    architecture(axes[0])
    scan_order(axes[1])
    for ax in axes:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.axis("off")
    axes[0].invert_yaxis()
    fig.tight_layout()
    OUT.parent.mkdir(exist_ok=True)
    fig.savefig(OUT, dpi=120)
    print(OUT)


if __name__ == "__main__":
    main()
