"""Test helper: training workdirs without training."""

from pathlib import Path

import keras
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf.models import generator as generator_lib
from cascade_tf.models import restorer as restorer_lib


def make_random_workdir(path: Path) -> str:
  """A workdir with config.json and a `joint` checkpoint of seeded random networks."""
  cfg = config_lib.tiny()
  keras.utils.set_random_seed(0)
  generator = generator_lib.build_generator(cfg.generator, None)
  restorer = restorer_lib.build_restorer(cfg.restorer, None)
  tf.train.Checkpoint(generator=generator, restorer=restorer).save(
      str(path / "joint" / "checkpoints" / "ckpt"))
  (path / "config.json").write_text(config_lib.to_json(cfg))
  return str(path)
