"""Scores trained cascades and the classical baselines under PROTOCOL.md.

`evaluate(data_config, options, output_dir)` is the library behind
`evaluate.py`. It

* loads the models (`ModelSpec`s: training workdirs or exported SavedModel
  version directories) under a `tf.distribute` strategy, and takes the
  evaluation image and hole size from their training configs (a workdir's
  config.json, an export's assets.extra/cascade_tf.json);
* builds the baselines of every track (`resolve_baseline_names`), with the
  defaults of `baselines.py` or params tuned on TRAINING images
  (`options.tune_baselines`), never on the test split;
* runs one deterministic pass over the test split per track
  (`pipeline.make_dataset`, seeds (eval_seed, index)), feeding every method
  the very same corrupted batch, and scores each output per image with
  `cascade_tf.metrics`;
* writes `results.json`, `results.md` and one `figure_<track>.png` per
  track into `output_dir`, and returns the results dict.

The results dict (`results.json`) is

    {"dataset": str, "n_images": int,
     "protocol": {"follows_protocol": bool, "deviations": [str], "image_size": S, ...,
                  "device": {...}, "timing": bool,
                  "mask_area": {TRACK: mean share of the image in the hole}},
     "results": {METHOD: {TRACK: {"psnr": dB, "hole_psnr": dB or null, "ssim": x,
                                  "hole_ssim": x or null, "sec_per_image": s or null}}},
     "methods": {METHOD: {"kind": "model" | "baseline", ...params, provenance}},
     "notes": [str]}

Model rows: a model named NAME (`cascade` for --workdir/--model) gives
`NAME` (the restorer's final output) and `NAME_intermediate` (the
generator's output). A workdir without a trained restorer ("Only GAN")
gives only `NAME_intermediate`. Metrics are means over the images; PSNR
and hole PSNR are rounded to 1e-4 dB and SSIM to 1e-5, so that two runs
write the same file. Seconds per image are wall-clock times (the first,
tracing call of each model is a warm-up outside the timing) and differ
from run to run; `timing=False` writes null instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from cascade_tf import cli
from cascade_tf import config as config_lib
from cascade_tf import inference
from cascade_tf import metrics
from cascade_tf import pretrained
from cascade_tf import ranges
from cascade_tf import serving as serving_lib
from cascade_tf.data import pipeline
from cascade_tf.data import sources as sources_lib
from cascade_tf.evaluation import baselines as baselines_lib
from cascade_tf.evaluation import figures
from cascade_tf.models import cascade as cascade_lib
from cascade_tf import runtime

DEFAULT_MODEL_NAME = "cascade"  # Row name of --workdir / --model.
INTERMEDIATE_SUFFIX = "_intermediate"  # Row of the generator's output.
DEFAULT = "default"  # --baselines token: each track's default baselines.
NONE = "none"  # --baselines value: no baselines.
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PSNR_DECIMALS = 4  # dB, as precise as the protocol's cross-check (1e-4 dB).
SSIM_DECIMALS = 5
# Tracks with a hole, scored also over the hole (hole PSNR and SSIM).
HOLE_TRACKS = tuple(t for t in config_lib.TRACKS if "hole" in config_lib.TRACK_CORRUPTIONS[t])

# The protocol's corruption settings: DataConfig's defaults (PROTOCOL.md).
_PROTOCOL_FIELDS = ("image_size", "hole_size", "hole_fill", "blur_kernel_size",
                    "gaussian_blur_prob", "gaussian_sigma_min", "gaussian_sigma_max",
                    "motion_length_min", "motion_length_max", "noise_sigma_min",
                    "noise_sigma_max", "small_image_rule", "eval_seed")
# Full test split sizes of the protocol's named datasets.
_PROTOCOL_TEST_SIZES = {"bsd300": 100}
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One trained model to score.

  Attributes:
    name: row name; the rows are `name` (final) and `name` + "_intermediate".
    path: a training workdir or an exported SavedModel version directory.
    flag: the command-line flag it came from, for error messages.
  """

  name: str
  path: str
  flag: str = "--workdir"


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """What `evaluate` scores and how.

  Attributes:
    tracks: protocol tracks to score, in order.
    models: the trained models (empty: baselines only).
    baselines: "default" (each track's classical methods, see
      `resolve_baseline_names`), "none", or names and chains
      ("telea+wiener_oracle"); "default" may be combined with names.
    max_images: score only the first N test images (None: all).
    batch_size: images per batch of the pipeline and the models.
    strategy: tf.distribute strategy of the models (config.STRATEGIES).
    mixed_precision: compute precision of workdir and `pretrained` models:
      a Keras policy or `auto` (`runtime.resolve_precision` for inference);
      the resolved policy is recorded in each model's info.
    self_ensemble: workdir and `pretrained` models run each network on this
      many symmetries of its input and average (`cascade.forward`; 1: as
      trained); recorded in each model's info. A SavedModel runs as it was
      exported (export.py --self_ensemble).
    freeze: workdir and `pretrained` models run as frozen graphs, their
      weights constants (`inference.freeze`, as `inference.Repairer(
      freeze=True)`; default: with variables); recorded in each model's
      info as `frozen`. The scores agree to float rounding; frozen is up to
      1.2x faster for some networks and takes many times the weights'
      size in memory (docs/benchmarks.md, "Freezing's memory cost").
    tune_baselines: tune the baselines' params on `tune_images` training
      images per track instead of using the module defaults.
    tune_images: training images per track used for tuning.
    knn_train_images: at most this many training images form the k-NN
      patch bank.
    timing: measure seconds per image (False: null, for byte-identical runs).
    figure_images: images (rows) per track figure; 0: no figures.
    progress: write a progress line to stderr.
    dump_inputs: a folder to write every track's exact inputs into, as
      `<track>/<id>_input.png`, `<id>_mask.png` (255 in the hole) and
      `<id>_clean.png` (8-bit PNGs; `id` the zero-padded image index), so
      that other tools can run on them (None: nothing written).
    externals: (name, folder) pairs: another tool's outputs
      `<folder>/<track>/<id>.png`, scored as row `name` (a track without
      its folder gets no row).
  """

  tracks: tuple[str, ...] = config_lib.TRACKS
  models: tuple[ModelSpec, ...] = ()
  baselines: tuple[str, ...] = (DEFAULT,)
  max_images: int | None = None
  batch_size: int = 16
  strategy: str = "auto"
  mixed_precision: str = config_lib.AUTO
  self_ensemble: int = 1
  freeze: bool = False
  tune_baselines: bool = False
  tune_images: int = 8
  knn_train_images: int = 200
  timing: bool = True
  figure_images: int = 4
  progress: bool = True
  dump_inputs: str | None = None
  externals: tuple[tuple[str, str], ...] = ()


