"""Qualitative figures in the manner of the paper's Figs. 5 and 6.

`save_track_figure` draws one grid per track: a row per test image, and
the columns ground truth, corrupted input, then each method's output (the
baselines, then the model's intermediate and final outputs, in the order
given), each panel titled with the method and that image's PSNR. It uses
matplotlib's object API on an Agg canvas (no pyplot, no global backend),
so it works headless and in threads.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

PANEL_INCHES = 1.6  # Side of one image panel.
DPI = 100


def save_track_figure(path: str, track: str, clean: Sequence[np.ndarray],
                      corrupted: Sequence[np.ndarray],
                      outputs: Mapping[str, Sequence[np.ndarray]],
                      psnrs: Mapping[str, Sequence[float]] | None = None,
                      title: str | None = None) -> str:
  """Writes the grid of one track as a PNG.

  Args:
    path: the PNG to write (e.g. OUTPUT_DIR/figure_joint.png).
    track: the track's name, for the title.
    clean: R ground-truth images [H, W, 3] in [0, 1] (one row each).
    corrupted: the R corrupted inputs.
    outputs: {method: R images}, one column each, in this order.
    psnrs: optional {method: R PSNRs in dB} shown under the method names.
    title: the figure's title (default: the track).

  Returns:
    `path`.

  Raises:
    ValueError: if there are no rows, or a column has another number of
      images than `clean`.
  """
  rows = len(clean)
  if rows == 0:
    raise ValueError(f"save_track_figure({path!r}): no images to draw.")
  columns = [("ground truth", clean, None), ("input", corrupted, None)]
  for name, images in outputs.items():
    columns.append((name, images, None if psnrs is None else psnrs.get(name)))
  for name, images, _ in columns:
    if len(images) != rows:
      raise ValueError(f"save_track_figure: column {name!r} has {len(images)} images, "
                       f"expected {rows}.")
  figure = Figure(figsize=(PANEL_INCHES * len(columns), PANEL_INCHES * rows + 0.6), dpi=DPI)
  FigureCanvasAgg(figure)
  axes = figure.subplots(rows, len(columns), squeeze=False)
  for column, (name, images, scores) in enumerate(columns):
    for row in range(rows):
      ax = axes[row, column]
      ax.imshow(np.clip(np.asarray(images[row], np.float32), 0.0, 1.0), interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      label = name if row == 0 else ""
      if scores is not None:
        label = f"{label}\n{scores[row]:.2f} dB" if label else f"{scores[row]:.2f} dB"
      ax.set_title(label, fontsize=7)
  figure.suptitle(title or f"{track} track", fontsize=9)
  figure.tight_layout()
  figure.savefig(path)
  return path
