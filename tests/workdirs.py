"""Test helper: training workdirs without training."""

from pathlib import Path

import keras

from cascade_tf import config as config_lib
from cascade_tf import inference
from cascade_tf.models import generator as generator_lib
from cascade_tf.models import restorer as restorer_lib


def make_random_workdir(path: Path, seed: int = 0) -> str:
  """A workdir with config.json and a `joint` checkpoint of seeded random networks."""
  cfg = config_lib.tiny()
  keras.utils.set_random_seed(seed)
  generator = generator_lib.build_generator(cfg.generator, None)
  restorer = restorer_lib.build_restorer(cfg.restorer, None)
  return inference.write_workdir(str(path), cfg, generator, restorer)
