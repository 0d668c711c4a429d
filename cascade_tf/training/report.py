"""Reads a workdir's metrics.jsonl files and plots or tabulates them.

`load_metrics(workdir)` returns, per stage, the logged training rows and
the validation rows; `plot_curves` draws every stage's loss terms and its
validation PSNR against the corrupted input's (`identity`) into one PNG,
each validation set (`training/validation.py`: a track on the test or the
training images) in its own line style; `validation_table` gives the first
and last validation of each stage and set as Markdown. `plot_runs` draws
several runs' validation PSNR against the training images each has seen,
and `plateau_table` says from what it drew whether each stage's curve had
flattened.
"""

from __future__ import annotations

import json
import os

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from cascade_tf.training import stages as stages_lib
from cascade_tf.training import validation as validation_lib

_LOSS_TERMS = ("mse", "l1", "neg_psnr", "perceptual", "adversarial", "mse_intermediate",
               "critic_loss", "wasserstein", "gradient_penalty")
_SMOOTH = 10  # Logged points in the running mean drawn over each loss curve.


def load_metrics(workdir: str) -> dict[str, dict[str, list[dict]]]:
  """{stage: {"train": [rows], "val": [rows]}} for the stages that logged."""
  out = {}
  for stage in stages_lib.STAGES:
    path = os.path.join(workdir, stage, "metrics.jsonl")
    if not os.path.exists(path):
      continue
    train, val = [], []
    with open(path) as f:
      for line in f:
        row = json.loads(line)
        (val if any(k.startswith("val_") for k in row) else train).append(row)
    out[stage] = {"train": train, "val": val}
  if not out:
    raise ValueError(f"--workdir={workdir} has no <stage>/metrics.jsonl: has it been trained?")
  return out


def validation_sets(val: list[dict]) -> dict[tuple[str, str], list[dict]]:
  """A stage's validation rows by (track, split), the primary set (logged first) first."""
  out: dict[tuple[str, str], list[dict]] = {}
  for row in val:
    out.setdefault(validation_lib.row_set(row), []).append(row)
  return out


def primary_rows(val: list[dict]) -> list[dict]:
  """The rows of a stage's primary validation set (its own track on the test images)."""
  by_set = validation_sets(val)
  return next(iter(by_set.values())) if by_set else []


def plot_curves(workdir: str, output_png: str) -> dict[str, dict[str, dict[str, list]]]:
  """Loss terms (top row) and validation PSNR (bottom row), one column per stage.

  Returns what was drawn: {stage: {"losses": {term: [(step, value)]},
  "validation": {output: [(step, PSNR dB)]}}}: the primary set's outputs by
  name, another set's as `<output>@<set>` (`validation.key`: e.g.
  `inpainted@inpaint`, `inpainted@joint_free@train`); a loss term that is
  zero at every logged step (a disabled term) is not drawn.
  """
  metrics = load_metrics(workdir)
  drawn = {}
  stages = list(metrics)
  fig, axes = plt.subplots(2, len(stages), figsize=(4.2 * len(stages), 6.5), squeeze=False)
  for col, stage in enumerate(stages):
    train, val = metrics[stage]["train"], metrics[stage]["val"]
    ax = axes[0][col]
    drawn[stage] = {"losses": {}, "validation": {}}
    for term in _LOSS_TERMS:
      points = [(r["step"], r[term]) for r in train if term in r]
      if points and any(abs(v) > 0 for _, v in points):
        steps, values = zip(*points)
        line, = ax.plot(steps, values, linewidth=0.6, alpha=0.35)
        if len(values) >= _SMOOTH:  # Single-step values are noisy: their running mean too.
          mean = np.convolve(values, np.ones(_SMOOTH) / _SMOOTH, mode="valid")
          ax.plot(steps[_SMOOTH - 1:], mean, color=line.get_color(), linewidth=1.4,
                  label=f"{term} (mean of {_SMOOTH})")
        else:
          line.set_label(term)
        drawn[stage]["losses"][term] = points
    ax.set_title(f"{stage}: training losses")
    ax.set_xlabel("step")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.legend(fontsize=7)
    ax = axes[1][col]
    styles = ("-", "-.", ":", (0, (5, 1)), (0, (1, 3)), (0, (3, 1, 1, 1)))
    for index, (vset, rows) in enumerate(validation_sets(val).items()):
      suffix = "" if index == 0 else "@" + validation_lib.key(*vset)
      for key in sorted({k for r in rows for k in r if k.startswith("val_psnr")}):
        points = [(r["step"], r[key]) for r in rows if key in r]
        steps, values = zip(*points)
        output = key.replace("val_psnr_", "")
        ax.plot(steps, values, marker=".",
                linestyle="--" if key.endswith("identity") else styles[index % len(styles)],
                label=output if index == 0 else f"{output} ({validation_lib.key(*vset)})")
        drawn[stage]["validation"][output + suffix] = points
    ax.set_title(f"{stage}: validation PSNR (dB)")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(output_png)), exist_ok=True)
  fig.savefig(output_png, dpi=110)
  plt.close(fig)
  return drawn


