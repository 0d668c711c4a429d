"""TFDS builder of BSDS300, the Berkeley Segmentation Dataset's 300 photographs.

`Bsd300` is a `tfds.core.GeneratorBasedBuilder` (name `bsd300`, version
1.0.0) with two splits, read from the official archive's layout:

    BSDS300/iids_train.txt, iids_test.txt   image ids, one per line
    BSDS300/images/train/<id>.jpg           200 images (481x321 or 321x481)
    BSDS300/images/test/<id>.jpg            100 images

Each example is {"image": uint8 [H, W, 3], "id": the image id}. Examples
are stored and read back in sorted id order (`disable_shuffling`), so the
test split is always read in the same order.

Where the data comes from, in order:

1. The manual dir (`tfds.download.DownloadConfig(manual_dir=...)`, default
   `<data_dir>/downloads/manual`), when it holds BSDS300 as one of: an
   extracted BSDS300 folder (holding `images/` and `iids_*.txt`), a folder
   holding such a `BSDS300/` folder, the tarball `BSDS300-images.tgz` (or
   any .tgz / .tar.gz / .tar given as the manual dir itself), or a folder
   holding `BSDS300-images.tgz`. Nothing is downloaded then.
2. Otherwise the official tarball, downloaded and extracted by the
   download manager. Offline this fails within seconds (a direct connection
   is tried first, unless a proxy is configured) with a ValueError that
   says to pass `--manual_dir`.

Every image is fully decoded once at generation time; one that cannot be
read (missing, truncated, corrupt) is logged, left out of the dataset and
listed in `info.metadata["skipped"]` (ids), which is saved with the dataset.
JPEG bytes of RGB or grey images are stored as they are (no re-encoding);
any other image is converted to RGB and stored as PNG.

The builder is not added to the TFDS registry (no import-time side
effects): instantiate `Bsd300(data_dir=...)` directly.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
import socket
import urllib.parse
import urllib.request

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

URL = "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/bsds/BSDS300-images.tgz"
TARBALL_NAME = "BSDS300-images.tgz"
SPLITS = ("train", "test")
_TARBALL_SUFFIXES = (".tgz", ".tar.gz", ".tar")

_CITATION = """\
@inproceedings{MartinFTM01,
  author = {D. Martin and C. Fowlkes and D. Tal and J. Malik},
  title = {A Database of Human Segmented Natural Images and its Application to
           Evaluating Segmentation Algorithms and Measuring Ecological Statistics},
  booktitle = {Proc. 8th Int'l Conf. Computer Vision},
  year = {2001},
  volume = {2},
  pages = {416--423}
}"""


def is_bsds300_root(path: os.PathLike | str) -> bool:
  """Whether `path` is an extracted BSDS300 folder (images/ and both id lists)."""
  path = Path(path)
  return ((path / "images").is_dir() and (path / "iids_train.txt").is_file()
          and (path / "iids_test.txt").is_file())


def locate_manual_source(path: os.PathLike | str) -> Path | None:
  """Finds BSDS300 inside a manual dir.

  Args:
    path: an extracted BSDS300 folder, a folder holding `BSDS300/`, a
      BSDS300 tarball, or a folder holding `BSDS300-images.tgz`.

  Returns:
    The BSDS300 folder or the tarball, or None when `path` holds neither.
  """
  path = Path(path)
  if path.is_file():
    return path if path.name.endswith(_TARBALL_SUFFIXES) else None
  if not path.is_dir():
    return None
  for candidate in (path, path / "BSDS300"):
    if is_bsds300_root(candidate):
      return candidate
  if (path / TARBALL_NAME).is_file():
    return path / TARBALL_NAME
  return None


def _find_root(extracted: Path) -> Path:
  """The BSDS300 folder inside an extracted tarball."""
  for candidate in (extracted, extracted / "BSDS300"):
    if is_bsds300_root(candidate):
      return candidate
  raise ValueError(f"{extracted}: the extracted tarball holds no BSDS300 folder "
                   "(expected BSDS300/images/ and BSDS300/iids_train.txt, iids_test.txt).")


def _manual_path(dl_manager) -> Path | None:
  """The manual dir (or tarball) given to the download manager, if it exists."""
  try:
    return Path(dl_manager.manual_dir)
  except NotADirectoryError:
    # A tarball given as the manual dir: TFDS's `manual_dir` lists its
    # content, which fails for a file, so read the path it was given.
    return Path(dl_manager._manual_dir)  # pylint: disable=protected-access
  except AssertionError:  # Not given, missing or empty.
    return None


def _check_reachable(url: str, timeout_s: float = 10.0) -> None:
  """Raises OSError within seconds when `url`'s host cannot be reached.

  Offline, TFDS's downloader retries with back-off for minutes before it
  gives up; a direct connection attempt fails at once. Behind a proxy
  (proxy environment variables) the probe is skipped.
  """
  if urllib.request.getproxies():
    return
  parts = urllib.parse.urlsplit(url)
  with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout_s):
    pass


def _read_ids(path: Path) -> list[str]:
  ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
  if not ids:
    raise ValueError(f"{path}: no image ids (expected one id per line).")
  return sorted(set(ids))


class Bsd300(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """BSDS300: 200 training and 100 test photographs of natural scenes."""

  name = "bsd300"
  # TFDS 4.9.10 derives `code_path` through `importlib_resources`, which it
  # only installs on Python < 3.9 (tensorflow/datasets#11212); this module's
  # own path is what it would compute.
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: train 200, test 100 images with ids."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Without network access, download {URL}
  on another machine and pass one of these as the manual dir (--manual_dir):
    * the tarball {TARBALL_NAME} itself, or a folder holding it;
    * the extracted BSDS300/ folder (holding images/ and iids_train.txt,
      iids_test.txt), or a folder holding BSDS300/.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="BSDS300 colour photographs (train 200, test 100), by image id.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "id": tfds.features.Text(),
        }),
        homepage="https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/bsds/",
        citation=_CITATION,
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(skipped=[]),
    )

  def _split_generators(self, dl_manager):
    # The default manual dir, <data_dir>/downloads/manual, is shared by all
    # datasets (ImageNet's tars go there too), so one without BSDS300 in it
    # is not an error: the archive is downloaded instead.
    manual = _manual_path(dl_manager)
    source = locate_manual_source(manual) if manual is not None else None
    if source is None:
      try:
        _check_reachable(URL)
        extracted = dl_manager.download_and_extract(URL)
      except Exception as e:  # pylint: disable=broad-except
        # Network errors come in many types (requests, urllib3, OSError...).
        raise ValueError(
            f"No BSDS300 in the manual dir ({manual or 'none given'}) and could not "
            f"download {URL} ({type(e).__name__}: {e}); pass --manual_dir "
            f"(DataConfig.manual_dir).\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}") from e
      root = _find_root(Path(extracted))
    elif source.is_file():
      root = _find_root(Path(dl_manager.extract(source)))
    else:
      root = source
    return {split: self._generate_examples(root, split) for split in SPLITS}

  def _generate_examples(self, root: Path, split: str):
    """Yields (id, example) in sorted id order, skipping unreadable images."""
    for image_id in _read_ids(root / f"iids_{split}.txt"):
      path = root / "images" / split / f"{image_id}.jpg"
      try:
        image = _checked_image(path)
      except Exception as e:  # pylint: disable=broad-except
        # Decoders raise OSError, SyntaxError, ValueError... on corrupt data.
        logging.warning("bsd300: skipping unreadable image %s (%s: %s)", path,
                        type(e).__name__, e)
        self.info.metadata["skipped"].append(image_id)
        continue
      yield image_id, {"image": image, "id": image_id}


def _checked_image(path: Path) -> bytes | np.ndarray:
  """Decodes `path` fully; returns its bytes, or an RGB array if not plain JPEG."""
  data = path.read_bytes()
  with Image.open(io.BytesIO(data)) as image:
    image.load()  # Raises on truncated or corrupt data.
    if image.format == "JPEG" and image.mode in ("RGB", "L"):
      return data  # tf.image.decode_image(channels=3) reads these as RGB.
    if "A" in image.getbands() or "transparency" in image.info:
      rgba = np.asarray(image.convert("RGBA"), np.float32)
      alpha = rgba[..., 3:] / 255.0
      return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.asarray(image.convert("RGB"))