# --------------------------------------------------------------------------
# Parsing and validating what to score.


def parse_tracks(text: str) -> tuple[str, ...]:
  """Parses --tracks; ValueError naming the valid tracks."""
  tracks = cli.parse_list(text, "--tracks")
  unknown = [t for t in tracks if t not in config_lib.TRACKS]
  if unknown:
    raise ValueError(f"--tracks: unknown track(s) {unknown}: expected a comma list of "
                     f"{', '.join(config_lib.TRACKS)}.")
  if len(set(tracks)) != len(tracks):
    raise ValueError(f"--tracks={text}: a track is listed twice.")
  return tracks


def parse_externals(text: str | None) -> tuple[tuple[str, str], ...]:
  """--external=NAME=DIR[,NAME=DIR...] -> ((name, folder), ...), checked."""
  if not text:
    return ()
  externals = []
  for name, folder in cli.name_value_pairs(text, "--external", "DIR"):
    if not _NAME_PATTERN.match(name) or name in baselines_lib.BASELINE_NAMES or "+" in name:
      raise ValueError(f"--external: the name {name!r} must be letters, digits, '_', '.' or "
                       "'-', and not a baseline's name.")
    if not os.path.isdir(folder):
      raise ValueError(f"--external {name}={folder}: no such folder (it should hold "
                       "<track>/<id>.png, the outputs for evaluate.py --dump_inputs's inputs).")
    externals.append((name, folder))
  return tuple(externals)


def image_id(index: int) -> str:
  """The file name stem of test image `index` in --dump_inputs and --external folders."""
  return f"{int(index):04d}"


def _to_uint8(image_01: np.ndarray) -> np.ndarray:
  return np.round(np.clip(image_01, 0.0, 1.0) * 255.0).astype(np.uint8)


def _dump_batch(directory: str, track: str, batch) -> None:
  """Writes the batch's inputs, masks and clean images of `track` as 8-bit PNGs."""
  folder = os.path.join(directory, track)
  tf.io.gfile.makedirs(folder)
  for index, corrupted, mask, clean in zip(batch["index"], batch["corrupted"], batch["mask"],
                                           batch["clean"]):
    stem = os.path.join(folder, image_id(index))
    for suffix, image in (("input", _to_uint8(corrupted)), ("clean", _to_uint8(clean)),
                          ("mask", np.where(mask > 0.5, 255, 0).astype(np.uint8))):
      with tf.io.gfile.GFile(f"{stem}_{suffix}.png", "wb") as f:
        f.write(tf.io.encode_png(image).numpy())


def _read_external(name: str, folder: str, track: str, batch) -> np.ndarray | None:
  """Tool `name`'s outputs for the batch's images, [B, S, S, 3] in [0, 1]; None when it
  has no folder for `track`."""
  track_dir = os.path.join(folder, track)
  if not os.path.isdir(track_dir):
    return None
  images = []
  for index, clean in zip(batch["index"], batch["clean"]):
    path = os.path.join(track_dir, image_id(index) + ".png")
    try:
      image = sources_lib.decode_image_file(path)
    except FileNotFoundError:
      raise ValueError(f"--external {name}={folder}: {path} is missing (every image of "
                       f"the {track} track needs an output).") from None
    except Exception as error:  # pylint: disable=broad-except
      raise ValueError(f"--external {name}={folder}: cannot read {path} "
                       f"({type(error).__name__}: {error}).") from None
    if image.shape != clean.shape:
      raise ValueError(f"--external {name}={folder}: {path} is {image.shape[1]}x"
                       f"{image.shape[0]} px; the input was {clean.shape[1]}x{clean.shape[0]}.")
    images.append(image.astype(np.float32) / 255.0)
  return np.stack(images)


def model_specs(workdir: str | None = None, model: str | None = None,
                compare: str | None = None) -> tuple[ModelSpec, ...]:
  """The models of --workdir, --model and --compare=name=PATH,..., checked.

  --workdir and --model both give the row `cascade`, so at most one of them
  may be set. --compare adds one named row pair per entry.

  Raises:
    ValueError: naming the flag, for a malformed entry, a bad or duplicate
      name, or both --workdir and --model.
  """
  if workdir and model:
    raise ValueError("--workdir and --model both name the `cascade` model: give one, or "
                     "score several side by side with --compare=name=PATH,...")
  specs = []
  if workdir:
    specs.append(ModelSpec(DEFAULT_MODEL_NAME, workdir, "--workdir"))
  if model:
    specs.append(ModelSpec(DEFAULT_MODEL_NAME, model, "--model"))
  if compare:
    for name, path in cli.name_value_pairs(compare, "--compare", "WORKDIR_OR_MODEL"):
      specs.append(ModelSpec(name, path, f"--compare {name}"))
  names = [s.name for s in specs]
  for spec in specs:
    if not _NAME_PATTERN.match(spec.name):
      raise ValueError(f"{spec.flag}: the name {spec.name!r} must be letters, digits, "
                       "'_', '.' or '-'.")
    if names.count(spec.name) > 1:
      raise ValueError(f"{spec.flag}: the name {spec.name!r} is used twice; names must be "
                       "unique.")
    if spec.name + INTERMEDIATE_SUFFIX in names:
      raise ValueError(f"{spec.flag}: the name {spec.name + INTERMEDIATE_SUFFIX!r} would be "
                       f"both a model and the intermediate row of {spec.name!r}; rename it.")
    if spec.name in baselines_lib.BASELINE_NAMES or "+" in spec.name:
      raise ValueError(f"{spec.flag}: the name {spec.name!r} is a baseline's name; pick "
                       "another.")
  return tuple(specs)


