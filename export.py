"""Exports a trained cascade as a SavedModel that TF Serving loads.

    python export.py --workdir=runs/cpu --export_dir=exports/cascade
    python export.py --workdir=runs/cpu --export_dir=exports/cascade --version=7

Writes EXPORT_DIR/N/ (N: one more than the largest existing version unless
--version is given; an existing version is never overwritten) with the
signatures `serving_default` (float images in [0, 1]) and `serving_bytes`
(encoded JPEG/PNG in, PNG out). See docs/serving.md.
"""

import sys

from absl import app
from absl import flags

from cascade_tf import serving

flags.DEFINE_string("workdir", None, "Training workdir whose most trained weights are exported.")
flags.DEFINE_string("export_dir", "exports/cascade",
                    "The model's base folder (TF Serving's --model_base_path); versions are "
                    "written as numbered subfolders.")
flags.DEFINE_integer("version", None, "Version number to write (default: largest existing + 1).")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required (the training run to export).")
  try:
    path = serving.export_savedmodel(FLAGS.workdir, FLAGS.export_dir, FLAGS.version)
  except ValueError as e:
    print(f"export.py: error: {e}", file=sys.stderr)
    sys.exit(1)
  print(path)


if __name__ == "__main__":
  app.run(main)
