"""Exports a trained cascade as a SavedModel that TF Serving loads.

    python export.py --export_dir=exports/cascade   # the shipped (pretrained) cascade
    python export.py --workdir=runs/cpu --export_dir=exports/cascade
    python export.py --workdir=runs/cpu --export_dir=exports/cascade --version=7
    python export.py --workdir=runs/cpu --export_dir=exports/cascade --max_pixels=4000000

Writes EXPORT_DIR/N/ (N: one more than the largest existing version unless
--version is given; an existing version is never overwritten) with the
signatures `serving_default` (float images in [0, 1]) and `serving_bytes`
(encoded JPEG/PNG in, PNG out). Inputs over --max_pixels (default 2**24,
16.8 MP) are refused before they are decoded. See docs/serving.md.
"""

import sys

from absl import app
from absl import flags

from cascade_tf import cli
from cascade_tf import pretrained
from cascade_tf import serving

flags.DEFINE_string("workdir", None, "Training workdir whose most trained weights are exported, "
                    "or 'pretrained' (the default): the cascade that ships (MODEL_CARD.md).")
flags.DEFINE_string("export_dir", "exports/cascade",
                    "The model's base folder (TF Serving's --model_base_path); versions are "
                    "written as numbered subfolders.")
flags.DEFINE_integer("version", None, "Version number to write (default: largest existing + 1).")
flags.DEFINE_integer("max_pixels", serving.DEFAULT_MAX_PIXELS,
                     "The most pixels the export accepts: per image for serving_bytes (read "
                     "from the header, before decoding), per request (batch * height * width) "
                     "for serving_default. Larger inputs get INVALID_ARGUMENT. 0 = no limit: "
                     "UNSAFE behind a public server (one request can exhaust its memory).")
flags.DEFINE_integer("self_ensemble", 1, cli.SELF_ENSEMBLE_HELP + " Baked into every "
                     "signature, so every request pays it.")
flags.DEFINE_bool("freeze", False, "Write the weights as constants of the graph instead of "
                  "variables (inference.freeze): no variables/ to restore. Measured no faster "
                  "and using more memory when served; see docs/serving.md.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  workdir = FLAGS.workdir or pretrained.NAME
  try:
    path = serving.export_savedmodel(workdir, FLAGS.export_dir, FLAGS.version,
                                     max_pixels=FLAGS.max_pixels,
                                     self_ensemble=FLAGS.self_ensemble, freeze=FLAGS.freeze)
  except ValueError as e:
    print(f"export.py: error: {e}", file=sys.stderr)
    sys.exit(1)
  print(path)


if __name__ == "__main__":
  app.run(main)