def resolve_baseline_names(tokens: Sequence[str], tracks: Sequence[str], *,
                           include_bm3d: bool | None = None,
                           knn_available: bool = False) -> dict[str, tuple[str, ...]]:
  """Which baselines run on which track.

  Args:
    tokens: "default", "none", or baseline names and chains; "default"
      expands to `baselines.default_baseline_names(track)` (plus `knn` on
      `inpaint` when `knn_available`). A name runs on the requested tracks
      it is meant for (fillers on inpaint, restorers on restore, chains on
      joint, identity on all).
    tracks: the requested tracks.
    include_bm3d: whether "default" includes BM3D; None: if installed.
    knn_available: whether a training patch bank disjoint from the test
      images exists.

  Returns:
    {track: names in order, without duplicates}.

  Raises:
    ValueError: naming --baselines, for an unknown name (listing the valid
      ones), a name meant for none of `tracks`, or "none" with other names.
  """
  tokens = tuple(tokens)
  if NONE in tokens:
    if len(tokens) > 1:
      raise ValueError(f"--baselines: 'none' cannot be combined with {list(tokens)}.")
    return {track: () for track in tracks}
  per_track: dict[str, list[str]] = {track: [] for track in tracks}
  for token in tokens:
    if token == DEFAULT:
      for track in tracks:
        names = list(baselines_lib.default_baseline_names(track, include_bm3d))
        if track == "inpaint" and knn_available:
          names.append("knn")
        per_track[track].extend(names)
      continue
    try:
      baselines_lib.default_grid(token)  # Raises ValueError naming the valid baselines.
    except ValueError as error:
      raise ValueError(f"--baselines: {error}") from None
    meant_for = baselines_lib.baseline_tracks(token)
    matched = [track for track in tracks if track in meant_for]
    if not matched:
      raise ValueError(f"--baselines: {token!r} is meant for the track(s) {list(meant_for)}, "
                       f"none of which is in --tracks={','.join(tracks)}.")
    for track in matched:
      per_track[track].append(token)
  return {track: tuple(dict.fromkeys(names)) for track, names in per_track.items()}


def _check_options(options: EvalOptions) -> None:
  if not options.tracks:
    raise ValueError("--tracks: expected at least one track.")
  for track in options.tracks:
    if track not in config_lib.TRACKS:
      raise ValueError(f"--tracks: unknown track {track!r}: expected {config_lib.TRACKS}.")
  if options.max_images is not None and options.max_images < 1:
    raise ValueError(f"--max_images={options.max_images}: must be >= 1.")
  for flag, value in (("--batch_size", options.batch_size),
                      ("--tune_images", options.tune_images),
                      ("--knn_train_images", options.knn_train_images)):
    if value < 1:
      raise ValueError(f"{flag}={value}: must be >= 1.")
  if options.figure_images < 0:
    raise ValueError(f"--figure_images={options.figure_images}: must be >= 0.")
  if options.mixed_precision not in config_lib.PRECISIONS:
    raise ValueError(f"--mixed_precision={options.mixed_precision!r}: expected one of "
                     f"{config_lib.PRECISIONS}.")
  cascade_lib.check_self_ensemble(options.self_ensemble)
  if options.strategy not in config_lib.STRATEGIES:
    raise ValueError(f"--strategy={options.strategy!r}: expected one of "
                     f"{config_lib.STRATEGIES}.")


# --------------------------------------------------------------------------
# Models.


def _is_saved_model(path: str) -> bool:
  return tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))


def _check_model_path(spec: ModelSpec) -> None:
  """Raises ValueError naming the flag unless `spec.path` holds a model."""
  if inference.is_pretrained(spec.path):
    if not pretrained.available():
      raise ValueError(f"{spec.flag}={spec.path}: no pretrained cascade ships in "
                       f"{pretrained.DIRECTORY} (no {pretrained.SUMS_FILE}).")
    return
  if not tf.io.gfile.isdir(spec.path):
    raise ValueError(f"{spec.flag}={spec.path} does not exist.")
  if _is_saved_model(spec.path):
    return
  versions = sorted((d.rstrip("/") for d in tf.io.gfile.listdir(spec.path)
                     if d.rstrip("/").isdigit() and _is_saved_model(os.path.join(spec.path, d))),
                    key=int)
  hint = (f" It holds the SavedModel versions {versions}: pass one of them, e.g. "
          f"{os.path.join(spec.path, versions[-1])}." if versions else "")
  if spec.flag == "--model":
    raise ValueError(f"--model={spec.path} has no saved_model.pb: pass an exported SavedModel "
                     f"version directory (export.py's EXPORT_DIR/N).{hint}")
  if not tf.io.gfile.exists(os.path.join(spec.path, "config.json")):
    raise ValueError(f"{spec.flag}={spec.path} is neither a training workdir (no config.json) "
                     f"nor a SavedModel (no saved_model.pb).{hint}")