def validation_table(workdir: str) -> str:
  """Markdown: first and last validation PSNR per stage, with identity."""
  lines = ["| stage | track | steps | output | first val PSNR (dB) | last val PSNR (dB) | "
           "identity PSNR (dB) |", "|---|---|---|---|---|---|---|"]
  for stage, rows in load_metrics(workdir).items():
    for (track, split), val in validation_sets(rows["val"]).items():
      first, last = val[0], val[-1]
      track = track or stages_lib.SPECS[stage].track
      name = track if split == "test" else f"{track} ({split} images)"
      for key in sorted(k for k in last if k.startswith("val_psnr_") and k != "val_psnr_identity"):
        lines.append(f"| {stage} | {name} | {last['step']} | "
                     f"{key.replace('val_psnr_', '')} | {first[key]:.2f} (step {first['step']}) | "
                     f"{last[key]:.2f} | {last['val_psnr_identity']:.2f} |")
  return "\n".join(lines)


def plateau_table(drawn: dict) -> str:
  """Markdown: per run, stage and output, where its validation curve ended and how it moved.

  `drawn` is `plot_runs`'s return value. "last quarter" is the mean
  validation PSNR over the stage's last quarter of training images, "the
  quarter before" the mean over the quarter before it; their difference
  says whether the curve had flattened (a single validation moves by more
  than that between checkpoints, so means are compared). A stage with fewer
  than four validations gets no means.
  """
  lines = ["| run | stage | output | images at the end | last val PSNR (dB) | "
           "mean, last quarter | mean, the quarter before | change (dB) |",
           "|---|---|---|---:|---:|---:|---:|---:|"]
  for name, stages in drawn.items():
    for stage, entry in stages.items():
      for output, points in entry["validation"].items():
        if output == "identity" or not points:
          continue
        start, end = entry["offset"], points[-1][0]
        quarter = (end - start) / 4
        last = [y for x, y in points if x > end - quarter]
        before = [y for x, y in points if end - 2 * quarter < x <= end - quarter]
        means = "- | - | -"
        if len(points) >= 4 and last and before:
          means = (f"{np.mean(last):.2f} | {np.mean(before):.2f} | "
                   f"{np.mean(last) - np.mean(before):+.2f}")
        lines.append(f"| {name} | {stage} | {output} | {end:,} | {points[-1][1]:.2f} | {means} |")
  return "\n".join(lines)


def _stage_batch_sizes(workdir: str) -> dict[str, int]:
  """Each stage's global batch size, from WORKDIR/config.json."""
  from cascade_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ValueError(f"{workdir} has no config.json: is it a training workdir?")
  with open(path) as f:
    cfg = config_lib.from_json(f.read())
  return {stage: cfg.stage_batch_size(stage) for stage in stages_lib.STAGES}


def plot_runs(runs: dict[str, str], output_png: str, title: str = "") -> dict:
  """Validation PSNR of several runs against the training images they have seen.

  One panel per validation track (each stage's primary set,
  `validation.sets`); each run is one colour, its stages one
  line each (solid: the final output; dotted: the generator's output
  before the restorer). The x axis counts the images of the main updates
  (the critic's batches are not counted), each stage starting where the
  run's previous stages ended, so that runs of equal image budgets end at
  the same x. The corrupted input's PSNR is drawn grey and dashed.

  Args:
    runs: {name: workdir}, in legend order.
    output_png: where the figure goes.
    title: the figure's title.

  Returns:
    {name: {stage: {"track": track, "offset": images before the stage,
    "validation": {output: [(images, PSNR dB)]}}}}.
  """
  drawn, tracks = {}, []
  for name, workdir in runs.items():
    metrics, batch = load_metrics(workdir), _stage_batch_sizes(workdir)
    offset, drawn[name] = 0, {}
    for stage in stages_lib.STAGES:  # The order a run trains them in.
      if stage not in metrics:
        continue
      val, train = primary_rows(metrics[stage]["val"]), metrics[stage]["train"]
      track = next((r["val_track"] for r in val if "val_track" in r), stages_lib.SPECS[stage].track)
      tracks += [track] if track not in tracks else []
      entry = {"track": track, "offset": offset, "validation": {}}
      for key in sorted({k for r in val for k in r if k.startswith("val_psnr")}):
        entry["validation"][key.replace("val_psnr_", "")] = [
            (offset + r["step"] * batch[stage], r[key]) for r in val if key in r]
      drawn[name][stage] = entry
      last_step = max([r["step"] for r in train + val] or [0])
      offset += last_step * batch[stage]
  if not tracks:
    raise ValueError(f"No validation rows in {sorted(runs.values())}.")
  fig, axes = plt.subplots(1, len(tracks), figsize=(5.2 * len(tracks), 4.2), squeeze=False)
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for col, track in enumerate(tracks):
    ax, identity_done = axes[0][col], False
    for index, (name, stages) in enumerate(drawn.items()):
      for stage, entry in stages.items():
        if entry["track"] != track:
          continue
        for output, points in entry["validation"].items():
          xs, ys = zip(*points)
          if output == "identity":
            if not identity_done:
              ax.plot(xs, ys, color="grey", linestyle="--", linewidth=1, marker=".",
                      markersize=3, label="input")
              identity_done = True
            continue
          ax.plot(xs, ys, color=colours[index % len(colours)], marker=".", markersize=3,
                  linestyle=":" if output == "inpainted" and "restored" in entry["validation"]
                  else "-", label=f"{name}: {stage} ({output})")
    ax.set_title(f"validation PSNR, track {track}")
    ax.set_xlabel("training images seen (main updates)")
    ax.set_ylabel("dB")
    ax.legend(fontsize=6)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(output_png)), exist_ok=True)
  fig.savefig(output_png, dpi=110)
  plt.close(fig)
  return drawn
