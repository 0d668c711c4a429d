"""Loading a trained cascade for inference, from a workdir or a SavedModel.

`load_cascade(source)` loads the shipped cascade for `pretrained`
(`cascade_tf.pretrained`, checksums verified) and otherwise a workdir:
`load_workdir_cascade(workdir)` rebuilds the networks from the workdir's
config.json and restores the most complete weights it has: the `joint`
stage when it exists, otherwise the generator of `gan` (or `pretrain`)
and the restorer of `dd`, then folds every batch norm into the convolution
before it (`models/fold.py`: the same function in fewer passes, faster on
the CPU as docs/benchmarks.md measures).
`Repairer` wraps either a workdir or an exported
SavedModel version directory behind one call on [0, 1] images, so
evaluation and the restore command treat both alike. For a workdir (or
`pretrained`) it runs the cascade in one tf.function for any batch and
size; `freeze=True` runs it as a frozen graph instead (`freeze`), its
weights constants: up to 1.2x faster for the `paper` generator, but
many times the weights' size in memory (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Sequence

from absl import logging
import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-direct-tensorflow-import

from cascade_tf import config as config_lib
from cascade_tf import pretrained
from cascade_tf import ranges
from cascade_tf import runtime
from cascade_tf.models import cascade as cascade_lib
from cascade_tf.models import fold
from cascade_tf.models import generator as generator_lib
from cascade_tf.models import restorer as restorer_lib

# Where each network is taken from, most trained first.
# Written by export.py into each SavedModel version: the training config,
# where the weights came from, the signatures.
PROVENANCE_FILE = os.path.join("assets.extra", "cascade_tf.json")
_WEIGHT_SOURCES = {"generator": ("joint", "gan", "pretrain"), "restorer": ("joint", "dd")}
# A cascade call's inputs, any batch and size: images [B, H, W, 3] and hole masks [B, H, W, 1].
BATCH_SPECS = (tf.TensorSpec([None, None, None, 3], tf.float32),
               tf.TensorSpec([None, None, None, 1], tf.float32))


@dataclasses.dataclass
class LoadedCascade:
  """A cascade rebuilt from a workdir, with where its weights came from."""

  config: config_lib.Config
  model: keras.Model  # corrupted [-1, 1] -> {"inpainted", "restored"} in [-1, 1].
  generator: keras.Model
  restorer: keras.Model
  weights_from: dict[str, str]  # network -> checkpoint path (or "random").
  precision: str = "float32"  # The Keras policy the networks compute in.
  self_ensemble: int = 1  # Symmetries of its input `model` runs each network on.


def load_config(workdir: str) -> config_lib.Config:
  """Reads WORKDIR/config.json; ValueError naming the workdir if it is not one."""
  path = os.path.join(workdir, "config.json")
  if not tf.io.gfile.isdir(workdir):
    raise ValueError(f"--workdir={workdir} does not exist.")
  if not tf.io.gfile.exists(path):
    raise ValueError(f"--workdir={workdir} has no config.json: is it a cascade_tf training "
                     "workdir (python train.py --workdir=...)?")
  with tf.io.gfile.GFile(path) as f:
    return config_lib.from_json(f.read())


def _restore(network: keras.Model, name: str, path: str) -> bool:
  """Restores `network` from `path` if that checkpoint holds it; else False."""
  status = tf.train.Checkpoint(**{name: network}).restore(path).expect_partial()
  try:
    status.assert_existing_objects_matched()
  except AssertionError:
    return False
  return True


def load_workdir_cascade(workdir: str, *, stage: str | None = None,
                         allow_random_restorer: bool = False,
                         fold_batch_norm: bool = True,
                         precision: str = "float32", self_ensemble: int = 1) -> LoadedCascade:
  """Rebuilds the cascade of `workdir` with its best available weights.

  Args:
    workdir: a training workdir (config.json and <stage>/checkpoints/).
    stage: take both networks from this stage only (e.g. "joint");
      default: the most trained checkpoint of each network.
    allow_random_restorer: when no stage trained a restorer, keep a
      randomly initialised one instead of failing (for "Only GAN", which
      is scored on the generator's output alone).
    fold_batch_norm: return inference copies of the networks with batch
      norm folded into the convolutions (`models.fold`); False returns the
      networks as trained (needed to train them further: the folded copies
      no longer normalise with batch statistics when training=True).
    precision: the Keras dtype policy the networks compute in, or `auto`
      (`runtime.resolve_precision` for inference); the outputs are float32
      under every policy. The folded copies store a mixed policy's weights
      in its compute dtype (`fold.fold_batch_norm`: no cast per call); the
      unfolded networks keep float32 weights.
    self_ensemble: the returned `model` runs each network on this many
      symmetries of its input and averages (`cascade.forward`); the
      networks returned alone are untouched.

  Raises:
    ValueError: naming the workdir and the missing stage, or a
      self_ensemble not in cascade.SELF_ENSEMBLE_SIZES.
  """
  cascade_lib.check_self_ensemble(self_ensemble)
  with _precision(precision):
    return _load_workdir(workdir, stage, allow_random_restorer, fold_batch_norm, self_ensemble)


@contextlib.contextmanager
def _precision(precision: str):
  """Networks built inside compute in `precision` (resolved for inference; logged if not float32)."""
  policy, reason = runtime.resolve_precision(precision, "infer")
  if policy != "float32" or precision != policy:
    logging.info("Inference precision: %s (%s).", policy, reason)
  with runtime.precision_scope(policy):
    yield policy


def _load_workdir(workdir, stage, allow_random_restorer, fold_batch_norm,
                  self_ensemble) -> LoadedCascade:
  cfg = load_config(workdir)
  generator = generator_lib.build_generator(cfg.generator, None)
  restorer = restorer_lib.build_restorer(cfg.restorer, None)
  networks = {"generator": generator, "restorer": restorer}
  weights_from = {}
  for name, candidates in _WEIGHT_SOURCES.items():
    if stage is not None:
      candidates = (stage,)
    path = None
    for candidate in candidates:
      candidate_path = tf.train.latest_checkpoint(
          os.path.join(workdir, candidate, "checkpoints"))
      if candidate_path and _restore(networks[name], name, candidate_path):
        path = candidate_path
        break
    if path is None:
      if name == "restorer" and allow_random_restorer:
        weights_from[name] = "random"
        continue
      raise ValueError(
          f"--workdir={workdir} has no checkpoint with a trained {name} (looked in "
          f"{', '.join(candidates)}). Train it first: python train.py --stage={candidates[-1]} "
          f"--workdir={workdir}")
    weights_from[name] = path
  logging.info("Loaded cascade from %s: %s", workdir, weights_from)
  return _assemble(cfg, generator, restorer, weights_from, fold_batch_norm, self_ensemble)


def _assemble(cfg, generator, restorer, weights_from, fold_batch_norm: bool,
              self_ensemble: int) -> LoadedCascade:
  # The policy the networks were built under: folded copies store a mixed
  # policy's weights in its compute dtype, and so name that dtype instead.
  precision = generator.dtype_policy.name
  if fold_batch_norm:
    generator, restorer = fold.fold_batch_norm(generator), fold.fold_batch_norm(restorer)
  model = cascade_lib.build_cascade(generator, restorer, composite=cfg.generator.composite,
                                    self_ensemble=self_ensemble)
  return LoadedCascade(cfg, model, generator, restorer, weights_from,
                       precision=precision, self_ensemble=self_ensemble)


def is_pretrained(source: str | None) -> bool:
  """Whether `source` names the shipped cascade (`pretrained`)."""
  return source == pretrained.NAME


def load_pretrained_cascade(*, fold_batch_norm: bool = True, precision: str = "float32",
                            self_ensemble: int = 1) -> LoadedCascade:
  """The shipped cascade (cascade_tf/pretrained), its checksums verified first.

  `precision` and `self_ensemble` as in `load_workdir_cascade`.
  """
  cascade_lib.check_self_ensemble(self_ensemble)
  with _precision(precision):
    shipped = pretrained.load()
    where = f"{pretrained.NAME} ({shipped.directory})"
    logging.info("Loaded the pretrained cascade from %s", shipped.directory)
    return _assemble(shipped.config, shipped.generator, shipped.restorer,
                     {"generator": where, "restorer": where}, fold_batch_norm, self_ensemble)


def load_cascade(source: str, **kwargs) -> LoadedCascade:
  """`load_pretrained_cascade` for `pretrained`, else `load_workdir_cascade(source, ...)`."""
  if is_pretrained(source):
    return load_pretrained_cascade(fold_batch_norm=kwargs.get("fold_batch_norm", True),
                                   precision=kwargs.get("precision", "float32"),
                                   self_ensemble=kwargs.get("self_ensemble", 1))
  return load_workdir_cascade(source, **kwargs)


def write_workdir(workdir: str, cfg: config_lib.Config, generator: keras.Model,
                  restorer: keras.Model) -> str:
  """Writes networks as a workdir that `load_workdir_cascade` reads: config.json and a
  `joint` checkpoint. For networks made outside train.py (benchmarks, tests, imports)."""
  tf.train.Checkpoint(generator=generator, restorer=restorer).save(
      os.path.join(workdir, "joint", "checkpoints", "ckpt"))
  with tf.io.gfile.GFile(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config_lib.to_json(cfg))
  return workdir


def combine(generator_source: str | Sequence[str], restorer_source: str, workdir: str) -> str:
  """Writes a workdir whose generator is `generator_source`'s and restorer `restorer_source`'s.

  Each source is a workdir or `pretrained`; the networks are taken as
  `load_cascade` finds them (unfolded), and a generator-only workdir (only
  `pretrain` trained) is fine. Several generator sources (a sequence, or
  `a,b,c`) are averaged weight by weight, batch-norm statistics included
  (a uniform "model soup", Wortsman et al. 2022): for generators fine-tuned
  from one start, which stay in one basin of the loss, the average costs
  what one does at inference and can score above each member (it did for
  two about equally good runs, and fell between members of unequal
  quality: docs/training.md, "Eighth sitting"); they must share one
  architecture. config.json is the (first) generator source's, with the
  restorer's section and its `dd_*` training settings taken from the
  restorer source; `combined_from.json` records the sources. This is how
  a generator fine-tuned alone is scored, or shipped, with a restorer of
  another run (`scripts/combine_cascade.py`).

  Raises:
    ValueError: when `workdir` already holds a workdir (config.json), a source fails
      to load, or the generators to average differ in architecture.
  """
  if isinstance(generator_source, str):
    generator_source = [name for name in generator_source.split(",") if name]
  generator_sources = list(generator_source)
  if not generator_sources:
    raise ValueError("--generator: name at least one workdir or 'pretrained'.")
  if tf.io.gfile.exists(os.path.join(workdir, "config.json")):
    raise ValueError(f"--output={workdir} already holds a workdir (config.json); choose a new "
                     "directory.")
  members = [load_cascade(source, fold_batch_norm=False, allow_random_restorer=True)
             for source in generator_sources]
  with_generator = members[0]
  if len(members) > 1:
    _average_into(with_generator.generator, members, generator_sources)
  with_restorer = load_cascade(restorer_source, fold_batch_norm=False)
  restorer_train = {f.name: getattr(with_restorer.config.train, f.name)
                    for f in dataclasses.fields(with_restorer.config.train)
                    if f.name.startswith("dd_")}
  cfg = dataclasses.replace(
      with_generator.config, restorer=with_restorer.config.restorer,
      train=dataclasses.replace(with_generator.config.train, **restorer_train))
  write_workdir(workdir, cfg, with_generator.generator, with_restorer.restorer)
  weights = [member.weights_from["generator"] for member in members]
  with tf.io.gfile.GFile(os.path.join(workdir, "combined_from.json"), "w") as f:
    json.dump({"generator": {"source": ",".join(generator_sources),
                             "weights": weights[0] if len(weights) == 1 else weights,
                             "averaged_over": len(weights)},
               "restorer": {"source": restorer_source,
                            "weights": with_restorer.weights_from["restorer"]}}, f, indent=2)
  return workdir


def _average_into(target: keras.Model, members: Sequence[LoadedCascade],
                  sources: Sequence[str]) -> None:
  """Sets `target`'s weights to the mean of the members' generators' (float64 sums)."""
  first = members[0].config.generator
  for member, source in zip(members[1:], sources[1:]):
    if member.config.generator != first:
      raise ValueError(f"--generator: {source}'s generator ({member.config.generator}) is not "
                       f"{sources[0]}'s ({first}); only generators of one architecture can be "
                       "averaged.")
  per_member = [member.generator.get_weights() for member in members]
  target.set_weights([
      np.mean([weights[i].astype(np.float64) for weights in per_member], axis=0).astype(
          per_member[0][i].dtype) for i in range(len(per_member[0]))])


def list_versions(export_dir: str) -> list[int]:
  """The integer-named version folders in `export_dir`, ascending."""
  if not tf.io.gfile.isdir(export_dir):
    return []
  names = [name.rstrip("/") for name in tf.io.gfile.listdir(export_dir)]
  return sorted(int(name) for name in names
                if name.isdigit() and tf.io.gfile.isdir(os.path.join(export_dir, name)))


def read_provenance(savedmodel_dir: str) -> dict | None:
  """The `assets.extra/cascade_tf.json` of an export, or None if it has none."""
  path = os.path.join(savedmodel_dir, PROVENANCE_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def resolve_model(path: str) -> str:
  """A SavedModel version folder, a workdir or `pretrained`, from what the user passed.

  `path` may be a version folder (holds saved_model.pb), an export base
  folder (its largest version is used), a training workdir (holds
  config.json) or `pretrained`. ValueError naming `--model` otherwise.
  """
  if is_pretrained(path) or tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
    return path
  if tf.io.gfile.exists(os.path.join(path, "config.json")):
    return path
  versions = [v for v in list_versions(path)
              if tf.io.gfile.exists(os.path.join(path, str(v), "saved_model.pb"))]
  if versions:
    return os.path.join(path, str(versions[-1]))
  raise ValueError(f"--model={path}: expected a SavedModel version folder (with saved_model.pb), "
                   "an export folder with numbered versions (python export.py --export_dir=...), "
                   f"a training workdir (with config.json) or {pretrained.NAME!r}.")


def savedmodel_config(savedmodel_dir: str) -> config_lib.Config | None:
  """The training config that export.py recorded in a SavedModel, if any."""
  provenance = read_provenance(savedmodel_dir)
  if provenance is None or "config" not in provenance:
    return None
  return config_lib.from_dict(provenance["config"])


def freeze(fn, *specs: tf.TensorSpec):
  """`fn` traced for `specs`, with every variable it reads turned into a constant.

  Returns a function of tensors matching `specs`, with `fn`'s output
  structure, that computes what `fn` computes (to float rounding: TensorFlow
  may pick other fused kernels) with the weights of the moment it was
  frozen; later changes to the variables do not reach it. Paired on two
  CPUs (docs/benchmarks.md, "Frozen inference graphs"), the `paper`
  generator ran 1.2x (float32, AVX2) and 1.4x (bfloat16) faster frozen, the
  `paper` cascade 1.0-1.1x, the shipped cascade as fast as before; that fits
  oneDNN keeping a constant kernel in its blocked layout where it reorders
  a variable's at every call. It costs memory: the shipped cascade's
  process held 1,653 MiB frozen against 962 unfrozen after four batches,
  the `paper` cascade's 4,739 against 1,622 (docs/benchmarks.md, "Freezing's
  memory cost"), so inference runs unfrozen by default. A bias that is
  exactly zero everywhere, as a freshly built layer's, is folded away as a
  constant, and the convolution then runs unfused; a trained network's
  biases are not zero.
  """
  concrete = tf.function(fn).get_concrete_function(*specs)
  frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
  structure = concrete.structured_outputs  # The frozen function returns the flat list.
  return lambda *args: tf.nest.pack_sequence_as(structure, frozen(*args))


def _one_graph(fn, specs, frozen: bool):
  """`fn` as one graph for every input matching `specs` (no retracing per batch or size):
  frozen (`freeze`) or a tf.function reading the variables."""
  return freeze(fn, *specs) if frozen else tf.function(fn, input_signature=specs)


class Repairer:
  """One call, [0, 1] images (and optionally hole masks) in, {"inpainted", "restored"} out.

  `source` is a training workdir, `pretrained` (the shipped cascade) or
  an exported SavedModel version directory (export.py's `<export_dir>/<N>`). Inputs are float32 [B, H, W,
  3]; H and W must be multiples of 32 for a workdir model (the SavedModel
  pads internally). Masks are float32 [B, H, W, 1], 1 in the hole (whose
  pixels the caller has filled); without them no pixel is a hole. A
  SavedModel exported before the masked signature existed ignores them.
  `config` is the training config: the workdir's, or the one export.py
  recorded in the SavedModel (None for other SavedModels). `precision`
  (a policy or `auto`) is the networks' compute precision for a workdir or
  `pretrained`; `self.precision` the policy it resolved to. `self_ensemble`
  (`cascade.forward`) likewise; a SavedModel runs as it was exported
  (export.py --self_ensemble), and asking it for more is a ValueError.
  `freeze` runs a workdir's cascade frozen (`freeze`: faster for some
  networks, much more memory); a SavedModel runs as exported.
  """

  def __init__(self, source: str, precision: str = "float32", self_ensemble: int = 1,
               freeze: bool = False):
    self.source = source
    self.precision = "float32"  # A SavedModel computes in the precision it was exported in.
    self.frozen = False  # A SavedModel runs as exported (export.py --freeze).
    cascade_lib.check_self_ensemble(self_ensemble)
    self.self_ensemble = self_ensemble
    if tf.io.gfile.exists(os.path.join(source, "saved_model.pb")):
      if self_ensemble != 1:
        raise ValueError(f"--self_ensemble={self_ensemble}: {source} is a SavedModel, which "
                         "runs as it was exported; export it with python export.py "
                         f"--self_ensemble={self_ensemble} instead.")
      self._saved = tf.saved_model.load(source)
      self._serve = self._saved.signatures["serving_default"]
      self._serve_masked = self._saved.signatures.get("serving_masked")
      self.kind = "savedmodel"
      self.config = savedmodel_config(source)
    else:
      loaded = load_cascade(source, precision=precision, self_ensemble=self_ensemble)
      self.precision = loaded.precision
      self._model = loaded.model
      self.config = loaded.config
      self.kind = "workdir"
      model = self._model
      call = lambda x, m: model(cascade_lib.cascade_inputs(ranges.to_model(x), m),
                                training=False)
      self.frozen = freeze
      self._call = _one_graph(call, BATCH_SPECS, freeze)

  def __call__(self, images_01, masks=None) -> dict[str, tf.Tensor]:
    images_01 = tf.convert_to_tensor(images_01, tf.float32)
    if masks is None:
      masks = tf.zeros_like(images_01[..., :1])
    masks = tf.convert_to_tensor(masks, tf.float32)
    if self.kind == "savedmodel":
      if self._serve_masked is not None:
        out = self._serve_masked(images=images_01, masks=masks)
      else:
        out = self._serve(images=images_01)
      return {"inpainted": out["inpainted"], "restored": out["restored"]}
    out = self._call(images_01, masks)
    return {k: ranges.from_model(v, clip=True) for k, v in out.items()}
