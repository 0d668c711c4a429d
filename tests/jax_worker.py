"""Runs the JAX side of tests/test_jax_training.py under Keras' JAX backend.

The test process runs Keras on TensorFlow, and a process has one Keras
backend, so the JAX side runs here, in a subprocess:

    python tests/jax_worker.py updates DIR   # one update of each network, every stage
    python tests/jax_worker.py corrupt DIR   # the appliers, and sampling from a bank

`updates` reads DIR/config.json (the networks' config) and, for each stage
named in DIR/stages.json, DIR/<stage>/init (weights_io shards of the
stage's networks) and DIR/<stage>/batch.npz (corrupted, clean in [0, 1]);
it applies the stage's critic update (if it has one) and then its main
update, each once with the config's optimizers (`stages.new_optimizer`),
through `training.jax_steps`, and
writes DIR/<stage>/after (shards) and DIR/<stage>/values.json (the logged
values, `stages.logged_values`).

`corrupt` reads DIR/params.npz (clean, blur_kernel, noise, mask, box) and
writes DIR/corrupted.npz: `appliers.corrupt` on every track, and
`jax_steps.sample_corruptions` from the bank in DIR/bank.npz on the joint
track (key 0) and, with `box` as the bank's only mask, on the blind track
with every probability 1 and 0.
"""

import dataclasses
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
from cascade_tf.data import appliers
from cascade_tf.training import jax_steps
from cascade_tf.training import stages as stages_lib


def updates(directory):
  with open(os.path.join(directory, "config.json")) as f:
    cfg = config_lib.from_json(f.read())
  with open(os.path.join(directory, "stages.json")) as f:
    stage_names = json.load(f)
  for name in stage_names:
    stage_dir = os.path.join(directory, name)
    wired = stages_lib.build_stage(cfg, name, global_batch_size=cfg.train.batch_size)
    for network, model in wired.nets.items():
      weights_io.load_weights(model, os.path.join(stage_dir, "init"), network)
    with np.load(os.path.join(stage_dir, "batch.npz")) as data:
      batch = {k: jnp.asarray(data[k]) for k in data.files}
    values = [v.value for v in jax_steps.stage_variables(wired)]
    logged = {}
    for update in wired.updates:  # The critic first.
      optimizer, optimizer_values = jax_steps.new_optimizer(cfg, name, update)
      fn = jax.jit(jax_steps.make_update(wired, update, optimizer))
      values, _, logged[update.name] = fn(values, optimizer_values, batch)
    jax_steps.write_back(wired, values)
    for network, model in wired.nets.items():
      weights_io.save_weights(model, os.path.join(stage_dir, "after"), network)
    merged = stages_lib.logged_values(logged["main"], logged.get("critic"))
    with open(os.path.join(stage_dir, "values.json"), "w") as f:
      json.dump({k: float(v) for k, v in merged.items()}, f)


def corrupt(directory):
  cfg = config_lib.tiny().data
  with np.load(os.path.join(directory, "params.npz")) as data:
    params = {k: jnp.asarray(data[k]) for k in data.files}
  out = {track: np.asarray(appliers.corrupt(
      params["clean"], track, kernels=params["blur_kernel"], noise=params["noise"],
      mask=params["mask"], fill=cfg.hole_fill)) for track in ("restore", "joint", "inpaint")}
  with np.load(os.path.join(directory, "bank.npz")) as data:
    bank = {k: jnp.asarray(data[k]) for k in data.files}
  sampled = jax_steps.sample_corruptions(params["clean"], jax.random.key(0), bank, "joint", cfg)
  out["sampled"] = np.asarray(sampled["corrupted"])
  out["sampled_mask"] = np.asarray(sampled["mask"])
  # The blind track from a bank with one (box) mask: everything applied where the
  # probabilities are 1, nothing where they are 0.
  bank["mask"] = params["box"]
  for name, prob in (("blind_all", 1.0), ("blind_none", 0.0)):
    blind_cfg = dataclasses.replace(cfg, blind_hole_prob=prob, blind_blur_prob=prob,
                                    blind_noise_prob=prob)
    sampled = jax_steps.sample_corruptions(params["clean"], jax.random.key(1), bank, "blind",
                                           blind_cfg)
    out[name] = np.asarray(sampled["corrupted"])
    out[name + "_mask"] = np.asarray(sampled["mask"])
  np.savez(os.path.join(directory, "corrupted.npz"), **out)


if __name__ == "__main__":
  assert keras.backend.backend() == "jax", keras.backend.backend()
  {"updates": updates, "corrupt": corrupt}[sys.argv[1]](sys.argv[2])
