"""Runs pieces of scripts/train_jax.py under Keras' JAX backend, for tests/test_jax_training.py.

The test process runs Keras on TensorFlow, and a process has one Keras
backend, so the JAX side runs here, in a subprocess:

    python tests/jax_worker.py updates DIR   # one critic + one joint update
    python tests/jax_worker.py corrupt DIR   # the trainer's corruptions

`updates` reads DIR/config.json (the networks' config), DIR/init
(weights_io shards of its generator, restorer and critic) and DIR/batch.npz
(x, y in [-1, 1]), applies one critic update
and one joint update with RMSProp(1e-3), and writes DIR/after (shards) and
DIR/losses.json. `corrupt` reads DIR/clean.npz (clean, kernel) and writes
DIR/corrupted.npz with the restore, joint and inpaint corruptions (noise
sigma 0).
"""

import importlib.util
import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import keras
import numpy as np

from cascade_tf import config as config_lib
from cascade_tf import weights_io


def _train_jax():
  spec = importlib.util.spec_from_file_location("train_jax",
                                                os.path.join(ROOT, "scripts", "train_jax.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def updates(directory):
  train_jax = _train_jax()
  with open(os.path.join(directory, "config.json")) as f:
    cfg = config_lib.from_json(f.read())
  models = {name: train_jax.build(name, cfg) for name in ("generator", "restorer", "critic")}
  for name, model in models.items():
    weights_io.load_weights(model, os.path.join(directory, "init"), name)
  nets = {name: train_jax.Net(model) for name, model in models.items()}
  optimizer, opt_vars = train_jax.new_optimizer(
      1e-3, models["generator"].trainable_variables + models["restorer"].trainable_variables)
  critic_optimizer, critic_opt_vars = train_jax.new_optimizer(
      1e-3, models["critic"].trainable_variables)
  critic_update, main_update = train_jax.make_updates("joint", nets, optimizer, critic_optimizer,
                                                      cfg)
  with np.load(os.path.join(directory, "batch.npz")) as batch:
    x, y = jnp.asarray(batch["x"]), jnp.asarray(batch["y"])
  g, r, c = nets["generator"], nets["restorer"], nets["critic"]
  (g_vars, c_vars, _), critic_values = jax.jit(critic_update)(
      ((g.trainable, g.non_trainable), (c.trainable, c.non_trainable), critic_opt_vars), x, y)
  main_vars = (list(g_vars[0]) + r.trainable, list(g_vars[1]) + r.non_trainable)
  (main_vars, c_vars, _), main_values = jax.jit(main_update)((main_vars, c_vars, opt_vars), x, y)
  n, n_nt = len(g.trainable), len(g.non_trainable)
  g.trainable, g.non_trainable = main_vars[0][:n], main_vars[1][:n_nt]
  r.trainable, r.non_trainable = main_vars[0][n:], main_vars[1][n_nt:]
  c.trainable, c.non_trainable = list(c_vars[0]), list(c_vars[1])
  for name, net in nets.items():
    net.write_back()
    weights_io.save_weights(net.model, os.path.join(directory, "after"), name)
  with open(os.path.join(directory, "losses.json"), "w") as f:
    json.dump({k: float(v) for k, v in {**critic_values, **main_values}.items()}, f)


def corrupt(directory):
  train_jax = _train_jax()
  cfg = config_lib.with_overrides(config_lib.tiny(), {"data.noise_sigma_max": 0.0})
  with np.load(os.path.join(directory, "clean.npz")) as data:
    clean, kernel = jnp.asarray(data["clean"]), jnp.asarray(data["kernel"])
  key = jax.random.key(0)
  out = {track: np.asarray(train_jax.corrupt(clean, key, kernel[None], track, cfg.data))
         for track in ("restore", "joint", "inpaint")}
  np.savez(os.path.join(directory, "corrupted.npz"), **out)


if __name__ == "__main__":
  assert keras.backend.backend() == "jax", keras.backend.backend()
  {"updates": updates, "corrupt": corrupt}[sys.argv[1]](sys.argv[2])
