"""Command-line contract shared by train.py, evaluate.py, export.py and restore.py.

`define_flags(flags_module, names)` declares the named flags on absl's
FlagValues when a CLI calls it (nothing is defined at import time);
`config_from_flags(flag_values)` resolves `--preset` plus every flag that
was given (and each `--set section.field=value`) into a validated
`config.Config`. No library module reads absl flags. `parse_list` and
`name_value_pairs` parse the comma-list flags several CLIs share
(evaluate.py's --tracks and --compare, training_report.py's --compare).
"""

from __future__ import annotations

from typing import Iterable

from cascade_tf import config as config_lib

# The help of --self_ensemble (evaluate.py, restore.py, export.py), which each CLI completes.
SELF_ENSEMBLE_HELP = ("Run each network on this many symmetries of its input (flips, quarter "
                      "turns) and average the outputs mapped back: 1 (as trained), 2, 4 or 8; "
                      "n times the compute for a little more PSNR (docs/results.md, "
                      "'Self-ensemble').")

# flag name -> (config key, help). Defaults are None: "the preset's value".
_CONFIG_FLAGS = {
    "dataset": ("data.dataset", "Clean images: samples (scikit-image photos, no download), "
                "bsd300, imagenet or folder."),
    "data_dir": ("data.data_dir", "TFDS data directory (default: TFDS's ~/tensorflow_datasets)."),
    "manual_dir": ("data.manual_dir", "An extracted BSDS300 folder or BSDS300-images.tgz "
                   "(bsd300); the ImageNet tars (imagenet)."),
    "image_dir": ("data.image_dir", "Root folder of the images for --dataset=folder."),
    "extra_train_dirs": ("data.extra_train_dirs", "Comma-separated folders whose images are "
                         "added to the training split."),
    "image_size": ("data.image_size", "Side S of the square images, px (paper: 128)."),
    "hole_size": ("data.hole_size", "Side of the centre hole, px (protocol: S/2)."),
    "mask_family": ("data.mask_family", "Holes of the training tracks: centre (the paper), box, "
                    "free_form, mixed or free (docs/masks.md)."),
    "steps": ("train.steps", "Steps per stage (see --set train.<stage>_steps=N per stage)."),
    "batch_size": ("train.batch_size", "Global batch size, split across replicas (paper: 64)."),
    "lr": ("train.lr", "Learning rate of every stage (paper, RMSProp: 5e-5); "
           "--set train.<stage>_lr=X per stage."),
    "lambda_mse": ("loss.lambda_mse", "Weight of the MSE term, eq. (7)."),
    "lambda_per": ("loss.lambda_per", "Weight of the VGG16 perceptual term, eq. (7); 0 disables "
                   "it (and the VGG16 weights are then not needed)."),
    "lambda_adv": ("loss.lambda_adv", "Weight of the Wasserstein generator term, eq. (7)."),
    "n_critic": ("train.n_critic", "Critic updates per generator update (paper/WGAN: 5); 0 with "
                 "--lambda_adv=0: gan and joint without the adversary."),
    "clip": ("train.clip", "Critic weight-clipping bound (paper/WGAN: 0.01)."),
    "vgg_weights": ("loss.vgg_weights", "VGG16 weights of the perceptual loss: imagenet "
                    "(downloaded by Keras), a local .h5 path, or none (random: tests only)."),
    "seed": ("train.seed", "Seed of weights, data order and training corruptions."),
    "strategy": ("train.strategy", "tf.distribute strategy: auto, default, mirrored, "
                 "multiworker or tpu."),
    "mixed_precision": ("train.mixed_precision", "auto (chosen per device, CPU and purpose "
                        "by measurement, logged: mixed_bfloat16 on a CPU with native bfloat16, "
                        "float32 elsewhere; docs/benchmarks.md), "
                        "float32, mixed_float16 (GPU) or mixed_bfloat16 (CPU/TPU)."),
    "jit_compile": ("train.jit_compile", "XLA-compile the training updates: auto (on for a "
                    "single-replica run on a CPU without native bfloat16, off on one with "
                    "and on GPUs), on or off."),
    "checkpoint_every": ("train.checkpoint_every", "Steps between checkpoints."),
    "eval_every": ("train.eval_every", "Steps between validation PSNR and image summaries."),
    "log_every": ("train.log_every", "Steps between logged scalars and progress lines."),
}


def define_flags(flags_module, names: Iterable[str]) -> None:
  """Defines `--preset`, `--workdir`, `--set` and the named config flags."""
  flags_module.DEFINE_enum("preset", "cpu", sorted(config_lib.PRESETS),
                           "Configuration preset: tiny (tests), cpu (128x128, narrow networks "
                           "for a CPU), paper (the paper's widths), blind (cpu's networks with "
                           "the mask channel and composite, trained on damage of any shape "
                           "mixed with blur and noise).")
  flags_module.DEFINE_string("workdir", None, "Run directory: config, checkpoints, TensorBoard.")
  flags_module.DEFINE_multi_string("set", [], "Any config override, section.field=value "
                                   "(e.g. --set=generator.base_filters=32); repeatable.")
  for name in names:
    key, help_text = _CONFIG_FLAGS[name]
    flags_module.DEFINE_string(name, None, f"{help_text} [{key}; default: the preset's value]")


def config_from_flags(flag_values, names: Iterable[str]) -> config_lib.Config:
  """The preset with every given flag and --set override applied (validated)."""
  overrides = {}
  for name in names:
    value = getattr(flag_values, name)
    if value is not None:
      overrides[_CONFIG_FLAGS[name][0]] = value
  for item in flag_values.set:
    if "=" not in item:
      raise ValueError(f"--set={item!r}: expected section.field=value.")
    key, value = item.split("=", 1)
    overrides[key.strip()] = value.strip()
  cfg = config_lib.get_preset(flag_values.preset)
  try:
    return config_lib.with_overrides(cfg, overrides)
  except ValueError as e:
    flag_for_key = {key: name for name, (key, _) in _CONFIG_FLAGS.items()}
    message = str(e)
    for key, name in flag_for_key.items():
      if message.startswith(f"Override {key}=") or message.startswith(f"{key}="):
        message = f"--{name}: {message}"
        break
    raise ValueError(message) from None


TRAIN_FLAGS = tuple(_CONFIG_FLAGS)
DATA_FLAGS = ("dataset", "data_dir", "manual_dir", "image_dir", "image_size", "hole_size")


def parse_list(text: str | None, flag: str) -> tuple[str, ...]:
  """"a, b,c" -> ("a", "b", "c"); ValueError naming `flag` if empty."""
  items = tuple(item.strip() for item in (text or "").split(",") if item.strip())
  if not items:
    raise ValueError(f"{flag}: expected a comma-separated list, got {text!r}.")
  return items


def name_value_pairs(text: str | None, flag: str, value: str) -> list[tuple[str, str]]:
  """"a=x, b=y" -> [("a", "x"), ("b", "y")]; ValueError naming `flag` for a malformed entry.

  `value` names the right-hand side in the message (e.g. "WORKDIR"). A name
  given twice is an error too: each name labels one row or curve."""
  pairs = []
  for entry in parse_list(text, flag):
    name, sep, path = entry.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
      raise ValueError(f"{flag}: expected name={value} entries separated by commas, got "
                       f"{entry!r}.")
    if any(name == seen for seen, _ in pairs):
      raise ValueError(f"{flag}: the name {name!r} is used twice; names must be unique.")
    pairs.append((name, path))
  return pairs
