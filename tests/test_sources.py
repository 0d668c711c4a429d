"""Tests of cascade_tf.data.sources and the BSDS300 TFDS builder, all offline."""

import concurrent.futures
import os
from pathlib import Path
import tarfile
import time

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import tifffile

from cascade_tf.config import DataConfig
from cascade_tf.data import bsd300
from cascade_tf.data import sources

SHARED_BSDS300 = Path(__file__).resolve().parents[1].parent / "shared/data/BSDS300"


def _elements(source):
  return [(e["id"].numpy().decode(), e["image"].numpy()) for e in source.dataset]


def _rgb(height, width, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --------------------------------------------------------------------------
# Decoding rules.


def test_to_rgb_uint8_grey_alpha_16bit_and_float():
  grey = np.array([[0, 100], [200, 255]], np.uint8)
  np.testing.assert_array_equal(sources.to_rgb_uint8(grey), np.repeat(grey[..., None], 3, -1))
  rgba = np.zeros((2, 2, 4), np.uint8)
  rgba[..., 0] = 200
  rgba[0, 0, 3] = 255  # Opaque red-ish pixel; the others are fully transparent.
  out = sources.to_rgb_uint8(rgba)
  np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
  np.testing.assert_array_equal(out[1, 1], [255, 255, 255])  # Composited on white.
  half = np.array([[[0, 128]]], np.uint8)  # Grey 0 at alpha 128/255 -> 255 * (1 - 128/255).
  assert sources.to_rgb_uint8(half)[0, 0, 0] == 127
  deep = np.array([[0, 255, 256 * 100 + 255, 65535]], np.uint16)  # High byte kept.
  np.testing.assert_array_equal(sources.to_rgb_uint8(deep)[0, :, 1], [0, 0, 100, 255])
  floats = np.array([[[-1.0, 0.5, 2.0]]], np.float32)
  np.testing.assert_array_equal(sources.to_rgb_uint8(floats)[0, 0], [0, 128, 255])
  with pytest.raises(ValueError, match="shape"):
    sources.to_rgb_uint8(np.zeros((4, 4, 5), np.uint8))


# --------------------------------------------------------------------------
# samples.


def test_samples_are_bundled_rgb_photos_with_function_names_as_ids():
  for split in ("train", "test"):
    source = sources.load_source(DataConfig(), split)
    elements = _elements(source)
    assert source.name == "samples" and source.split == split and source.cacheable
    assert [i for i, _ in elements] == list(sources.SAMPLE_IMAGES)
    assert source.num_images == len(elements) >= 3
    for _, image in elements:
      assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
      assert min(image.shape[:2]) >= 128
    assert source.skipped.count == 0
  astronaut = dict(elements)["astronaut"]
  assert astronaut.shape == (512, 512, 3) and astronaut.std() > 20


# --------------------------------------------------------------------------
# folder.


def _make_tree(root: Path) -> dict[str, tuple[int, int]]:
  """A small tree of every supported kind plus two broken JPEGs; returns good ids -> (H, W)."""
  (root / "sub" / "deeper").mkdir(parents=True)
  shapes = {}

  def save(relative, array, **kwargs):
    Image.fromarray(array).save(root / relative, **kwargs)
    shapes[relative] = array.shape[:2]

  save("a_rgb.png", _rgb(20, 30, 1))
  save("b_photo.JPG", _rgb(24, 16, 2), quality=90)
  save("c_grey.png", np.full((10, 12), 77, np.uint8))
  rgba = np.zeros((8, 9, 4), np.uint8)
  rgba[..., 1] = 50
  rgba[:4, :, 3] = 255
  save("d_rgba.png", rgba)
  save("e_bitmap.bmp", _rgb(7, 11, 3))
  save("sub/f_tiff.tif", _rgb(13, 6, 4))
  save("sub/deeper/g_web.webp", _rgb(9, 9, 5), lossless=True)
  deep = (np.arange(6 * 5, dtype=np.uint16).reshape(6, 5) * 2000)
  tifffile.imwrite(root / "sub" / "h_16bit.tiff", np.stack([deep] * 3, -1))
  shapes["sub/h_16bit.tiff"] = (6, 5)
  save("sub/i_grey16.png", deep)  # Pillow reads it as mode I;16.
  # Broken files: random bytes named .jpg, and a JPEG cut in half.
  (root / "sub" / "corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(500))
  Image.fromarray(_rgb(64, 64, 6)).save(root / "full.jpg", quality=95)
  data = (root / "full.jpg").read_bytes()
  (root / "full.jpg").unlink()
  (root / "truncated.jpg").write_bytes(data[:len(data) // 2])
  # Ignored: other extensions and hidden files.
  (root / "notes.txt").write_text("not an image")
  Image.fromarray(_rgb(5, 5)).save(root / ".hidden.png")
  return shapes


def test_folder_decodes_every_format_and_skips_broken_files_once(tmp_path):
  shapes = _make_tree(tmp_path)
  cfg = DataConfig(dataset="folder", image_dir=str(tmp_path))
  source = sources.load_source(cfg, "test")
  elements = _elements(source)
  assert source.name == "folder" and source.cacheable
  assert source.num_images == len(shapes) + 2  # Files found, broken ones included.
  assert [i for i, _ in elements] == sorted(shapes)  # Sorted relative paths, no broken ones.
  for image_id, image in elements:
    assert image.dtype == np.uint8 and image.shape == (*shapes[image_id], 3), image_id
  images = dict(elements)
  np.testing.assert_array_equal(images["a_rgb.png"], _rgb(20, 30, 1))
  np.testing.assert_array_equal(images["c_grey.png"], np.full((10, 12, 3), 77, np.uint8))
  np.testing.assert_array_equal(images["d_rgba.png"][:4, 0], [[0, 50, 0]] * 4)
  np.testing.assert_array_equal(images["d_rgba.png"][4:, 0], [[255, 255, 255]] * 4)
  np.testing.assert_array_equal(images["e_bitmap.bmp"], _rgb(7, 11, 3))
  np.testing.assert_array_equal(images["sub/deeper/g_web.webp"], _rgb(9, 9, 5))
  expected_16bit = (np.arange(30).reshape(6, 5) * 2000 // 256).astype(np.uint8)
  np.testing.assert_array_equal(images["sub/h_16bit.tiff"][..., 0], expected_16bit)
  np.testing.assert_array_equal(images["sub/i_grey16.png"], np.stack([expected_16bit] * 3, -1))
  assert source.skipped.count == 2
  assert sorted(Path(name).name for name in source.skipped.names) == ["corrupt.jpg",
                                                                      "truncated.jpg"]
  # A second epoch meets the broken files again but counts them once.
  assert len(_elements(source)) == len(shapes)
  assert source.skipped.count == 2


def test_folder_seeded_split_is_deterministic_disjoint_and_complete(tmp_path):
  for i in range(10):
    Image.fromarray(_rgb(4, 4, i)).save(tmp_path / f"img{i:02d}.png")
  cfg = DataConfig(dataset="folder", image_dir=str(tmp_path), folder_test_fraction=0.3,
                   split_seed=3)

  def ids(split, config=cfg):
    return [i for i, _ in _elements(sources.load_source(config, split))]

  train, test = ids("train"), ids("test")
  assert len(test) == 3 and len(train) == 7
  assert not set(train) & set(test)
  assert sorted(train + test) == [f"img{i:02d}.png" for i in range(10)]
  assert test == sorted(test) and train == sorted(train)
  assert ids("test") == test  # Deterministic.
  other_seeds = {tuple(sources.split_files(sorted(train + test), 0.3, seed)["test"])
                 for seed in range(5)}
  assert len(other_seeds) > 1  # The seed matters.
  no_split = DataConfig(dataset="folder", image_dir=str(tmp_path))
  assert ids("train", no_split) == ids("test", no_split) == sorted(train + test)


def test_folder_missing_or_empty_dir_raises_naming_flag_and_path(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(ValueError, match=r"--image_dir=.*nowhere"):
    sources.load_source(DataConfig(dataset="folder", image_dir=str(missing)), "train")
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "readme.txt").write_text("no images here")
  with pytest.raises(ValueError, match=r"no images found in .*empty"):
    sources.load_source(DataConfig(dataset="folder", image_dir=str(tmp_path / "empty")), "test")
  with pytest.raises(ValueError, match="--image_dir is required"):
    sources.load_source(DataConfig(dataset="folder"), "train")
  with pytest.raises(ValueError, match="split"):
    sources.load_source(DataConfig(), "validation")


def test_extra_train_dirs_are_appended_to_train_only(tmp_path):
  extra = tmp_path / "more"
  (extra / "nested").mkdir(parents=True)
  Image.fromarray(_rgb(10, 10, 1)).save(extra / "x.png")
  Image.fromarray(_rgb(12, 10, 2)).save(extra / "nested" / "y.jpg")
  (extra / "bad.png").write_bytes(b"\x89PNG but not really")
  cfg = DataConfig(extra_train_dirs=(str(extra),))
  train = sources.load_source(cfg, "train")
  ids = [i for i, _ in _elements(train)]
  assert ids == list(sources.SAMPLE_IMAGES) + ["more/nested/y.jpg", "more/x.png"]
  assert train.num_images == len(sources.SAMPLE_IMAGES) + 3 and train.cacheable
  assert train.skipped.count == 1 and train.skipped.names[0].endswith("bad.png")
  test = sources.load_source(cfg, "test")
  assert [i for i, _ in _elements(test)] == list(sources.SAMPLE_IMAGES)
  with pytest.raises(ValueError, match=r"--extra_train_dirs=.*missing"):
    sources.load_source(DataConfig(extra_train_dirs=(str(tmp_path / "missing"),)), "train")


# --------------------------------------------------------------------------
# bsd300.

TINY_TRAIN = ("1001", "1002", "2003", "2004")
TINY_TEST = ("3001", "3002")


def _make_bsds300(parent: Path) -> Path:
  """A BSDS300-shaped tree: 4 + 2 small JPEGs and one corrupt train image."""
  root = parent / "BSDS300"
  for split, ids in (("train", TINY_TRAIN + ("9999",)), ("test", TINY_TEST)):
    (root / "images" / split).mkdir(parents=True)
    # Unsorted, with a blank line: the builder sorts and cleans the ids.
    (root / f"iids_{split}.txt").write_text("\n".join(reversed(ids)) + "\n\n")
    for k, image_id in enumerate(ids):
      path = root / "images" / split / f"{image_id}.jpg"
      if image_id == "9999":
        path.write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole JPEG")
      else:
        shape = (12, 18) if k % 2 else (18, 12)
        Image.fromarray(_rgb(*shape, int(image_id))).save(path, quality=95)
  return root


def _check_tiny_bsd300(cfg):
  train = sources.load_source(cfg, "train")
  test = sources.load_source(cfg, "test")
  assert train.name == "bsd300" and train.cacheable
  assert (train.num_images, test.num_images) == (4, 2)
  train_elements, test_elements = _elements(train), _elements(test)
  assert [i for i, _ in train_elements] == list(TINY_TRAIN)
  assert [i for i, _ in test_elements] == list(TINY_TEST)
  for _, image in train_elements + test_elements:
    assert image.dtype == np.uint8 and image.shape in ((12, 18, 3), (18, 12, 3))
  assert train.skipped.count == 1 and train.skipped.names == ["bsd300/9999"]
  assert not any(Path(cfg.data_dir, "downloads").glob("*.tgz"))  # Nothing downloaded.


def test_bsd300_builds_from_extracted_folder_or_its_parent(tmp_path):
  root = _make_bsds300(tmp_path / "manual")
  _check_tiny_bsd300(DataConfig(dataset="bsd300", manual_dir=str(root),
                                data_dir=str(tmp_path / "tfds_a")))
  _check_tiny_bsd300(DataConfig(dataset="bsd300", manual_dir=str(root.parent),
                                data_dir=str(tmp_path / "tfds_b")))


def test_bsd300_builds_from_tarball(tmp_path):
  root = _make_bsds300(tmp_path / "tree")
  tarball = tmp_path / "dl" / bsd300.TARBALL_NAME
  tarball.parent.mkdir()
  with tarfile.open(tarball, "w:gz") as tar:
    tar.add(root, arcname="BSDS300")
  _check_tiny_bsd300(DataConfig(dataset="bsd300", manual_dir=str(tarball),
                                data_dir=str(tmp_path / "tfds_a")))
  _check_tiny_bsd300(DataConfig(dataset="bsd300", manual_dir=str(tarball.parent),
                                data_dir=str(tmp_path / "tfds_b")))


def test_bsd300_without_data_raises_naming_manual_dir(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match=r"--manual_dir=.*nowhere"):
    sources.load_source(DataConfig(dataset="bsd300", manual_dir=str(tmp_path / "nowhere"),
                                   data_dir=str(tmp_path / "tfds")), "train")
  (tmp_path / "junk").mkdir()
  (tmp_path / "junk" / "a.txt").write_text("x")
  with pytest.raises(ValueError, match=r"--manual_dir=.*junk.*holds no BSDS300"):
    sources.load_source(DataConfig(dataset="bsd300", manual_dir=str(tmp_path / "junk"),
                                   data_dir=str(tmp_path / "tfds")), "train")

  def offline(*args, **kwargs):
    raise ConnectionError("network unreachable")

  monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", offline)
  with pytest.raises(ValueError, match="could not download .*BSDS300-images.tgz.*--manual_dir"):
    sources.load_source(DataConfig(dataset="bsd300", data_dir=str(tmp_path / "tfds")), "train")


def _shared_bsds300() -> Path | None:
  for candidate in (os.environ.get("CASCADE_BSDS300_DIR"), SHARED_BSDS300):
    if candidate and bsd300.is_bsds300_root(candidate):
      return Path(candidate)
  return None


@pytest.fixture(scope="module")
def real_bsd300_cfg(tmp_path_factory):
  root = _shared_bsds300()
  if root is None:
    pytest.skip(f"BSDS300 not found at $CASCADE_BSDS300_DIR or {SHARED_BSDS300}.")
  return DataConfig(dataset="bsd300", manual_dir=str(root),
                    data_dir=str(tmp_path_factory.mktemp("tfds")))


def test_bsd300_real_data_has_200_train_and_100_test_images(real_bsd300_cfg):
  root = Path(real_bsd300_cfg.manual_dir)
  for split, count in (("train", 200), ("test", 100)):
    source = sources.load_source(real_bsd300_cfg, split)
    assert source.num_images == count and source.skipped.count == 0
    expected_ids = sorted((root / f"iids_{split}.txt").read_text().split())
    ids = [e["id"].numpy().decode() for e in source.dataset.map(lambda e: {"id": e["id"]})]
    assert ids == expected_ids
  first = next(iter(sources.load_source(real_bsd300_cfg, "test").dataset))
  assert first["image"].dtype == tf.uint8 and first["image"].shape in ((321, 481, 3),
                                                                       (481, 321, 3))
  assert first["id"].numpy().decode() == expected_ids[0]


# --------------------------------------------------------------------------
# imagenet.


def test_imagenet_test_split_windows():
  assert sources.imagenet_test_split(50000, 1000, 0) == "validation[0:1000]"
  assert sources.imagenet_test_split(50000, 1000, 3) == "validation[3000:4000]"
  assert sources.imagenet_test_split(50, 1000, 7) == "validation[0:50]"
  assert sources.imagenet_test_split(None, 10, 2) == "validation[:10]"
  with pytest.raises(ValueError, match="imagenet_eval_images"):
    sources.imagenet_test_split(50000, 0, 0)


def test_imagenet_with_mock_data(tmp_path):
  manual = tmp_path / "imagenet_tars"
  manual.mkdir()
  for name in sources.IMAGENET_MANUAL_FILES:
    (manual / name).write_bytes(b"")
  cfg = DataConfig(dataset="imagenet", manual_dir=str(manual), data_dir=str(tmp_path / "tfds"),
                   imagenet_eval_images=5)
  with tfds.testing.mock_data(num_examples=7):
    train = sources.load_source(cfg, "train")
    assert train.name == "imagenet" and not train.cacheable
    train_elements = _elements(train)
    assert len(train_elements) == 7
    test = sources.load_source(cfg, "test")
    test_elements = _elements(test)
    assert test.num_images == 5 and len(test_elements) == 5
    for image_id, image in train_elements + test_elements:
      assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image_id
    # Deterministic order; a subset bigger than the (mocked) split gives the whole split.
    assert [i for i, _ in _elements(sources.load_source(cfg, "test"))] == [
        i for i, _ in test_elements]
    bigger = DataConfig(dataset="imagenet", manual_dir=str(manual),
                        data_dir=str(tmp_path / "tfds"), imagenet_eval_images=20)
    assert len(_elements(sources.load_source(bigger, "test"))) == 7


def test_imagenet_without_manual_files_raises_naming_manual_dir(tmp_path):
  (tmp_path / "tars").mkdir()
  (tmp_path / "tars" / sources.IMAGENET_MANUAL_FILES[0]).write_bytes(b"")
  cfg = DataConfig(dataset="imagenet", manual_dir=str(tmp_path / "tars"),
                   data_dir=str(tmp_path / "tfds"))
  with pytest.raises(ValueError, match=r"--manual_dir=.*ILSVRC2012_img_val\.tar"):
    sources.load_source(cfg, "test")
  with pytest.raises(ValueError, match=r"manual dir .*downloads/manual \(--manual_dir=None\)"):
    sources.load_source(DataConfig(dataset="imagenet", data_dir=str(tmp_path / "tfds")), "test")


class _SlowBuilder:
  """A stand-in TFDS builder whose preparation takes a while and is counted."""
  prepared = False
  calls = 0

  def __init__(self, root):
    self.data_dir_root, self.name = str(root), "slow"

  def is_prepared(self):
    return _SlowBuilder.prepared


def _prepare_slowly(builder):
  _SlowBuilder.calls += 1
  time.sleep(0.3)
  _SlowBuilder.prepared = True


def test_prepared_builder_prepares_once_when_jobs_race(tmp_path, monkeypatch):
  monkeypatch.setattr(_SlowBuilder, "prepared", False)
  monkeypatch.setattr(_SlowBuilder, "calls", 0)
  # flock locks belong to the open file, so threads exclude each other as processes do.
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    builders = list(pool.map(
        lambda _: sources.prepared_builder(lambda: _SlowBuilder(tmp_path / "tfds"),
                                           _prepare_slowly), range(3)))
  assert _SlowBuilder.calls == 1 and all(b.is_prepared() for b in builders)
  assert (tmp_path / "tfds" / "slow.prepare.lock").exists()


def test_two_jobs_building_bsd300_at_once_both_get_it(tmp_path):
  root = _make_bsds300(tmp_path / "manual")
  cfg = DataConfig(dataset="bsd300", manual_dir=str(root), data_dir=str(tmp_path / "tfds"))
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    counts = list(pool.map(lambda _: sources.load_source(cfg, "train").num_images, range(2)))
  assert counts == [4, 4]
  _check_tiny_bsd300(cfg)
