"""Repairs photos with a trained cascade: single images or whole folders.

    python restore.py --demo --output_dir=demo    # damages sample photos, repairs them
    python restore.py photo.jpg --mask=scratches.png --output_dir=out   # the shipped model
    python restore.py photo.jpg holiday/ --model=exports/cascade --output_dir=restored
    python restore.py scan.png --workdir=runs/cpu --hole=centre --output_dir=out
    python restore.py damaged.jpg --model=exports/cascade/3 --mask=scratches.png \
        --output_dir=out --save_intermediate
    python restore.py scans/ --model=exports/cascade --mask_dir=scans_masks --mask_dilate=3 \
        --mode=inpaint --output_dir=out

A mask is an image of the photo's size whose bright pixels (brighter than
mid-grey) are the damage. The hole is filled with grey as in training and
the mask goes to the model (a model with the mask channel sees it).
--mode=full (default) then repairs the whole photo (blur and noise too);
--mode=inpaint changes only the pixels of the (dilated) mask.

Folders are searched recursively. Each image is repaired at its own
resolution in overlapping tiles of the training size (--tile_size,
--tile_overlap), unless --resize scales it first; results are written as
OUTPUT_DIR/<name>.png. Unreadable files, and files over --max_pixels (default
100 MP, read from the header before decoding), are skipped, named and counted; the
exit status is 0 when at least one image was written. See docs/serving.md.
"""

import os
import sys

from absl import app
from absl import flags

from cascade_tf import cli
from cascade_tf import config as config_lib
from cascade_tf import demo
from cascade_tf import pretrained
from cascade_tf import restoring

flags.DEFINE_string("model", None, "A SavedModel version folder (export.py's EXPORT_DIR/N), "
                    "EXPORT_DIR itself (its largest version), or 'pretrained' (the cascade that "
                    "ships, MODEL_CARD.md; the default when neither --model nor --workdir is "
                    "given).")
flags.DEFINE_string("workdir", None, "A training workdir, used instead of --model.")
flags.DEFINE_string("output_dir", None, "Where the restored PNGs are written.")
flags.DEFINE_enum("hole", "none", list(restoring.HOLES),
                  "none: repair the image as it is; centre: first fill a centred square of "
                  "side min(height, width) / 2 with grey (0.5), as in training, and inpaint it.")
flags.DEFINE_string("mask", None, "An image of the same size as the input(s) whose white pixels "
                    "are the hole (filled with 0.5, then inpainted).")
flags.DEFINE_string("mask_dir", None, "A folder of masks named like the images (photo.jpg -> "
                    "MASK_DIR/photo.png, any image extension; folders keep their layout).")
flags.DEFINE_integer("mask_dilate", 0, "Grow every mask by this many px (a disk) first: masks "
                     "drawn tight around damage leave its fringe otherwise.")
flags.DEFINE_enum("mode", "full", list(restoring.MODES),
                  "full: repair the whole photo (hole, blur and noise); inpaint: fill only the "
                  "hole and keep every other pixel exactly.")
flags.DEFINE_integer("tile_size", None, "Tile side in px, a multiple of 32; default: the model's "
                     "training image size; 0: the whole image in one pass.")
flags.DEFINE_integer("tile_overlap", None, "Overlap of neighbouring tiles in px, at most "
                     "tile_size / 2 (default: tile_size / 4; multiples of 32 keep the tiles on "
                     "the generator's stride grid).")
flags.DEFINE_integer("batch_size", 8, "Tiles per model call (memory grows with it).")
flags.DEFINE_integer("resize", None, "Resize each image so that its short side is this many px "
                     "before repairing it (the training data had its short side resized to the "
                     "training size, e.g. 128); the output has the resized size.")
flags.DEFINE_integer("max_pixels", restoring.DEFAULT_MAX_PIXELS,
                     "Skip (and name) image files whose header declares more pixels than this, "
                     "before decoding them; 0: up to Pillow's own limit (179 MP).")
