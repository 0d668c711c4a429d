"""Clean-image sources: samples, bsd300, imagenet and folder, as tf.data datasets.

`load_source(data_cfg, split)` is the one entry point. It returns an
`ImageSource` whose `dataset` yields {"image": uint8 [H, W, 3], "id":
string scalar}: variable sizes, always RGB, one element per readable image.

* `samples` (default): the colour photographs bundled inside scikit-image
  (`SAMPLE_IMAGES`; none is downloaded). A demo source: `train` and `test`
  are the same images. Ids are the `skimage.data` function names.
* `folder`: every jpg/jpeg/png/bmp/tif/tiff/webp file (any case) under
  `image_dir`, recursively, hidden files and folders excepted, sorted by
  relative path. With `folder_test_fraction` > 0 a seeded split holds out
  that share as `test` (see `split_files`); with 0 both splits are the
  whole folder. Ids are the paths relative to `image_dir`.
* `bsd300`: the TFDS builder in `bsd300.py` (train 200, test 100), built
  into `data_dir` from `manual_dir` or the official download.
* `imagenet`: TFDS `imagenet2012` from the ImageNet tars in `manual_dir`.
  `train` is TFDS `train`; `test` is a fixed subset of `validation`, see
  `imagenet_test_split`.

The images of every folder in `extra_train_dirs` are appended to the
`train` split of any dataset; their ids are `<folder name>/<relative path>`.

Files are decoded in Python (Pillow, then tifffile for TIFFs Pillow cannot
read) inside `tf.data`, in parallel and in order. Decoding rules, the same
for every file source (`to_rgb_uint8`):

* grey images are repeated to three channels;
* images with alpha (RGBA, LA, palette with transparency) are composited
  on white, so transparent areas become white rather than whatever colour
  the transparent pixels happen to store;
* 16-bit images keep their high byte (v >> 8, as Pillow does for colour
  files and `tf.image.convert_image_dtype` does), float images are read as
  [0, 1]; EXIF orientation is applied;
* an unreadable file (corrupt, truncated, unknown format) is skipped, never
  ends an epoch, and is counted once in the source's `SkipCounter` and
  logged once with its path and the reason.

Element order is deterministic: sorted by id for samples, folders and
bsd300; ImageNet's `test` in TFDS's stored order and its `train` with the
file order shuffled by `split_seed`. The training pipeline shuffles.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import io
import os
from pathlib import Path
import threading
import warnings

from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageOps
from skimage import data as skimage_data
import tensorflow as tf
import tensorflow_datasets as tfds
import tifffile

from cascade_tf.config import DataConfig
from cascade_tf.data import bsd300

SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Folders up to this many files are cached decoded in memory by the pipeline.
MAX_CACHEABLE_FILES = 5000
# skimage.data functions whose (colour, photographic) files ship inside the
# scikit-image wheel; others such as eagle, lily or skin need a download.
SAMPLE_IMAGES = ("astronaut", "chelsea", "coffee", "hubble_deep_field",
                 "immunohistochemistry", "retina", "rocket", "stereo_motorcycle")
IMAGENET_NAME = "imagenet2012"
IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")

class SkipCounter:
  """Thread-safe record of the unreadable files a source has skipped.

  Files are read lazily as the dataset is iterated, so the count grows
  during the first epoch. Each file is counted and logged once, however
  many epochs meet it again.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._names: list[str] = []
    self._seen: set[str] = set()

  def add(self, name: str, reason: str) -> None:
    """Records that `name` (a path or an id) was skipped because of `reason`."""
    with self._lock:
      if name in self._seen:
        return
      self._seen.add(name)
      self._names.append(name)
    logging.warning("Skipping unreadable image %s: %s", name, reason)

  @property
  def count(self) -> int:
    with self._lock:
      return len(self._names)

  @property
  def names(self) -> list[str]:
    """The skipped files (paths) or ids, in the order they were met."""
    with self._lock:
      return list(self._names)


