"""`restore.py --demo`: damage bundled photos, repair them, show and score the result.

The photos that ship inside scikit-image (no download) are prepared as
PROTOCOL.md prepares clean images (`pipeline.central_square`: the central
square, resized to `size` px, bicubic and anti-aliased). Each is damaged on
the `joint_free` track of the protocol with its own seeded draw (blur, then
noise, then free-form scratches and boxes filled with grey), repaired by
the model exactly as `restore.py --mask=...` repairs a photo (large holes
first, then overlapping tiles), and by the classical chain Telea + TV
(`evaluation/baselines.py`). `run_demo` writes `demo.png` (one row per
photo: input, Telea + TV, the cascade, the ground truth, each with its
PSNR against the ground truth) and returns the PSNRs, which restore.py
prints.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Sequence, TextIO

import numpy as np

from cascade_tf import config as config_lib
from cascade_tf import inference
from cascade_tf import metrics
from cascade_tf import restoring
from cascade_tf.data import corruptions
from cascade_tf.data import pipeline
from cascade_tf.data import sources
from cascade_tf.evaluation import baselines as baselines_lib

DEMO_IMAGES = ("astronaut", "chelsea", "coffee", "rocket")
DEMO_TRACK = "joint_free"
BASELINE = "telea+tv"
FIGURE = "demo.png"
COLUMNS = ("input", "Telea + TV", "cascade", "ground truth")


@dataclasses.dataclass
class DemoRow:
  name: str
  psnr_input: float
  psnr_baseline: float
  psnr_cascade: float
  hole_share: float


def demo_images(names: Sequence[str] = DEMO_IMAGES, size: int = 256) -> list[np.ndarray]:
  """The named scikit-image photos as float32 [size, size, 3] in [0, 1], prepared as the
  protocol prepares clean images (`pipeline.central_square`)."""
  arrays = dict(sources.sample_arrays())
  unknown = [n for n in names if n not in arrays]
  if unknown:
    raise ValueError(f"--demo_images: unknown {unknown}; expected some of {sorted(arrays)}.")
  return [pipeline.central_square(arrays[name], size).numpy() for name in names]


def damage(images: Sequence[np.ndarray], seed: int = 0,
           data_cfg: config_lib.DataConfig = config_lib.DataConfig()) -> dict[str, np.ndarray]:
  """The `joint_free` corruption of each image, seeded per image (seed, index)."""
  clean = np.stack(images)
  seeds = corruptions.eval_seeds(np.arange(len(images)), seed)
  out = corruptions.corrupt_batch(clean, seeds, DEMO_TRACK, data_cfg)
  return {k: np.asarray(v) for k, v in out.items()}


def run_demo(model: str | inference.Repairer, output_dir: str, *,
             names: Sequence[str] = DEMO_IMAGES, size: int = 256, seed: int = 0,
             stream: TextIO = sys.stderr, precision: str = "auto",
             self_ensemble: int = 1) -> list[DemoRow]:
  """Damages, repairs and scores the demo photos; writes OUTPUT_DIR/demo.png.

  Args:
    model: what restore.py's --model takes (`pretrained`, a SavedModel, a
      workdir) or a loaded Repairer.
    output_dir: where demo.png goes (created).
    names: scikit-image photos (`sources.SAMPLE_IMAGES`).
    size: side of the square photos, px.
    seed: seed of the damage.
    stream: where progress goes.
    precision: the networks' compute precision (restore.py's --mixed_precision).
    self_ensemble: symmetries each network sees (restore.py's --self_ensemble).

  Returns:
    One DemoRow per photo (PSNRs in dB against the undamaged photo).
  """
  repairer = (model if isinstance(model, inference.Repairer)
              else inference.Repairer(inference.resolve_model(model), precision=precision,
                                      self_ensemble=self_ensemble))
  geometry = restoring.TileGeometry.for_model(repairer.config, model=model)
  images = demo_images(names, size)
  damaged = damage(images, seed)
  baseline = baselines_lib.make_baseline(BASELINE)

  def run(batch, masks):
    return {k: v.numpy() for k, v in repairer(batch, masks).items()}

  rows, panels = [], []
  start = time.perf_counter()
  for index, name in enumerate(names):
    clean = images[index]
    corrupted, mask = damaged["corrupted"][index], damaged["mask"][index]
    hole = mask[..., 0] > 0.5
    repaired = geometry.repair(corrupted.copy(), hole, run, dtype=np.float32)["restored"]
    example = {key: damaged[key][index] for key in
               ("corrupted", "mask", "blur_kernel", "noise_sigma")}
    classical = baseline(example)
    scores = [float(metrics.psnr(clean[None], x[None])[0])
              for x in (corrupted, classical, repaired)]
    rows.append(DemoRow(name, *scores, hole_share=float(hole.mean())))
    panels.append((corrupted, classical, repaired, clean))
    stream.write(f"demo: {name} repaired ({time.perf_counter() - start:.1f}s)\n")
  os.makedirs(output_dir, exist_ok=True)
  write_figure(os.path.join(output_dir, FIGURE), rows, panels)
  return rows


def write_figure(path: str, rows: Sequence[DemoRow], panels) -> None:
  """One row per photo, the four COLUMNS, each titled with its PSNR."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(len(rows), len(COLUMNS), figsize=(3 * len(COLUMNS), 3 * len(rows)),
                              squeeze=False)
  for r, (row, images) in enumerate(zip(rows, panels)):
    titles = (f"input {row.psnr_input:.2f} dB", f"Telea + TV {row.psnr_baseline:.2f} dB",
              f"cascade {row.psnr_cascade:.2f} dB", f"{row.name} (ground truth)")
    for c, (image, title) in enumerate(zip(images, titles)):
      axes[r, c].imshow(np.clip(image, 0.0, 1.0))
      axes[r, c].set_title(title, fontsize=10)
      axes[r, c].axis("off")
  figure.tight_layout()
  figure.savefig(path, dpi=80)
  plt.close(figure)


def format_table(rows: Sequence[DemoRow]) -> str:
  """The PSNRs as a Markdown table, with their mean."""
  lines = ["| photo | hole % | input | Telea + TV | cascade |", "|---|---|---|---|---|"]
  for row in rows:
    lines.append(f"| {row.name} | {100 * row.hole_share:.1f} | {row.psnr_input:.2f} | "
                 f"{row.psnr_baseline:.2f} | {row.psnr_cascade:.2f} |")
  mean = [float(np.mean([getattr(r, k) for r in rows]))
          for k in ("psnr_input", "psnr_baseline", "psnr_cascade")]
  lines.append(f"| mean | | {mean[0]:.2f} | {mean[1]:.2f} | {mean[2]:.2f} |")
  return "\n".join(lines) + "\n"