flags.DEFINE_bool("save_intermediate", False, "Also write the generator's output as "
                  "<name>_inpainted.png.")
flags.DEFINE_bool("demo", False, "Instead of repairing files: damage the photos that ship "
                  "inside scikit-image (free-form holes, blur, noise; seeded), repair them, and "
                  "write OUTPUT_DIR/demo.png (input, Telea + TV, the cascade, ground truth, each "
                  "with its PSNR); the PSNRs are printed.")
flags.DEFINE_integer("demo_seed", 0, "Seed of the --demo damage.")
flags.DEFINE_list("demo_images", list(demo.DEMO_IMAGES), "scikit-image photos --demo uses.")
flags.DEFINE_enum("mixed_precision", config_lib.AUTO, list(config_lib.PRECISIONS),
                  "The networks' compute precision (a workdir or pretrained; a SavedModel "
                  "keeps its own): auto (chosen per device and CPU by measurement, logged; "
                  "mixed_bfloat16 on a CPU with native bfloat16, float32 elsewhere; "
                  "docs/benchmarks.md), float32, mixed_bfloat16 or "
                  "mixed_float16 (GPU).")
flags.DEFINE_integer("self_ensemble", 1, cli.SELF_ENSEMBLE_HELP + " A workdir or pretrained; "
                     "a SavedModel runs as exported (export.py --self_ensemble).")
flags.DEFINE_bool("freeze", False, "Run a workdir's or pretrained's cascade as a frozen graph, "
                  "its weights constants: up to 1.2x faster for some networks, many times "
                  "the weights' size in memory (docs/benchmarks.md). A SavedModel runs as "
                  "exported.")
FLAGS = flags.FLAGS


def _demo(model: str) -> None:
  try:
    rows = demo.run_demo(model, FLAGS.output_dir, names=FLAGS.demo_images, seed=FLAGS.demo_seed,
                         precision=FLAGS.mixed_precision, self_ensemble=FLAGS.self_ensemble)
  except (ValueError, FileNotFoundError) as e:
    print(f"restore.py: error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"PSNR (dB) against the undamaged photos, model {model}:")
  print(demo.format_table(rows), end="")
  print(f"Wrote {os.path.join(FLAGS.output_dir, demo.FIGURE)}")


def main(argv):
  inputs = argv[1:]
  if FLAGS.model and FLAGS.workdir:
    raise app.UsageError("Pass one of --model (a SavedModel or 'pretrained') or --workdir.")
  model = FLAGS.model or FLAGS.workdir or pretrained.NAME
  if not FLAGS.output_dir:
    raise app.UsageError("--output_dir is required.")
  if FLAGS.demo:
    if inputs:
      raise app.UsageError(f"--demo repairs bundled photos: drop the inputs {inputs}.")
    _demo(model)
    return
  if not inputs:
    raise app.UsageError("Pass image files or folders to repair, e.g. restore.py photo.jpg.")
  options = restoring.RestoreOptions(
      hole=FLAGS.hole, mask_path=FLAGS.mask, mask_dir=FLAGS.mask_dir,
      mask_dilate=FLAGS.mask_dilate, mode=FLAGS.mode, tile_size=FLAGS.tile_size,
      tile_overlap=FLAGS.tile_overlap, batch_size=FLAGS.batch_size,
      resize_short_side=FLAGS.resize, save_intermediate=FLAGS.save_intermediate,
      max_pixels=FLAGS.max_pixels, precision=FLAGS.mixed_precision,
      self_ensemble=FLAGS.self_ensemble, freeze=FLAGS.freeze)
  try:
    report = restoring.restore_paths(model, inputs, FLAGS.output_dir,
                                   options)
  except ValueError as e:
    print(f"restore.py: error: {e}", file=sys.stderr)
    sys.exit(1)
  sys.exit(0 if report.written else 1)


if __name__ == "__main__":
  app.run(main)
