r"""Scores a trained cascade and the classical baselines under PROTOCOL.md.

    python evaluate.py --dataset=bsd300 --manual_dir=../shared/data/BSDS300  # the shipped model
    python evaluate.py --dataset=samples --model=none   # baselines only
    python evaluate.py --workdir=runs/cpu --dataset=bsd300 \
        --manual_dir=../shared/data/BSDS300 --output_dir=results/bsd300
    python evaluate.py --model=exports/cascade/1 --dataset=folder --image_dir=photos
    python evaluate.py --dataset=bsd300 --manual_dir=../shared/data/BSDS300 \
        --compare=intact=runs/cpu,no_pretrain=runs/scratch,only_gan=runs/gan_only
    # Score another tool (LaMa, DeepFill, Restormer...) on exactly our inputs:
    python evaluate.py --dataset=bsd300 --manual_dir=../shared/data/BSDS300 \
        --dump_inputs=inputs            # then run the tool on inputs/<track>/*_input.png
    python evaluate.py --dataset=bsd300 --manual_dir=../shared/data/BSDS300 \
        --external=lama=lama_outputs    # lama_outputs/<track>/<id>.png

--workdir is the training run to score (or --model an exported SavedModel
version directory); without either (or --compare), the shipped cascade
(`pretrained`, MODEL_CARD.md) is scored beside the baselines; --model=none
scores the baselines alone. Prints a
table (PSNR, hole PSNR, SSIM, hole SSIM, seconds per image, images) and writes
results.json, results.md and figure_<track>.png into --output_dir. See
docs/results.md and cascade_tf/evaluation/evaluate.py for the JSON's shape.
"""

import sys

from absl import app
from absl import flags
import tensorflow as tf

from cascade_tf import cli
from cascade_tf import config as config_lib
from cascade_tf import pretrained
from cascade_tf.evaluation import evaluate as evaluate_lib

_FLAGS_FROM_CONFIG = cli.DATA_FLAGS + ("strategy", "mixed_precision")
cli.define_flags(flags, _FLAGS_FROM_CONFIG)
flags.adopt_module_key_flags(cli)  # --helpshort lists the shared data flags too.
flags.DEFINE_string("model", None, "The model scored as `cascade`: an exported SavedModel "
                    "version directory (export.py's EXPORT_DIR/N), 'pretrained' (the shipped "
                    "cascade, the default when no --workdir or --compare is given), or 'none' "
                    "(the baselines alone).")
flags.DEFINE_string("compare", None, "Score several models side by side: name=WORKDIR_OR_MODEL,"
                    "... (rows `name` and `name_intermediate`), e.g. the paper's Table 2 "
                    "ablations.")
flags.DEFINE_string("tracks", ",".join(config_lib.TRACKS),
                    "Comma list of tracks: inpaint (hole), restore (blur + noise), joint "
                    "(blur, noise, hole).")
flags.DEFINE_string("baselines", evaluate_lib.DEFAULT,
                    "'default' (identity and each track's classical methods, knn on inpaint "
                    "where a disjoint train split exists), 'none', or a comma list of names "
                    "and FILLER+RESTORER chains, e.g. identity,telea,bm3d,telea+wiener_oracle "
                    "(may include 'default').")
flags.DEFINE_integer("self_ensemble", 1, cli.SELF_ENSEMBLE_HELP + " Workdirs and pretrained; "
                     "a SavedModel runs as exported.")
flags.DEFINE_bool("freeze", False, "Run workdirs and pretrained as frozen graphs, their weights "
                  "constants: the same scores, up to 1.2x faster for some networks, many "
                  "times the weights' size in memory (docs/benchmarks.md). A SavedModel runs "
                  "as exported.")
flags.DEFINE_integer("max_images", None, "Score only the first N test images (default: all).")
flags.DEFINE_integer("batch_size", 16, "Images per batch of the models.")
flags.DEFINE_string("output_dir", "results", "Where results.json, results.md and the "
                    "figures are written.")
flags.DEFINE_bool("tune_baselines", False, "Tune the baselines' parameters on training "
                  "images (never the test split) instead of using their recorded defaults.")
flags.DEFINE_integer("tune_images", 8, "Training images per track used by --tune_baselines.")
flags.DEFINE_integer("knn_train_images", 200, "At most this many training images form the "
                     "k-NN baseline's patch bank.")
flags.DEFINE_bool("timing", True, "Measure seconds per image; --notiming writes null so that "
                  "two runs give byte-identical files.")
flags.DEFINE_integer("figure_images", 4, "Images (rows) per figure_<track>.png; 0: none.")
flags.DEFINE_string("dump_inputs", None, "Also write every track's exact inputs to DIR/<track>/"
                    "<id>_input.png, <id>_mask.png (255 = hole) and <id>_clean.png, id the "
                    "zero-padded image index, so that other tools can run on them.")
flags.DEFINE_string("external", None, "Score another tool's outputs DIR/<track>/<id>.png (made "
                    "from --dump_inputs's inputs) as row NAME: NAME=DIR[,NAME=DIR...].")
FLAGS = flags.FLAGS


def _model_flag() -> str | None:
  """--model, defaulting to the shipped cascade when nothing else names a model."""
  if FLAGS.model == "none":
    return None
  if FLAGS.model is None and not FLAGS.workdir and not FLAGS.compare:
    return pretrained.NAME if pretrained.available() else None
  return FLAGS.model


def main(argv):
  if len(argv) > 1:
    print(f"evaluate.py: error: unexpected arguments {argv[1:]}", file=sys.stderr)
    sys.exit(1)
  # Inference on a GPU is then reproducible too: two runs write the same numbers.
  tf.config.experimental.enable_op_determinism()
  try:
    cfg = cli.config_from_flags(FLAGS, _FLAGS_FROM_CONFIG)
    options = evaluate_lib.EvalOptions(
        tracks=evaluate_lib.parse_tracks(FLAGS.tracks),
        models=evaluate_lib.model_specs(FLAGS.workdir, _model_flag(), FLAGS.compare),
        baselines=cli.parse_list(FLAGS.baselines, "--baselines"),
        max_images=FLAGS.max_images, batch_size=FLAGS.batch_size,
        strategy=cfg.train.strategy, mixed_precision=cfg.train.mixed_precision,
        self_ensemble=FLAGS.self_ensemble, freeze=FLAGS.freeze,
        tune_baselines=FLAGS.tune_baselines, tune_images=FLAGS.tune_images,
        knn_train_images=FLAGS.knn_train_images,
        timing=FLAGS.timing, figure_images=FLAGS.figure_images,
        dump_inputs=FLAGS.dump_inputs,
        externals=evaluate_lib.parse_externals(FLAGS.external))
    results = evaluate_lib.evaluate(cfg.data, options, FLAGS.output_dir)
  except ValueError as e:
    print(f"evaluate.py: error: {e}", file=sys.stderr)
    sys.exit(1)
  print(evaluate_lib.format_markdown(results), end="")
  written = [evaluate_lib.RESULTS_JSON, evaluate_lib.RESULTS_MD]
  if options.figure_images:
    written += [f"figure_{track}.png" for track in options.tracks]
  print(f"Wrote {', '.join(written)} in {FLAGS.output_dir}")


if __name__ == "__main__":
  app.run(main)
