"""Trains the cascade with the paper's gradual strategy (Sec. 3.4).

    python train.py --stage=all --preset=tiny --workdir=runs/demo
    python train.py --stage=gan --preset=cpu --dataset=bsd300 \
        --manual_dir=../shared/data/BSDS300 --workdir=runs/cpu

Stages: pretrain, gan, dd, joint, or all (the four in order). Rerunning
the same command resumes from the stage's last checkpoint. See README.md.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from cascade_tf import cli
from cascade_tf.training import loop
from cascade_tf.training import stages

cli.define_flags(flags, cli.TRAIN_FLAGS)
flags.DEFINE_enum("stage", "all", list(stages.STAGES) + [stages.ALL],
                  "Stage to train: pretrain, gan, dd, joint, or all four in order.")
flags.DEFINE_string("init_from", None,
                    "Where a stage takes its starting networks: another workdir (its stages' "
                    "checkpoints; pretrain and dd fine-tune that workdir's run of the same "
                    "stage), 'scratch' for random weights (the paper's 'No "
                    "pre-training' ablation), or 'pretrained' (fine-tune the cascade that ships: "
                    "its generator and restorer; use its --preset). Default: this --workdir.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required (where checkpoints and logs go).")
  try:
    cfg = cli.config_from_flags(FLAGS, cli.TRAIN_FLAGS)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  hint = (f"python train.py --stage={{stage}} --preset={FLAGS.preset} --workdir={FLAGS.workdir}"
          + "".join(f" --{n}={getattr(FLAGS, n)}" for n in cli.DATA_FLAGS
                    if getattr(FLAGS, n) is not None))
  try:
    results = loop.train(cfg, FLAGS.stage, FLAGS.workdir, init_from=FLAGS.init_from,
                         command_hint=hint)
  except (ValueError, loop.NonFiniteLossError) as e:
    logging.error("%s", e)
    print(f"train.py: error: {e}", file=sys.stderr)
    sys.exit(1)
  except loop.Interrupted as e:
    # The checkpoint of the step in progress is written; 128 + the signal's
    # number is the shell's convention for "stopped by that signal".
    logging.warning("%s", e)
    print(f"train.py: {e}", file=sys.stderr)
    sys.exit(128 + e.signal_number)
  for result in results:
    scores = " ".join(f"{k}={v:.2f}" for k, v in result.validation.items())
    print(f"stage {result.stage}: step {result.step} {scores}")


if __name__ == "__main__":
  app.run(main)
