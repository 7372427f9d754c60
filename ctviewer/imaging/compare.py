"""Statistics and a picture that show DICOM and PNG slices reach the model alike.

``python -m ctviewer.imaging.compare OUT.png PNG_DIR DICOM_SERIES_DIR`` saves a
figure: full slices, and the 80x80 model inputs, with each input's statistics.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

LUNG_LEVEL = 150  # grey level in the model's lung window below which a pixel is lung/air (~ -470 HU)


def input_stats(x: np.ndarray) -> dict:
    """Scale and intensity of a model input: fraction of lung pixels, their median grey level,
    and the 90th percentile (soft tissue)."""
    g = np.asarray(x)[..., 0]
    lung = g < LUNG_LEVEL
    return {
        "lung_fraction": float(lung.mean()),
        "lung_median": float(np.median(g[lung])) if lung.any() else float("nan"),
        "p90": float(np.percentile(g, 90)),
    }


def figure(out: str, pngs: list[str], dicoms: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import load_slices
    from .preprocess import PreprocessParams, display8, to_model_input

    files = [*pngs, *dicoms]
    fig, axes = plt.subplots(2, len(files), figsize=(2.6 * len(files), 5.6))
    for col, f in enumerate(files):
        s = load_slices(f)[0]
        x = to_model_input(s)
        st = input_stats(x)
        axes[0, col].imshow(display8(s, PreprocessParams()), cmap="gray", vmin=0, vmax=255)
        axes[0, col].set_title(("DICOM " if s.is_hu else "PNG ") + Path(f).name[:22], fontsize=7)
        axes[1, col].imshow(x[..., 0], cmap="gray", vmin=0, vmax=255)
        axes[1, col].set_title(f"lung {st['lung_fraction']:.2f}, median {st['lung_median']:.0f}", fontsize=7)
        for ax in axes[:, col]:
            ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_ylabel("slice (model window)")
    axes[1, 0].set_ylabel("model input 80x80")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv: list[str]) -> int:
    out, png_dir, dicom_dir = argv
    pngs = sorted(str(p) for p in Path(png_dir).glob("*.png"))[::97][:4]
    dicoms = sorted(str(p) for p in Path(dicom_dir).glob("*.dcm"))
    mid = dicoms[len(dicoms) // 3 :: max(1, len(dicoms) // 3)][:3]
    figure(out, pngs, mid)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
