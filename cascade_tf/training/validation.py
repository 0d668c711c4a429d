"""What a training stage is validated on, and the rows it logs: shared by both trainers.

A stage is validated on *sets*, each an evaluation track on a split:

* its own track (`config.validation_track` of its training track) on the
  first `train.val_images` test images: the *primary* set, the one early
  stopping watches (`train.patience`) and the one image summaries show;
* every track of `train.val_tracks` on the same test images (a blind stage,
  trained on every mix, validated on the centre hole as well as on
  `joint_free`);
* with `train.val_train_images = N > 0`, each of those tracks again on the
  first N *training* images. The images and corruptions are the protocol's
  (central square, seeds (eval_seed, index)), so the training set's score
  against the test set's shows how much of a gain is memorised.

Every set's scores are one row of the stage's metrics.jsonl:
{"step", "time", "val_track", "val_split" ("test" | "train"), "val_psnr_identity",
"val_psnr_<output>"...}; rows written before `val_split` existed are test rows.
train.py (`training/loop.py`) builds the sets' batches with
`pipeline.validation_batch`; scripts/prepare_jax_run.py stores the same
batches under `key(track, split)` for scripts/train_jax.py.
"""

from __future__ import annotations

from cascade_tf import config as config_lib


def sets(cfg: config_lib.Config, stage: str) -> list[tuple[str, str]]:
  """[(track, split)] the stage is validated on, the primary set first."""
  own = config_lib.validation_track(cfg.stage_track(stage))
  tracks = [own] + [t for t in dict.fromkeys(cfg.train.val_tracks) if t != own]
  out = [(track, "test") for track in tracks]
  if cfg.train.val_train_images > 0:
    out += [(track, "train") for track in tracks]
  return out


def all_sets(cfg: config_lib.Config, stages) -> list[tuple[str, str]]:
  """The union of `sets` over `stages`, in first-seen order."""
  return list(dict.fromkeys(s for stage in stages for s in sets(cfg, stage)))


def num_images(cfg: config_lib.Config, split: str) -> int:
  """Images in a set of `split`: train.val_images (test) or train.val_train_images (train)."""
  return cfg.train.val_images if split == "test" else cfg.train.val_train_images


def key(track: str, split: str) -> str:
  """A set's name: the track for the test split, `<track>@train` for the training images."""
  return track if split == "test" else f"{track}@{split}"


def row(step: int, track: str, split: str, scores: dict[str, float]) -> dict:
  """The metrics.jsonl row of one set's validation (without its time)."""
  return {"step": step, "val_track": track, "val_split": split,
          **{f"val_{k}": v for k, v in scores.items()}}


def row_set(row_: dict) -> tuple[str, str]:
  """(track, split) of a logged validation row (older rows: split test)."""
  return row_.get("val_track"), row_.get("val_split", "test")


def summary(track: str, split: str, scores: dict[str, float]) -> str:
  """One line for the log: `joint_free: psnr_identity=17.92 psnr_inpainted=22.05`."""
  return f"{key(track, split)}: " + " ".join(f"{k}={v:.2f}" for k, v in scores.items())