class _ModelRunner:
  """A loaded model that maps a numpy batch to its rows' outputs and times.

  Inference runs as `strategy.run` inside one tf.function per network: the
  batch is split across the replicas and the outputs gathered back in order.
  A workdir's (or `pretrained`'s) networks run frozen when `freeze` is set:
  each replica runs one graph whose weights are constants.
  """

  def __init__(self, spec: ModelSpec, strategy: tf.distribute.Strategy,
               precision: str = "float32", self_ensemble: int = 1, freeze: bool = False):
    self.spec = spec
    self.strategy = strategy
    self.precision = precision
    self.self_ensemble = self_ensemble
    self.freeze = freeze
    self.final_row = spec.name
    self.intermediate_row = spec.name + INTERMEDIATE_SUFFIX
    self.info: dict[str, Any] = {"kind": "model", "path": spec.path}
    _check_model_path(spec)
    if not inference.is_pretrained(spec.path) and _is_saved_model(spec.path):
      self._init_saved_model()
    else:
      self._init_workdir()

  def _init_saved_model(self):
    # export.py records the training config; without it the model is run at
    # the requested size (a SavedModel takes any size: it pads internally).
    self.config = None
    provenance = inference.read_provenance(self.spec.path)
    if provenance is not None:
      if "config" in provenance:
        self.config = config_lib.from_dict(provenance["config"])
        self.info.update(weights_from=provenance.get("weights_from"),
                         preset=self.config.preset, image_size=self.config.data.image_size,
                         hole_size=self.config.data.hole_size)
    exported_ensemble = (provenance or {}).get("self_ensemble", 1)
    if self.self_ensemble != 1:
      raise ValueError(f"--self_ensemble={self.self_ensemble}: {self.spec.flag}={self.spec.path} "
                       "is a SavedModel, which runs as it was exported (self-ensemble "
                       f"{exported_ensemble}); export it with python export.py "
                       f"--self_ensemble={self.self_ensemble} instead.")
    self.info["self_ensemble"] = exported_ensemble
    try:
      with self.strategy.scope():
        loaded = tf.saved_model.load(self.spec.path)
    except (OSError, ValueError, tf.errors.OpError) as error:
      raise ValueError(f"{self.spec.flag}={self.spec.path}: cannot load the SavedModel "
                       f"({str(error).splitlines()[0]}).") from None
    if "serving_default" not in loaded.signatures:
      raise ValueError(f"{self.spec.flag}={self.spec.path}: the SavedModel has no "
                       "serving_default signature; export it with export.py.")
    self._saved = loaded  # Keeps the variables alive.
    serve = loaded.signatures["serving_default"]
    self.has_restorer = True
    self.info.update(format="savedmodel", timing="one call computes both rows; both get "
                     "its time")

    masked = loaded.signatures.get(serving_lib.SIGNATURE_MASKED)

    def both(images_01, masks):
      # A SavedModel exported before the masked signature existed takes the
      # holes as they are in the pixels.
      out = (masked(images=images_01, masks=masks) if masked is not None
             else serve(images=images_01))
      return out["inpainted"], out["restored"]

    self._both = self._distributed(both)
    self._generator = self._restorer = None

  def _init_workdir(self):
    with self.strategy.scope():
      loaded = inference.load_cascade(self.spec.path, allow_random_restorer=True,
                                      precision=self.precision)
    self.config = loaded.config
    self.info["precision"] = loaded.precision
    self.info["self_ensemble"] = self.self_ensemble
    self.has_restorer = loaded.weights_from.get("restorer") != "random"
    self.info.update(format=("pretrained" if inference.is_pretrained(self.spec.path)
                             else "workdir"), weights_from=dict(loaded.weights_from),
                     preset=loaded.config.preset,
                     image_size=loaded.config.data.image_size,
                     hole_size=loaded.config.data.hole_size)
    generator, restorer = loaded.generator, loaded.restorer
    composite = loaded.config.generator.composite
    ensemble = self.self_ensemble
    self.info["frozen"] = self.freeze
    # The cascade's `forward`, in two calls so that each row is timed: the
    # restorer takes the generator's raw [-1, 1] output, exactly as in the
    # cascade model; only the scored images are clipped to [0, 1].
    fill = lambda images_01, masks: cascade_lib.forward(
        ranges.to_model(images_01), generator, mask=masks, composite=composite,
        training=False, self_ensemble=ensemble)["inpainted"]
    restore = lambda inpainted, masks: cascade_lib.forward(
        inpainted, restorer=restorer, training=False, self_ensemble=ensemble)["restored"]
    if self.freeze:
      # Frozen once, outside the replicas (a mirrored variable reads as its
      # primary copy, which all copies equal); each replica runs the constants.
      with self.strategy.scope():
        fill, restore = (inference.freeze(fn, *inference.BATCH_SPECS) for fn in (fill, restore))
    self._generator = self._distributed(fill)
    self._restorer = self._distributed(restore)
    self._both = None

  def _distributed(self, fn):
    """fn on a batch, split across the replicas and gathered back in order.

    Every replica receives the whole batch and keeps its contiguous slice,
    so the compiled function takes a plain tensor and is traced once for
    any batch size; the last replicas get empty slices when the batch is
    smaller than the number of replicas.
    """
    strategy = self.strategy

    def replica_fn(images, masks):
      context = tf.distribute.get_replica_context()
      per_replica = -(-tf.shape(images)[0] // context.num_replicas_in_sync)
      start = context.replica_id_in_sync_group * per_replica
      return fn(images[start:start + per_replica], masks[start:start + per_replica])

    @tf.function(input_signature=inference.BATCH_SPECS)
    def step(images, masks):
      outputs = strategy.run(replica_fn, args=(images, masks))
      return tf.nest.map_structure(lambda value: strategy.gather(value, axis=0), outputs)

    return step

  def __call__(self, images_01: np.ndarray,
               masks: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Runs the batch with its hole masks ([B, H, W, 1], 1 in the hole); returns
    ({row: [B, H, W, 3] in [0, 1]}, {row: seconds})."""
    start = time.perf_counter()
    images = tf.constant(images_01, tf.float32)
    masks = tf.constant(masks, tf.float32)
    if self._both is not None:
      inpainted, restored = self._both(images, masks)
      outputs = {self.intermediate_row: inpainted.numpy(), self.final_row: restored.numpy()}
      seconds = time.perf_counter() - start
      return ({row: np.clip(image, 0.0, 1.0) for row, image in outputs.items()},
              {row: seconds for row in outputs})
    inpainted_pm1 = self._generator(images, masks)
    outputs = {self.intermediate_row: ranges.from_model(inpainted_pm1, clip=True).numpy()}
    seconds = {self.intermediate_row: time.perf_counter() - start}
    if self.has_restorer:
      restored = ranges.from_model(self._restorer(inpainted_pm1, masks), clip=True).numpy()
      outputs[self.final_row] = restored
      seconds[self.final_row] = time.perf_counter() - start
    return outputs, seconds

  @property
  def rows(self) -> tuple[str, ...]:
    return (self.intermediate_row,) + ((self.final_row,) if self.has_restorer else ())


def _eval_data_config(data_cfg: config_lib.DataConfig, runners: Sequence[_ModelRunner],
                      notes: list[str]) -> config_lib.DataConfig:
  """The requested data config, at the models' training image and hole size."""
  sizes = {(r.config.data.image_size, r.config.data.hole_size): r.spec
           for r in runners if r.config is not None}
  if len(sizes) > 1:
    listing = ", ".join(f"{spec.name}: {s}px/hole {h}px" for (s, h), spec in sizes.items())
    raise ValueError(f"--compare: the models were trained at different image sizes ({listing}) "
                     "and cannot be scored on identical inputs; compare models of one size.")
  if not sizes:
    return data_cfg
  (image_size, hole_size), spec = next(iter(sizes.items()))
  if (image_size, hole_size) != (data_cfg.image_size, data_cfg.hole_size):
    notes.append(f"Evaluated at the model's image size {image_size} px with a {hole_size}-px "
                 f"hole ({spec.flag}={spec.path}), not the requested {data_cfg.image_size} px "
                 f"/ {data_cfg.hole_size} px.")
    data_cfg = dataclasses.replace(data_cfg, image_size=image_size, hole_size=hole_size)
    config_lib.validate(config_lib.Config(data=data_cfg))
  return data_cfg


# --------------------------------------------------------------------------
# Data.


def _load_source(data_cfg: config_lib.DataConfig, split: str) -> sources_lib.ImageSource:
  source = sources_lib.load_source(data_cfg, split)
  if source.num_images is not None and source.num_images < 1:
    where = f" in --image_dir={data_cfg.image_dir}" if data_cfg.dataset == "folder" else ""
    raise ValueError(f"--dataset={data_cfg.dataset}: the {split} split has no images{where}.")
  return source


def _numpy_batches(data_cfg, source, track, batch_size, max_images, split="test"):
  dataset = pipeline.make_dataset(data_cfg, split=split, track=track, batch_size=batch_size,
                                  training=False, max_images=max_images, source=source)
  return dataset.as_numpy_iterator()


def _examples(batch: Mapping[str, np.ndarray], track: str, with_clean: bool = False):
  """Splits a numpy batch into the per-image example dicts of baselines.py."""
  keys = ("corrupted", "mask", "blur_kernel", "noise_sigma") + (("clean",) if with_clean else ())
  return [{**{k: batch[k][i] for k in keys}, "track": track}
          for i in range(len(batch["corrupted"]))]


def _decode_id(value) -> str:
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _train_images(data_cfg, train_source, test_ids: set[str], limit: int):
  """Up to `limit` training images not among the test ids, [N, S, S, 3] in [0, 1]."""
  images = []
  for batch in _numpy_batches(data_cfg, train_source, "inpaint", 32, limit, split="train"):
    for clean, image_id in zip(batch["clean"], batch["id"]):
      if _decode_id(image_id) not in test_ids:
        images.append(clean)
  if not images:
    return None
  return np.stack(images)


def _test_ids(test_source, max_images) -> set[str]:
  dataset = test_source.dataset.map(lambda e: e["id"])
  if max_images is not None:
    dataset = dataset.take(max_images)
  return {_decode_id(i) for i in dataset.as_numpy_iterator()}


# --------------------------------------------------------------------------
# Baselines.


def _build_baselines(names_per_track, data_cfg, train_source, train_images,
                     options: EvalOptions, notes: list[str]):
  """Builds every baseline once; returns ({name: Baseline}, {name: info})."""
  names = list(dict.fromkeys(n for names in names_per_track.values() for n in names))
  params: dict[str, Any] = {}
  for name in names:
    if "knn" in name.split("+"):
      knn_params = {"hole_size": data_cfg.hole_size}
      params[name] = {"knn": knn_params} if "+" in name else knn_params
  tuned: dict[str, str] = {}
  if options.tune_baselines:
    tuned = _tune(names_per_track, data_cfg, train_source, options, params, notes)
  try:
    built = baselines_lib.get_baselines(names, params=params, train_images=train_images)
  except ImportError as error:
    raise ValueError(f"--baselines: {error}") from None
  info = {}
  for baseline in built:
    info[baseline.name] = {
        "kind": "baseline", "oracle": baseline.oracle, "params": dict(baseline.params),
        "params_from": tuned.get(baseline.name,
                                 "defaults of cascade_tf/evaluation/baselines.py (tuned there "
                                 "on BSDS300 train images)"),
    }
    if "knn" in baseline.name.split("+"):
      info[baseline.name]["knn_bank_images"] = int(len(train_images))
  return {b.name: b for b in built}, info


def _tune(names_per_track, data_cfg, train_source, options: EvalOptions,
          params: dict[str, Any], notes: list[str]) -> dict[str, str]:
  """Tunes each baseline with a grid on TRAINING images; fills `params`."""
  # Other seeds than the test's, so that the tuning corruptions differ even
  # where the train and test splits share their photos (samples, folder).
  tune_cfg = dataclasses.replace(data_cfg, eval_seed=data_cfg.eval_seed + 1)
  provenance = {}
  for track, names in names_per_track.items():
    grid_names = [n for n in names
                  if "knn" not in n.split("+") and baselines_lib.default_grid(n)]
    if not grid_names:
      continue
    examples = []
    for batch in _numpy_batches(tune_cfg, train_source, track, options.tune_images,
                                options.tune_images, split="train"):
      examples.extend(_examples(batch, track, with_clean=True))
    for name in grid_names:
      try:
        params[name] = baselines_lib.tune_baseline(name, examples, base_params=params.get(name))
      except ImportError as error:
        raise ValueError(f"--baselines: {error}") from None
      provenance[name] = (f"tuned on {len(examples)} images of the train split ({track} "
                          f"track, eval_seed {tune_cfg.eval_seed}), grid "
                          f"{json.dumps(baselines_lib.default_grid(name))}")
  if any("knn" in n.split("+") for names in names_per_track.values() for n in names):
    notes.append("knn keeps its default params: tuning it on training images would match "
                 "each image to itself in the bank.")
  return provenance


# --------------------------------------------------------------------------
# Scoring.


def _score(clean: np.ndarray, output: np.ndarray, mask: np.ndarray, track: str):
  """Per-image metrics: {"psnr", "ssim"} and on hole tracks {"hole_psnr", "hole_ssim"}, [B]."""
  scores = {"psnr": metrics.psnr(clean, output).numpy(),
            "ssim": metrics.ssim(clean, output).numpy()}
  if track in HOLE_TRACKS:
    scores["hole_psnr"] = metrics.hole_psnr(clean, output, mask).numpy()
    scores["hole_ssim"] = metrics.hole_ssim(clean, output, mask).numpy()
  return scores


def _mean(values: list[np.ndarray], decimals: int) -> float | None:
  mean = float(np.mean(np.concatenate(values).astype(np.float64)))
  return round(mean, decimals) if math.isfinite(mean) else None


class _Progress:
  """One self-overwriting stderr line per track (a plain line per 10% off a tty)."""

  def __init__(self, track: str, total: int | None, enabled: bool):
    self.track, self.total, self.enabled = track, total, enabled
    self.start = time.perf_counter()
    self.tty = enabled and sys.stderr.isatty()
    self.last_tenth = -1
    self.last_printed = -1

  def update(self, done: int, final: bool = False) -> None:
    if not self.enabled:
      return
    elapsed = time.perf_counter() - self.start
    total = self.total if self.total is not None else "?"
    bar = ""
    if self.total:
      filled = int(20 * min(done, self.total) / self.total)
      bar = "[" + "#" * filled + "." * (20 - filled) + "] "
    line = f"evaluate {self.track:<7} {bar}{done}/{total} images {elapsed:6.1f} s"
    if self.tty:
      sys.stderr.write("\r" + line + ("\n" if final else ""))
      sys.stderr.flush()
      return
    tenth = int(10 * done / self.total) if self.total else 0
    if (final and done != self.last_printed) or (not final and tenth > self.last_tenth):
      self.last_tenth, self.last_printed = tenth, done
      print(line, file=sys.stderr, flush=True)


def _evaluate_track(track, data_cfg, test_source, runners, track_baselines,
                    options: EvalOptions, total_images: int | None):
  """One pass over the test split; returns (rows, n_images, figure panels, mean mask area)."""
  per_image: dict[str, dict[str, list[np.ndarray]]] = {}
  mask_areas = []
  seconds: dict[str, float] = {}
  panels = {"clean": [], "corrupted": [], "outputs": {}, "psnr": {}}
  n_images = 0
  progress = _Progress(track, total_images, options.progress)
  for batch in _numpy_batches(data_cfg, test_source, track, options.batch_size,
                              options.max_images):
    clean, corrupted, mask = batch["clean"], batch["corrupted"], batch["mask"]
    mask_areas.append(mask.mean(axis=(1, 2, 3)))
    outputs: dict[str, np.ndarray] = {}
    for runner in runners:
      batch_outputs, batch_seconds = runner(corrupted, mask)
      outputs.update(batch_outputs)
      for row, value in batch_seconds.items():
        seconds[row] = seconds.get(row, 0.0) + value
    if options.dump_inputs:
      _dump_batch(options.dump_inputs, track, batch)
    for name, folder in options.externals:
      external = _read_external(name, folder, track, batch)
      if external is not None:
        outputs[name] = external
    examples = _examples(batch, track)
    for name, baseline in track_baselines.items():
      start = time.perf_counter()
      outputs[name] = np.stack([baseline.fn(example) for example in examples])
      seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
    for name, output in outputs.items():
      for metric, values in _score(clean, output, mask, track).items():
        per_image.setdefault(name, {}).setdefault(metric, []).append(values)
    wanted = options.figure_images - len(panels["clean"])
    if wanted > 0:
      panels["clean"].extend(clean[:wanted])
      panels["corrupted"].extend(corrupted[:wanted])
      for name, output in outputs.items():
        panels["outputs"].setdefault(name, []).extend(output[:wanted])
        panels["psnr"].setdefault(name, []).extend(per_image[name]["psnr"][-1][:wanted])
    n_images += len(clean)
    progress.update(n_images)
  progress.update(n_images, final=True)
  rows = {}
  for name, scores in per_image.items():
    rows[name] = {
        "psnr": _mean(scores["psnr"], PSNR_DECIMALS),
        "hole_psnr": (_mean(scores["hole_psnr"], PSNR_DECIMALS) if "hole_psnr" in scores
                      else None),
        "ssim": _mean(scores["ssim"], SSIM_DECIMALS),
        "hole_ssim": (_mean(scores["hole_ssim"], SSIM_DECIMALS) if "hole_ssim" in scores
                      else None),
        "sec_per_image": (float(f"{seconds[name] / n_images:.4g}")
                          if options.timing and n_images and name in seconds else None),
    }
  mask_area = float(np.mean(np.concatenate(mask_areas))) if mask_areas else 0.0
  return rows, n_images, panels, round(mask_area, 4)


# --------------------------------------------------------------------------
# Provenance.


def describe_device(strategy: tf.distribute.Strategy | None = None) -> dict[str, Any]:
  """Where the models (run under `strategy`; None: no model) and baselines ran, in words."""
  cpu = f"CPU: {runtime.cpu_info()[0]} ({os.cpu_count()} cores)"
  gpus = []
  for gpu in tf.config.list_physical_devices("GPU"):
    details = tf.config.experimental.get_device_details(gpu)
    gpus.append(f"GPU: {details.get('device_name', gpu.name)}")
  models = ", ".join(sorted(set(gpus))) + f" x{len(gpus)}" if gpus else cpu
  device = {
      "models": models if strategy is not None else "(no model scored)",
      "baselines": cpu + " (numpy / OpenCV / scikit-image, one image at a time)",
      "tensorflow": tf.__version__,
  }
  if strategy is not None:
    device["strategy"] = ("default" if strategy is tf.distribute.get_strategy()
                          else type(strategy).__name__)
    device["replicas"] = int(strategy.num_replicas_in_sync)
  return device


def protocol_deviations(data_cfg: config_lib.DataConfig, n_images: int,
                        full_split_images: int | None) -> list[str]:
  """How the evaluated setting leaves PROTOCOL.md (empty: it follows it)."""
  reference = config_lib.DataConfig()
  deviations = [f"data.{field}={getattr(data_cfg, field)!r} (protocol: "
                f"{getattr(reference, field)!r})"
                for field in _PROTOCOL_FIELDS
                if getattr(data_cfg, field) != getattr(reference, field)]
  if data_cfg.dataset == "imagenet" and (data_cfg.imagenet_eval_images
                                         != reference.imagenet_eval_images):
    deviations.append(f"data.imagenet_eval_images={data_cfg.imagenet_eval_images} (protocol: "
                      f"{reference.imagenet_eval_images})")
  expected = _PROTOCOL_TEST_SIZES.get(data_cfg.dataset)
  if data_cfg.dataset == "imagenet":
    expected = data_cfg.imagenet_eval_images
  if expected is not None and n_images < expected:
    of = full_split_images if full_split_images is not None else expected
    deviations.append(f"only the first {n_images} of the {of} test images (--max_images)")
  return deviations


def _protocol_record(data_cfg, tracks, n_images, full_split, device, options, deviations):
  return {
      "follows_protocol": not deviations,
      "deviations": deviations,
      "document": "PROTOCOL.md",
      "split": "test",
      "tracks": list(tracks),
      **{field: getattr(data_cfg, field) for field in _PROTOCOL_FIELDS},
      "test_split_images": full_split,
      "metrics": ("mean over images of PSNR (whole image, data range 1, output clipped to "
                  "[0, 1]), SSIM (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, "
                  "tf.image.ssim), and on tracks with a hole hole PSNR (hole pixels only) "
                  "and hole SSIM (the SSIM map weighted by the mask); null elsewhere"),
      "timing": options.timing,
      "timing_note": ("sec_per_image: wall-clock seconds of a method over the split / images; "
                      "models: batched (batch_size below) after one untraced warm-up call, "
                      "including the host<->device copies; baselines: one image at a time "
                      "on the CPU") if options.timing else "timing disabled",
      "batch_size": options.batch_size,
      "device": device,
  }


# --------------------------------------------------------------------------
# Outputs.


def _fmt(value, spec: str) -> str:
  return "—" if value is None else format(value, spec)


def format_markdown(results: Mapping[str, Any]) -> str:
  """The results as Markdown: a header and one table (rows grouped by track)."""
  protocol = results["protocol"]
  device = protocol["device"]
  follows = ("yes" if protocol["follows_protocol"] else
             "**no**: " + "; ".join(protocol["deviations"]))
  lines = [
      f"# Evaluation on `{results['dataset']}`",
      "",
      f"- Images: {results['n_images']} (test split), image size {protocol['image_size']} px, "
      f"hole {protocol['hole_size']} px, eval seed {protocol['eval_seed']}.",
      f"- Follows PROTOCOL.md: {follows}",
      "- Device: " + (f"models on {device['models']} ({device['strategy']} strategy, "
                      f"{device['replicas']} replica(s)); " if "strategy" in device else "")
      + f"baselines on {device['baselines']}.",
      "- hole PSNR and hole SSIM are over the hole pixels only (— on tracks without a "
      "hole); (oracle) = given the true blur kernel or noise sigma.",
  ]
  areas = protocol.get("mask_area") or {}
  if any(areas.get(track) for track in protocol["tracks"]):
    lines.append("- Mean hole area (share of the image): " + ", ".join(
        f"{track} {areas[track]:.1%}" for track in protocol["tracks"] if areas.get(track)) + ".")
  lines += [
      "",
      "| track | method | PSNR (dB) | hole PSNR (dB) | SSIM | hole SSIM | s / image | images |",
      "|---|---|---:|---:|---:|---:|---:|---:|",
  ]
  methods = results.get("methods", {})
  for track in protocol["tracks"]:
    for method, per_track in results["results"].items():
      if track not in per_track:
        continue
      row = per_track[track]
      oracle = methods.get(method, {}).get("oracle") and "oracle" not in method
      label = method + (" (oracle)" if oracle else "")
      lines.append(f"| {track} | {label} | {_fmt(row['psnr'], '.2f')} | "
                   f"{_fmt(row['hole_psnr'], '.2f')} | {_fmt(row['ssim'], '.4f')} | "
                   f"{_fmt(row.get('hole_ssim'), '.4f')} | "
                   f"{_fmt(row['sec_per_image'], '.4f')} | {results['n_images']} |")
  notes = results.get("notes") or []
  if notes:
    lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
  return "\n".join(lines) + "\n"


def write_results(results: Mapping[str, Any], output_dir: str) -> dict[str, str]:
  """Writes results.json and results.md into `output_dir`; returns their paths."""
  tf.io.gfile.makedirs(output_dir)
  paths = {"json": os.path.join(output_dir, RESULTS_JSON),
           "markdown": os.path.join(output_dir, RESULTS_MD)}
  with tf.io.gfile.GFile(paths["json"], "w") as f:
    f.write(json.dumps(results, indent=2, allow_nan=False) + "\n")
  with tf.io.gfile.GFile(paths["markdown"], "w") as f:
    f.write(format_markdown(results))
  return paths


# --------------------------------------------------------------------------
# The entry point.


def evaluate(data_cfg: config_lib.DataConfig, options: EvalOptions,
             output_dir: str | None) -> dict[str, Any]:
  """Scores the models and baselines of `options` on the test split of `data_cfg`.

  Args:
    data_cfg: the requested dataset and protocol settings. Image and hole
      size are replaced by the models' training sizes (and the change noted).
    options: tracks, models, baselines and run settings.
    output_dir: where results.json, results.md and figure_<track>.png go
      (None: write nothing).

  Returns:
    The results dict (the module docstring gives its shape).

  Raises:
    ValueError: with a one-line message naming the flag or path, for a
      missing model, an unknown dataset or baseline, an empty split, and
      every other invalid input.
  """
  _check_options(options)
  config_lib.validate(config_lib.Config(data=data_cfg))
  notes: list[str] = []
  for spec in options.models:  # Cheap checks before anything slow.
    _check_model_path(spec)
  include_bm3d = None
  if DEFAULT in options.baselines and not baselines_lib.bm3d_available():
    include_bm3d = False
    notes.append("BM3D left out of the default baselines: the optional package bm3d is not "
                 "installed (pip install bm3d).")
  wants_knn = DEFAULT in options.baselines and "inpaint" in options.tracks
  # Validates the names before models and data are loaded.
  resolve_baseline_names(options.baselines, options.tracks, include_bm3d=include_bm3d,
                         knn_available=wants_knn)

  strategy = runtime.make_strategy(options.strategy)
  runners = [_ModelRunner(spec, strategy, options.mixed_precision, options.self_ensemble,
                          options.freeze)
             for spec in options.models]
  for runner in runners:
    if not runner.has_restorer:
      notes.append(f"{runner.spec.flag}={runner.spec.path} has no trained restorer: only "
                   f"{runner.intermediate_row} (the generator's output) is scored.")
  data_cfg = _eval_data_config(data_cfg, runners, notes)

  test_source = _load_source(data_cfg, "test")
  explicit_knn = any("knn" in name.split("+") for name in options.baselines)
  needs_train = options.tune_baselines or wants_knn or explicit_knn
  train_source = _load_source(data_cfg, "train") if needs_train else None
  train_images = None
  if wants_knn or explicit_knn:
    train_images = _train_images(data_cfg, train_source,
                                 _test_ids(test_source, options.max_images),
                                 options.knn_train_images)
    if train_images is None and explicit_knn:
      raise ValueError(
          f"--baselines: knn needs training images that are not test images, and "
          f"--dataset={data_cfg.dataset} has none (its train and test splits share their "
          "images); leave knn out.")
    if train_images is None:
      notes.append(f"knn left out of the default baselines: --dataset={data_cfg.dataset} has "
                   "no training images apart from the test images.")
  names_per_track = resolve_baseline_names(options.baselines, options.tracks,
                                           include_bm3d=include_bm3d,
                                           knn_available=train_images is not None)
  built, method_info = _build_baselines(names_per_track, data_cfg, train_source, train_images,
                                        options, notes)
  shared_splits = data_cfg.dataset == "samples" or (data_cfg.dataset == "folder" and
                                                     not data_cfg.folder_test_fraction)
  if options.tune_baselines and shared_splits:
    notes.append(f"--dataset={data_cfg.dataset}: its train split is its test split, so the "
                 "tuned params have seen the test photos (with other corruptions, seed "
                 f"{data_cfg.eval_seed + 1}).")

  # Warm-up: trace each model once outside the timing.
  size = data_cfg.image_size
  warmup = np.zeros([options.batch_size, size, size, 3], np.float32)
  for runner in runners:
    runner(warmup, warmup[..., :1])

  total = test_source.num_images
  if total is not None and options.max_images is not None:
    total = min(total, options.max_images)
  results: dict[str, dict[str, Any]] = {}
  panels_per_track = {}
  mask_areas: dict[str, float] = {}
  n_images = None
  for track in options.tracks:
    track_baselines = {name: built[name] for name in names_per_track[track]}
    rows, track_images, panels, mask_areas[track] = _evaluate_track(
        track, data_cfg, test_source, runners, track_baselines, options, total)
    if n_images is not None and track_images != n_images:
      raise ValueError(f"The test split gave {n_images} images on one track and "
                       f"{track_images} on {track}; the source is not deterministic.")
    n_images = track_images
    panels_per_track[track] = panels
    order = ([r for runner in runners for r in runner.rows]
             + [name for name, _ in options.externals if name in rows] + list(track_baselines))
    for name in order:
      results.setdefault(name, {})[track] = rows[name]
  if not n_images:
    raise ValueError(f"--dataset={data_cfg.dataset}: the test split gave no images.")
  pipeline.log_skipped(test_source)

  methods = {}
  for runner in runners:
    for row in runner.rows:
      output = "generator (intermediate)" if row == runner.intermediate_row else \
          "restorer (final)"
      methods[row] = {**runner.info, "name": runner.spec.name, "output": output,
                      "oracle": False}
  for name, folder in options.externals:
    methods[name] = {"kind": "external", "path": os.path.abspath(folder), "oracle": False,
                     "note": "another tool's outputs on the --dump_inputs inputs, read as "
                             "8-bit PNGs; not timed"}
  methods.update(method_info)
  full_split = test_source.num_images
  deviations = protocol_deviations(data_cfg, n_images, full_split)
  device = describe_device(strategy if runners else None)
  output = {
      "dataset": data_cfg.dataset,
      "n_images": n_images,
      "protocol": {**_protocol_record(data_cfg, options.tracks, n_images, full_split, device,
                                      options, deviations), "mask_area": mask_areas},
      "results": results,
      "methods": methods,
      "notes": notes,
  }
  if output_dir is not None:
    write_results(output, output_dir)
    if options.figure_images:
      for track, panels in panels_per_track.items():
        order = [name for name in results if track in results[name] and name != "identity"]
        figures.save_track_figure(
            os.path.join(output_dir, f"figure_{track}.png"), track, panels["clean"],
            panels["corrupted"], {name: panels["outputs"][name] for name in order},
            {name: panels["psnr"][name] for name in order},
            title=f"{data_cfg.dataset}, {track} track")
  return output
