"""Writes a workdir with one source's generator (or several averaged) and another's restorer.

    python scripts/combine_cascade.py --generator=runs/g_wide --restorer=pretrained \
        --output=runs/c_wide
    python evaluate.py --dataset=bsd300 --manual_dir=../shared/data/BSDS300 \
        --compare=shipped=pretrained,wide=runs/c_wide --baselines=none
    python scripts/ship_pretrained.py --workdir=runs/c_wide

A source is a training workdir or `pretrained` (the shipped cascade). A
generator fine-tuned alone (`train.py --stage=pretrain`) has no restorer of
its own; this pairs it with one, for scoring, serving or shipping. The
output's config.json is the generator source's with the restorer's section
and `dd_*` settings of the restorer source; combined_from.json names both
(`cascade_tf.inference.combine`).

    python scripts/combine_cascade.py --generator=pretrained,runs/g_l1,runs/g_mse \
        --restorer=pretrained --output=runs/c_soup

averages the generators of several sources weight by weight (a uniform
"model soup"): for runs fine-tuned from one start it can score above each
of them at the cost of one (it did for two about equally good runs, and fell
between members of unequal quality: docs/training.md, "Eighth sitting").
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

import cascade_tf  # noqa: F401  (before TensorFlow)
from cascade_tf import inference

_GENERATOR = flags.DEFINE_string("generator", None,
                                 "Workdir or `pretrained` whose generator to take; a comma "
                                 "list averages the generators (one architecture).")
_RESTORER = flags.DEFINE_string("restorer", None,
                                "Workdir or `pretrained` whose restorer to take.")
_OUTPUT = flags.DEFINE_string("output", None, "The new workdir to write (must not hold one).")


def main(argv):
  del argv
  for flag in (_GENERATOR, _RESTORER, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required.")
  try:
    path = inference.combine(_GENERATOR.value, _RESTORER.value, _OUTPUT.value)
  except ValueError as e:
    print(f"combine_cascade.py: error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"Wrote {path}: generator from {_GENERATOR.value}, restorer from {_RESTORER.value}.")


if __name__ == "__main__":
  app.run(main)