@dataclasses.dataclass
class ImageSource:
  """One split of clean images and what is known about it."""

  name: str  # samples | bsd300 | imagenet | folder.
  split: str  # train | test.
  dataset: tf.data.Dataset  # {"image": uint8 [H, W, 3], "id": string scalar}.
  num_images: int | None  # Images in the split (files found, for folders); None if unknown.
  cacheable: bool  # Small enough to cache the decoded images in memory.
  skipped: SkipCounter  # Unreadable files met so far.


# --------------------------------------------------------------------------
# Decoding.


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
  """Converts a decoded image array to uint8 [H, W, 3] RGB.

  Args:
    array: [H, W], [H, W, 1] (grey), [H, W, 2] (grey + alpha), [H, W, 3]
      (RGB) or [H, W, 4] (RGBA); uint8, 16-bit or wider integers (read as
      16-bit, clipped, high byte kept: v >> 8), bool, or float (read as
      [0, 1], clipped).

  Returns:
    uint8 [H, W, 3]; alpha, if any, composited on white.

  Raises:
    ValueError: for any other shape or dtype.
  """
  array = np.asarray(array)
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4) or 0 in array.shape:
    raise ValueError(f"expected an [H, W, 1-4] image, got shape {array.shape}")
  if array.dtype == np.uint8:
    pass
  elif array.dtype == np.bool_:
    array = array.astype(np.uint8) * 255
  elif np.issubdtype(array.dtype, np.integer):
    array = (np.clip(array, 0, 65535).astype(np.uint16) >> 8).astype(np.uint8)
  elif np.issubdtype(array.dtype, np.floating):
    array = np.round(np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0).astype(np.uint8)
  else:
    raise ValueError(f"unsupported pixel type {array.dtype}")
  channels = array.shape[-1]
  if channels in (2, 4):
    colour, alpha = array[..., :-1].astype(np.float32), array[..., -1:].astype(np.float32) / 255.0
    array = np.round(colour * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  return np.ascontiguousarray(array)


def _pil_to_array(image: Image.Image) -> np.ndarray:
  """The pixels of a loaded PIL image, in a layout `to_rgb_uint8` accepts."""
  if image.mode in ("RGB", "RGBA", "L", "LA", "F") or image.mode.startswith("I"):
    return np.asarray(image)
  if image.mode in ("P", "PA"):
    has_alpha = image.mode == "PA" or "transparency" in image.info
    return np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
  if image.mode == "1":
    return np.asarray(image.convert("L"))
  return np.asarray(image.convert("RGB"))  # CMYK, YCbCr, LAB, HSV, ...


class ImageTooLarge(ValueError):
  """An image whose header declares more pixels than the caller accepts."""


# Pillow refuses images above twice this many pixels (its decompression-bomb
# guard, Image.MAX_IMAGE_PIXELS: 89.5 MP by default) before reading them.
PILLOW_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS


def _check_pixels(height: int, width: int, max_pixels: int | None) -> None:
  if max_pixels and height * width > max_pixels:
    raise ImageTooLarge(f"{width}x{height} px ({height * width:,} pixels), over the limit of "
                        f"{max_pixels:,} (--max_pixels={max_pixels}); nothing was decoded")


def decode_image_bytes(data: bytes, name: str = "", max_pixels: int | None = None) -> np.ndarray:
  """Decodes any supported image file's bytes to uint8 [H, W, 3] RGB.

  Pillow reads everything it can, fully (so truncated files fail here
  rather than later) and with EXIF orientation applied; TIFFs it cannot
  read (e.g. float or many-sample files) go to tifffile.

  Args:
    data: the encoded file content.
    name: the file name, used to recognise TIFFs.
    max_pixels: if set, an image whose header declares more pixels raises
      `ImageTooLarge` before any pixel is decoded.

  Returns:
    uint8 [H, W, 3].

  Raises:
    ImageTooLarge: see `max_pixels`.
    Exception: whatever the decoders raise for corrupt or unknown data
      (OSError, SyntaxError, ValueError, ...; Pillow's
      DecompressionBombError above `PILLOW_MAX_PIXELS`).
  """
  try:
    with warnings.catch_warnings():
      # The limit is ours to set (max_pixels); Pillow's own guard still
      # refuses images over PILLOW_MAX_PIXELS.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(data)) as image:
        _check_pixels(image.height, image.width, max_pixels)
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb_uint8(_pil_to_array(image))
  except ImageTooLarge:
    raise
  except Exception:  # pylint: disable=broad-except
    if not name.lower().endswith((".tif", ".tiff")):
      raise
  # A TIFF Pillow cannot read: first page or series, as stored.
  with tifffile.TiffFile(io.BytesIO(data)) as tiff:
    series = tiff.series[0]
    if "Y" in series.axes and "X" in series.axes:
      _check_pixels(series.shape[series.axes.index("Y")], series.shape[series.axes.index("X")],
                    max_pixels)
    return to_rgb_uint8(tiff.asarray())


def decode_image_file(path: os.PathLike | str, max_pixels: int | None = None) -> np.ndarray:
  """Reads and decodes one image file to uint8 [H, W, 3]; see `decode_image_bytes`."""
  path = Path(path)
  return decode_image_bytes(path.read_bytes(), path.name, max_pixels)


def decode_files(paths: list[str], ids: list[str], skipped: SkipCounter) -> tf.data.Dataset:
  """A dataset of the readable files among `paths`, decoded in parallel, in order.

  Args:
    paths: image file paths.
    ids: one id per path.
    skipped: where unreadable files are counted.

  Returns:
    A `tf.data.Dataset` of {"image": uint8 [H, W, 3], "id": string}.
  """
  if len(paths) != len(ids):
    raise ValueError(f"decode_files: {len(paths)} paths but {len(ids)} ids.")

  def decode(path):
    path = path.decode("utf-8")
    try:
      return decode_image_file(path), True
    except Exception as e:  # pylint: disable=broad-except
      # Decoders raise many types on corrupt data; none may end the epoch.
      skipped.add(path, f"{type(e).__name__}: {e}")
      return np.zeros([1, 1, 3], np.uint8), False

  def decode_element(element):
    image, ok = tf.numpy_function(decode, [element["path"]], (tf.uint8, tf.bool),
                                  stateful=False)
    image.set_shape([None, None, 3])
    ok.set_shape([])
    return {"image": image, "id": element["id"], "ok": ok}

  dataset = tf.data.Dataset.from_tensor_slices(
      {"path": tf.constant(paths, tf.string), "id": tf.constant(ids, tf.string)})
  dataset = dataset.map(decode_element, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
  dataset = dataset.filter(lambda element: element["ok"])
  return dataset.map(lambda element: {"image": element["image"], "id": element["id"]})


# --------------------------------------------------------------------------
# Folders.


def list_image_files(root: os.PathLike | str) -> list[Path]:
  """The image files under `root`, recursively, sorted by relative path.

  Hidden files and folders (names starting with ".", e.g. macOS `._x.jpg`
  resource forks) are ignored.
  """
  root = Path(root)
  files = []
  for folder, subfolders, names in os.walk(root, followlinks=True):
    subfolders[:] = [d for d in subfolders if not d.startswith(".")]
    for name in names:
      if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
        files.append(Path(folder) / name)
  return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def _checked_files(root: str | None, flag: str) -> tuple[Path, list[Path]]:
  """Resolves a folder given by `flag`; raises ValueError if missing or empty."""
  if not root:
    raise ValueError(f"{flag} is required: give the folder of the images.")
  path = Path(root).expanduser()
  if not path.is_dir():
    raise ValueError(f"{flag}={root}: no such directory ({path.resolve()}).")
  files = list_image_files(path)
  if not files:
    raise ValueError(f"{flag}={root}: no images found in {path.resolve()} "
                     f"(looked for {', '.join(IMAGE_EXTENSIONS)}, recursively).")
  return path, files


def split_files(relative_paths: list[str], test_fraction: float, seed: int) -> dict[str, list[int]]:
  """A seeded train/test split of a sorted file list.

  The test files are the round(test_fraction * n) files (at least 1, at
  most n - 1) with the smallest SHA-256 of "<seed>:<relative path>": the
  choice depends only on the seed and the names, not on numpy's RNG or the
  order of listing, and adding files moves few others.

  Args:
    relative_paths: the files' relative paths.
    test_fraction: share of the files held out as test, in [0, 1).
    seed: the split's seed.

  Returns:
    {"train": indices, "test": indices}, each sorted; with test_fraction 0
    both are all indices.
  """
  count = len(relative_paths)
  everything = list(range(count))
  if test_fraction <= 0:
    return {"train": everything, "test": everything}
  if count < 2:
    raise ValueError(f"folder_test_fraction={test_fraction}: a train/test split needs at "
                     f"least 2 images, found {count}.")
  num_test = min(max(1, round(test_fraction * count)), count - 1)

  def rank(index):
    key = f"{seed}:{relative_paths[index]}".encode("utf-8")
    return hashlib.sha256(key).digest()

  test = sorted(sorted(everything, key=rank)[:num_test])
  test_set = set(test)
  return {"train": [i for i in everything if i not in test_set], "test": test}


def folder_source(root: str | None, split: str, *, test_fraction: float = 0.0,
                  seed: int = 0, flag: str = "--image_dir",
                  id_prefix: str = "", skipped: SkipCounter | None = None) -> ImageSource:
  """One split of a folder of images.

  Args:
    root: the folder.
    split: "train" or "test".
    test_fraction: share held out as `test` (0: both splits are everything).
    seed: seed of the split.
    flag: the flag that named `root`, for error messages.
    id_prefix: prepended to the relative paths to make the ids.
    skipped: counter to share (default: a new one).

  Returns:
    An `ImageSource` named "folder".

  Raises:
    ValueError: `root` is missing, not a folder, or holds no images.
  """
  path, files = _checked_files(root, flag)
  relative = [file.relative_to(path).as_posix() for file in files]
  indices = split_files(relative, test_fraction, seed)[split]
  skipped = skipped if skipped is not None else SkipCounter()
  dataset = decode_files([str(files[i]) for i in indices],
                         [id_prefix + relative[i] for i in indices], skipped)
  return ImageSource(name="folder", split=split, dataset=dataset, num_images=len(indices),
                     cacheable=len(indices) <= MAX_CACHEABLE_FILES, skipped=skipped)


# --------------------------------------------------------------------------
# scikit-image samples.


@functools.lru_cache(maxsize=1)
def sample_arrays() -> tuple[tuple[str, np.ndarray], ...]:
  """((name, uint8 [H, W, 3]), ...) of SAMPLE_IMAGES, read once."""
  samples = []
  for name in SAMPLE_IMAGES:
    image = getattr(skimage_data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity).
      image = image[0]
    samples.append((name, to_rgb_uint8(image)))
  return tuple(samples)


def samples_source(split: str) -> ImageSource:
  """The scikit-image sample photographs; `train` and `test` are the same."""
  datasets = [tf.data.Dataset.from_tensors({"image": tf.constant(image), "id": tf.constant(name)})
              for name, image in sample_arrays()]
  dataset = functools.reduce(lambda a, b: a.concatenate(b), datasets)
  return ImageSource(name="samples", split=split, dataset=dataset,
                     num_images=len(SAMPLE_IMAGES), cacheable=True, skipped=SkipCounter())


# --------------------------------------------------------------------------
# TFDS sources.


def prepared_builder(make_builder, prepare):
  """The TFDS builder `make_builder()` returns, its dataset prepared at most once.

  `prepare(builder)` (download_and_prepare, with the source's checks) runs
  only while no other process prepares the same dataset: an exclusive lock
  on `<data_dir>/<name>.prepare.lock` serialises it, and whoever waited
  finds the dataset prepared. Without it two jobs started at once on a
  fresh machine (two training runs, or training and evaluate.py) both
  build the dataset and the slower one fails renaming its temporary
  folder onto the finished one (TFDS's FileExistsError).
  """
  builder = make_builder()
  if builder.is_prepared():
    return builder
  root = Path(builder.data_dir_root)
  root.mkdir(parents=True, exist_ok=True)
  with open(root / f"{builder.name}.prepare.lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      builder = make_builder()  # Another process may have prepared it while we waited.
      if not builder.is_prepared():
        prepare(builder)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return builder


def _download_config(manual_dir: str | None) -> tfds.download.DownloadConfig:
  return tfds.download.DownloadConfig(
      manual_dir=str(Path(manual_dir).expanduser()) if manual_dir else None,
      try_download_gcs=False)


def _check_manual_dir(manual_dir: str | None) -> None:
  if manual_dir and not Path(manual_dir).expanduser().exists():
    raise ValueError(f"--manual_dir={manual_dir}: no such file or directory "
                     f"({Path(manual_dir).expanduser().resolve()}).")


def _tfds_elements(dataset: tf.data.Dataset, id_key: str) -> tf.data.Dataset:
  return dataset.map(lambda e: {"image": e["image"], "id": e[id_key]},
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def bsd300_source(cfg: DataConfig, split: str) -> ImageSource:
  """BSDS300 through `bsd300.Bsd300`, built into `cfg.data_dir` on first use.

  Raises:
    ValueError: `cfg.manual_dir` is given but holds no BSDS300, or the
      dataset is not built, no manual dir is given and the download fails.
  """
  _check_manual_dir(cfg.manual_dir)

  def prepare(builder):
    if cfg.manual_dir and bsd300.locate_manual_source(Path(cfg.manual_dir).expanduser()) is None:
      raise ValueError(f"--manual_dir={cfg.manual_dir}: holds no BSDS300 data.\n"
                       f"{bsd300.Bsd300.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    builder.download_and_prepare(download_config=_download_config(cfg.manual_dir))

  builder = prepared_builder(lambda: bsd300.Bsd300(data_dir=cfg.data_dir), prepare)
  skipped = SkipCounter()
  for image_id in builder.info.metadata.get("skipped", []):
    skipped.add(f"bsd300/{image_id}", "unreadable when the dataset was built")
  dataset = builder.as_dataset(split=split, shuffle_files=False)
  return ImageSource(name="bsd300", split=split, dataset=_tfds_elements(dataset, "id"),
                     num_images=builder.info.splits[split].num_examples, cacheable=True,
                     skipped=skipped)


def imagenet_test_split(num_validation: int | None, num_images: int, seed: int) -> str:
  """The TFDS split string of the fixed ImageNet test subset.

  TFDS stores each split in an order fixed at build time by hashing every
  example's key (here its file name), independent of class, so any
  contiguous window of the stored `validation` split is a uniform
  pseudo-random subset that reads only the shards it spans. The subset is
  the window of `num_images` examples starting at
  (seed * num_images) mod (num_validation - num_images + 1): seeds 0, 1, ...
  give disjoint subsets while they fit.

  Args:
    num_validation: examples in `validation` (None: unknown; window at 0).
    num_images: size of the subset.
    seed: the split seed.
  """
  if num_images < 1:
    raise ValueError(f"imagenet_eval_images={num_images}: must be >= 1.")
  if num_validation is None:
    return f"validation[:{num_images}]"
  num_images = min(num_images, num_validation)
  start = (seed * num_images) % (num_validation - num_images + 1)
  return f"validation[{start}:{start + num_images}]"


def imagenet_source(cfg: DataConfig, split: str) -> ImageSource:
  """TFDS `imagenet2012`: `train`, or a fixed subset of `validation` as `test`.

  The dataset is prepared from the tars in `cfg.manual_dir` on first use.
  A decoding error at read time drops that example (logged by tf.data);
  TFDS has already re-encoded ImageNet's few odd files when building.

  Raises:
    ValueError: the dataset is not prepared and the manual files are missing.
  """
  _check_manual_dir(cfg.manual_dir)

  def prepare(builder):
    # TFDS's own default manual dir is <data_dir>/downloads/manual.
    manual = (Path(cfg.manual_dir).expanduser() if cfg.manual_dir
              else Path(builder.data_dir_root) / "downloads" / "manual")
    missing = [name for name in IMAGENET_MANUAL_FILES if not (manual / name).is_file()]
    if missing:
      raise ValueError(
          f"--dataset=imagenet: {IMAGENET_NAME} is not prepared in {builder.data_dir_root} "
          f"(--data_dir) and the manual dir {manual} (--manual_dir={cfg.manual_dir}) lacks "
          f"{', '.join(missing)}. Download the tars from https://image-net.org (an account "
          "is needed) and pass their folder as --manual_dir.")
    try:
      builder.download_and_prepare(download_config=_download_config(str(manual)))
    except ModuleNotFoundError as e:
      if e.name != "importlib_resources":
        raise
      raise ModuleNotFoundError(
          "Preparing a TFDS dataset needs `importlib_resources`, which "
          "tensorflow-datasets 4.9.x does not install on Python >= 3.9 "
          "(tensorflow/datasets#11212): pip install importlib_resources.",
          name=e.name) from e

  builder = prepared_builder(lambda: tfds.builder(IMAGENET_NAME, data_dir=cfg.data_dir), prepare)
  try:
    num_validation = builder.info.splits["validation"].num_examples
    num_train = builder.info.splits["train"].num_examples
  except KeyError:  # Split sizes unknown (e.g. under tfds.testing.mock_data).
    num_validation = num_train = None
  if split == "train":
    dataset = builder.as_dataset(split="train", shuffle_files=True,
                                 read_config=tfds.ReadConfig(shuffle_seed=cfg.split_seed))
    num_images = num_train
  else:
    tfds_split = imagenet_test_split(num_validation, cfg.imagenet_eval_images, cfg.split_seed)
    # `take` also caps the subset where the split is smaller than asked.
    dataset = builder.as_dataset(split=tfds_split, shuffle_files=False)
    dataset = dataset.take(cfg.imagenet_eval_images)
    num_images = cfg.imagenet_eval_images
    if num_validation is not None:
      num_images = min(num_images, num_validation)
  dataset = _tfds_elements(dataset, "file_name").ignore_errors(log_warning=True)
  return ImageSource(name="imagenet", split=split, dataset=dataset, num_images=num_images,
                     cacheable=False, skipped=SkipCounter())


# --------------------------------------------------------------------------
# Entry point.


def _with_extra_train_dirs(source: ImageSource, cfg: DataConfig) -> ImageSource:
  """Appends the images of `cfg.extra_train_dirs` to a train source."""
  dataset, num_images, cacheable = source.dataset, source.num_images, source.cacheable
  for folder in cfg.extra_train_dirs:
    extra = folder_source(folder, "train", flag="--extra_train_dirs",
                          id_prefix=f"{Path(folder).expanduser().resolve().name}/",
                          skipped=source.skipped)
    dataset = dataset.concatenate(extra.dataset)
    num_images = None if num_images is None else num_images + extra.num_images
    cacheable = cacheable and extra.cacheable
  return dataclasses.replace(source, dataset=dataset, num_images=num_images,
                             cacheable=cacheable)


def load_source(data_cfg: DataConfig, split: str) -> ImageSource:
  """Loads one split of the clean images named by `data_cfg.dataset`.

  Args:
    data_cfg: the data config (dataset, dirs, folder split, extra dirs).
    split: "train" or "test".

  Returns:
    An `ImageSource`; see the module docstring for each dataset.

  Raises:
    ValueError: an unknown dataset or split, or missing data, naming the
      flag to fix (--image_dir, --manual_dir, --extra_train_dirs).
  """
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}: expected one of {SPLITS}.")
  name = data_cfg.dataset
  if name == "samples":
    source = samples_source(split)
  elif name == "folder":
    source = folder_source(data_cfg.image_dir, split, test_fraction=data_cfg.folder_test_fraction,
                           seed=data_cfg.split_seed)
  elif name == "bsd300":
    source = bsd300_source(data_cfg, split)
  elif name == "imagenet":
    source = imagenet_source(data_cfg, split)
  else:
    raise ValueError(f"--dataset={name!r}: expected one of samples, bsd300, imagenet, folder.")
  if split == "train" and data_cfg.extra_train_dirs:
    source = _with_extra_train_dirs(source, data_cfg)
  return source
