"""Paired timing of the inference paths: Keras as trained, Keras folded, the SavedModel.

    python benchmarks/infer_ab.py --preset=paper --batch_size=8 --rounds=30
    python benchmarks/infer_ab.py --precision=mixed_bfloat16   # + folded_float32_weights

Builds one cascade (batch-norm statistics and every bias randomised, so that
folding has real work to do and no bias is the all-zero tensor a freshly
built layer holds: Grappler's constant folding deletes the addition of an
all-zero constant, which in a frozen graph would leave convolution and
activation unfused where a trained network's would fuse) and runs, on the
same batch, these ways of using it:

* `plain`: the Keras cascade with its batch-norm layers (training=False);
* `folded`: the same with batch norm folded into the convolutions
  (`cascade_tf.models.fold`), which is what `inference.load_workdir_cascade`
  gives evaluate.py and restore.py;
* `savedmodel`: the cascade exported by `cascade_tf.serving.export_savedmodel`
  (folded too) through its `serving_default` signature, input checks,
  padding and clipping included, as TF Serving runs it.

With `--precision=mixed_bfloat16` (or another mixed policy) the Keras paths
compute in its compute dtype and a fourth path is added,
`folded_float32_weights`: folded, but with the policy's float32 weights
cast at every call (`fold.fold_batch_norm(..., weights_in_compute_dtype=False)`),
the inference copy as it was before those weights were stored in bfloat16.
The SavedModel computes in float32 under every policy (`export.py` has no
precision), so it is left out then.

`--network=generator` or `--network=restorer` times that network alone
(its plain, folded and, under a mixed policy, float32-weight copies, on a
random batch of its input; no SavedModel), to see which one the time goes
to. `--frozen` adds `folded_frozen`: the folded call's graph with every
variable turned into a constant (`inference.freeze`), as
`inference.Repairer` runs it (oneDNN can keep a constant kernel in its
blocked layout instead of reordering it at every call), and, for the
cascade in float32, `savedmodel_frozen`: the export with `export.py
--freeze`.

`--weights=pretrained` times the shipped cascade's networks
(`cascade_tf.pretrained`, the `photo` preset) instead of randomised ones.

It checks that they agree, then calls each once per round, in a rotating
order, all in one process. Machine noise on a shared 2-core host drifts
over seconds to minutes, so separate runs of bench.py could not resolve a
few percent; calls made side by side see the same drift, and the median of
the per-round ratios to `folded` is what to read. Prints a Markdown table
with medians and quartiles.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

# pylint: disable=wrong-import-position
import cascade_tf  # noqa: F401  Before TensorFlow: the package's oneDNN default.
import keras
import numpy as np
import tensorflow as tf

from benchmarks import bench
from cascade_tf import config as config_lib
from cascade_tf import inference
from cascade_tf import pretrained
from cascade_tf import ranges
from cascade_tf import runtime
from cascade_tf import serving
from cascade_tf.models import build_cascade
from cascade_tf.models import cascade as cascade_lib
from cascade_tf.models.cascade import cascade_inputs
from cascade_tf.models import build_generator
from cascade_tf.models import build_restorer
from cascade_tf.models import fold
# pylint: enable=wrong-import-position


def _randomise_batch_norm(model: keras.Model, rng: np.random.Generator) -> None:
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      n = layer.gamma.shape[0]
      layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
      layer.beta.assign(rng.normal(0, 0.1, n).astype("float32"))
      layer.moving_mean.assign(rng.normal(0, 0.1, n).astype("float32"))
      layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))


def _quartiles(values):
  q = statistics.quantiles(values, n=4)
  return q[0], statistics.median(values), q[2]


def _measure(args):
  """{path: images/s per round}, {path: max |output - plain|}: the paths side by side."""
  if args.weights == "pretrained":
    shipped = pretrained.load()
    cfg, generator, restorer = shipped.config, shipped.generator, shipped.restorer
  else:
    cfg = config_lib.get_preset(args.preset)
    keras.utils.set_random_seed(0)
    generator = build_generator(cfg.generator, cfg.data.image_size)
    restorer = build_restorer(cfg.restorer, cfg.data.image_size)
    rng = np.random.default_rng(0)
    for seed, network in enumerate((generator, restorer)):
      _randomise_batch_norm(network, rng)
      bench.randomise_biases(network, seed)
  size = cfg.data.image_size
  mixed = args.precision.startswith("mixed_")

  def copies(network):
    kept = {"plain": network, "folded": fold.fold_batch_norm(network)}
    if mixed:
      kept["folded_float32_weights"] = fold.fold_batch_norm(network,
                                                           weights_in_compute_dtype=False)
    return kept

  if args.network == "cascade":
    spec = tf.TensorSpec([args.batch_size, size, size, 3], tf.float32)
    models = {name: build_cascade(g, r, composite=cfg.generator.composite) for (name, g), r in
              zip(copies(generator).items(), copies(restorer).values())}
    # Every path takes [0, 1] images and returns the restored image in [0, 1].
    calls = {name: tf.function(
        lambda x, m=model: ranges.from_model(m(cascade_inputs(ranges.to_model(x)),
                                               training=False)["restored"],
                                             clip=True), input_signature=[spec])
             for name, model in models.items()}
    x = tf.random.stateless_uniform(spec.shape, [0, 1])
  else:
    # One network on a random batch on [-1, 1], run as the cascade runs it
    # (`cascade.forward`: a mask-channel generator gets a hole mask too).
    x = tf.random.stateless_uniform([args.batch_size, size, size, 3], [0, 1], -1.0, 1.0)
    mask = tf.cast(tf.random.stateless_uniform([args.batch_size, size, size, 1], [0, 2]) > 0.7,
                   tf.float32)
    spec = tf.TensorSpec(x.shape, tf.float32)
    role, output = (("generator", "inpainted") if args.network == "generator"
                    else ("restorer", "restored"))
    calls = {name: tf.function(lambda t, m=model: tf.cast(cascade_lib.forward(
        t, mask=mask, training=False, **{role: m})[output], tf.float32), input_signature=[spec])
             for name, model in copies(generator if role == "generator" else restorer).items()}
  if args.frozen:
    calls["folded_frozen"] = inference.freeze(calls["folded"], spec)
  with tempfile.TemporaryDirectory(prefix="cascade_infer_ab_") as workdir:
    if not mixed and args.network == "cascade":
      serve = bench.export_and_load(cfg, generator, restorer, workdir, serving)
      calls["savedmodel"] = lambda t: serve(images=t)["restored"]
      if args.frozen:
        serve_frozen = bench.export_and_load(cfg, generator, restorer, workdir, serving,
                                             freeze=True)
        calls["savedmodel_frozen"] = lambda t: serve_frozen(images=t)["restored"]
    outputs = {name: call(x).numpy() for name, call in calls.items()}
    differences = {name: float(np.abs(out - outputs["plain"]).max())
                   for name, out in outputs.items() if name != "plain"}
    for _ in range(args.warmup):
      for call in calls.values():
        call(x).numpy()
    names = list(calls)
    rates = {name: [] for name in names}
    for i in range(args.rounds):
      order = names[i % len(names):] + names[:i % len(names)]  # Rotate who goes first.
      for name in order:
        start = time.perf_counter()
        calls[name](x).numpy()
        rates[name].append(args.batch_size / (time.perf_counter() - start))
  return rates, differences


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="paper", choices=sorted(config_lib.PRESETS))
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--rounds", type=int, default=30)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--precision", default="float32", choices=sorted(config_lib.POLICIES),
                      help="The Keras dtype policy the Keras paths compute in.")
  parser.add_argument("--network", default="cascade", choices=("cascade", "generator",
                                                                "restorer"),
                      help="Time the cascade, or one of its networks alone.")
  parser.add_argument("--weights", default="random", choices=("random", "pretrained"),
                      help="Randomised networks of --preset, or the shipped cascade's "
                           "(its own preset, photo; --preset is then ignored).")
  parser.add_argument("--frozen", action="store_true",
                      help="Add folded_frozen: the folded graph with its variables as constants "
                           "(and savedmodel_frozen: the export frozen likewise).")
  args = parser.parse_args(argv)
  if args.rounds < 4 or args.batch_size < 1:
    raise SystemExit(f"--rounds={args.rounds} must be >= 4 and --batch_size >= 1.")
  with runtime.precision_scope(args.precision):
    rates, differences = _measure(args)
  names = list(rates)
  # The cascade's outputs are images on [0, 1]; a network's are raw, on [-1, 1].
  scale = "[0, 1]" if args.network == "cascade" else "[-1, 1]"
  print(bench.machine_line())
  preset = "photo (the shipped weights)" if args.weights == "pretrained" else args.preset
  print(f"preset {preset}, {args.network}, precision {args.precision}, "
        f"batch {args.batch_size}, {args.rounds} rounds, TensorFlow {tf.__version__}; "
        f"max |output - plain| in {scale}: {json.dumps(differences)}\n")
  print("| path | img/s median | lower quartile | upper quartile | ratio to folded, per round "
        "(median [quartiles]) |")
  print("|---|---|---|---|---|")
  for name in names:
    low, mid, high = _quartiles(rates[name])
    ratio = _quartiles([a / b for a, b in zip(rates[name], rates["folded"])])
    print(f"| {name} | {mid:.3g} | {low:.3g} | {high:.3g} | {ratio[1]:.3f} "
          f"[{ratio[0]:.3f}–{ratio[2]:.3f}] |")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
