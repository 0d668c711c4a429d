"""Tests of tiled inference (cascade_tf/tiling.py) and photo repair (restore.py).

The networks are the tiny preset's with seeded random weights, written as a
`joint` checkpoint (no training loop needed). Random networks are a fair
test of tiling: what matters is how far each output pixel looks, not what
the network learnt.
"""

import os
from pathlib import Path
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
from skimage import data as skimage_data
import tensorflow as tf

from cascade_tf import inference
from cascade_tf import restoring
from cascade_tf import tiling
from cascade_tf.models.cascade import cascade_inputs
from scripts import fuzz_export

import workdirs  # pylint: disable=g-bad-import-order

ROOT = Path(__file__).resolve().parents[1]
MULTIPLE = 32  # 2 ** generator.num_levels of the tiny preset.


make_workdir = workdirs.make_random_workdir


def photo(height: int, width: int) -> np.ndarray:
  """float32 [H, W, 3] in [0, 1]: the astronaut photo resized."""
  image = tf.image.resize(skimage_data.astronaut(), [height, width], antialias=True)
  return np.clip(np.round(image.numpy()), 0, 255).astype(np.float32) / 255.0


def save_png(path: Path, image_01: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.round(image_01 * 255).astype(np.uint8)).save(path)


def read_png(path) -> np.ndarray:
  return np.asarray(Image.open(path)).astype(np.float32) / 255.0


def untiled(model, image_01: np.ndarray) -> dict[str, np.ndarray]:
  """The whole image, reflect-padded to a multiple of 32, through the Keras cascade at once."""
  height, width = image_01.shape[:2]
  padded = np.pad(image_01, [(0, -height % MULTIPLE), (0, -width % MULTIPLE), (0, 0)],
                  mode="reflect")
  out = model(cascade_inputs(padded[None] * 2.0 - 1.0), training=False)
  return {name: np.clip((v.numpy()[0, :height, :width] + 1.0) / 2.0, 0.0, 1.0)
          for name, v in out.items()}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return make_workdir(tmp_path_factory.mktemp("workdir"))


@pytest.fixture(scope="module")
def loaded(workdir):
  return inference.load_workdir_cascade(workdir)


# --------------------------------------------------------------------------
# Tiling.


@pytest.mark.parametrize("overlap", [1, 8, 32, 64])
def test_seam_ramps_add_up_to_one(overlap):
  ramp = tiling.seam_ramp(overlap)
  np.testing.assert_allclose(ramp + ramp[::-1], 1.0, atol=1e-12)
  assert np.all(np.diff(ramp) >= 0)
  margin = overlap // 4
  assert np.all(ramp[:margin] == 0) and np.all(ramp[overlap - margin:] == 1)


def test_axis_layout_covers_the_image_on_the_stride_grid():
  layout = tiling.axis_layout(1000, 128, 32, MULTIPLE)
  assert layout.starts == tuple(range(0, 1000 - 128 + 96, 96))
  assert layout.padded == layout.starts[-1] + 128 >= 1000
  assert all(start % 32 == 0 for start in layout.starts)
  assert layout.weights[0][0] == 1 and layout.weights[-1][-1] == 1  # image borders untapered
  # Axes shorter than a tile: one tile, rounded up to the size multiple.
  short = tiling.axis_layout(45, 128, 32, MULTIPLE)
  assert (short.starts, short.tile, short.padded) == ((0,), 64, 64)
  assert tiling.axis_layout(1000, 0, 0, MULTIPLE).tile == 1024


def test_identity_tiles_reassemble_the_image_exactly():
  image = np.random.default_rng(0).uniform(size=[75, 130, 3]).astype(np.float32)
  out = tiling.apply_tiled(image, lambda batch, masks: {"restored": batch}, tile_size=32, overlap=16,
                           multiple=MULTIPLE, batch_size=5)
  np.testing.assert_allclose(out["restored"], image, rtol=0, atol=1e-6)


def test_tiling_is_exact_for_a_bounded_receptive_field(loaded):
  """The restorer alone sees 8 px (eight 3x3 convs) <= overlap / 4: no error at all."""
  def restorer(batch, masks):
    del masks
    return {"restored": (loaded.restorer(batch * 2.0 - 1.0, training=False).numpy() + 1.0) / 2.0}

  image = photo(150, 230)
  whole = tiling.apply_tiled(image, restorer, tile_size=0, overlap=0, multiple=MULTIPLE)
  tiled = tiling.apply_tiled(image, restorer, tile_size=64, overlap=32, multiple=MULTIPLE,
                             batch_size=4)
  assert np.abs(whole["restored"] - image).mean() > 1e-3  # the network does something
  np.testing.assert_allclose(tiled["restored"], whole["restored"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("length", [1, 2, 5, 40])
@pytest.mark.parametrize("extra", [0, 1, 7, 100])
def test_reflect_indices_match_numpy_reflect_padding(length, extra):
  axis = np.arange(length)
  padded = np.pad(axis, (0, extra), mode="reflect")
  for start in range(0, length + extra, 3):
    size = min(4, length + extra - start)
    np.testing.assert_array_equal(tiling.reflect_indices(start, size, length),
                                  padded[start:start + size])


def test_uint8_input_with_hole_equals_the_float_path(loaded):
  """apply_tiled on uint8 pixels and a bool hole (restore.py's memory-saving path) gives
  what the float image with its hole filled gives, and its uint8 output is that rounded."""
  def cascade(batch, masks):
    out = loaded.model(cascade_inputs(batch * 2.0 - 1.0, masks), training=False)
    return {k: np.clip((v.numpy() + 1.0) / 2.0, 0.0, 1.0) for k, v in out.items()}

  pixels = np.round(photo(150, 230) * 255.0).astype(np.uint8)
  hole = np.zeros([150, 230], bool)
  hole[40:90, 100:180] = True
  filled = np.where(hole[..., None], np.float32(0.5), pixels.astype(np.float32) / 255.0)
  options = dict(tile_size=64, overlap=32, multiple=MULTIPLE, batch_size=3,
                 outputs=("restored", "inpainted"))
  as_float = tiling.apply_tiled(filled, cascade, **options)
  as_uint8 = tiling.apply_tiled(pixels, cascade, hole=hole, fill=0.5, dtype=np.uint8, **options)
  for name in ("restored", "inpainted"):
    assert as_uint8[name].dtype == np.uint8 and as_uint8[name].shape == (150, 230, 3)
    expected = np.round(np.clip(as_float[name], 0.0, 1.0) * 255.0)
    # Equal up to float rounding of the blend landing on the other side of a .5 level.
    difference = np.abs(as_uint8[name].astype(np.float32) - expected)
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
  assert np.abs(as_float["inpainted"] - filled).mean() > 1e-3  # the model changes something


# --------------------------------------------------------------------------
# restore.py.


def test_restore_cli_tiles_a_large_photo_and_skips_a_corrupt_file(workdir, loaded, tmp_path):
  """restore.py on a 1000x750 photo in 64-px tiles vs the untiled model, in the interior.

  Tolerance. The generator's five stride-2 levels let every output pixel see
  the whole tile, so tiles cannot reproduce the untiled result exactly: they
  lack the context beyond the tile. (The blending itself is exact, see
  test_tiling_is_exact_for_a_bounded_receptive_field.) Away from the image
  border the missing context may change a pixel by at most 4 of 255 levels
  and the mean by at most half a level, under 2% of the ~25 levels by which
  this model changes the photo; measured here: 3 and ~0.2 levels. A seam or
  offset bug (a tile misplaced by one pixel, unnormalised weights) costs
  tens of levels.
  """
  inputs = tmp_path / "in"
  image = photo(750, 1000)
  save_png(inputs / "photo.png", image)
  save_png(inputs / "sub" / "small.png", photo(40, 60))
  (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
  (inputs / "notes.txt").write_text("not an image, not counted")
  output_dir = tmp_path / "out"
  result = subprocess.run(
      [sys.executable, "restore.py", str(inputs), f"--workdir={workdir}",
       f"--output_dir={output_dir}", "--tile_size=64", "--tile_overlap=32", "--batch_size=16"],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(p.relative_to(output_dir).as_posix() for p in output_dir.rglob("*.png")) == [
      "photo.png", "sub/small.png"]
  assert f"Skipped {inputs / 'broken.jpg'}: unreadable" in result.stderr
  assert "Restored 2 image(s)" in result.stderr and "skipped 1." in result.stderr

  tiled_levels = np.asarray(Image.open(output_dir / "photo.png")).astype(np.float32)
  reference = untiled(loaded.model, image)["restored"]
  reference_levels = np.round(reference * 255.0)
  assert tiled_levels.shape == reference_levels.shape == (750, 1000, 3)
  difference = np.abs(tiled_levels - reference_levels)[32:-32, 32:-32]
  edit = np.abs(reference - image)[32:-32, 32:-32].mean() * 255.0
  assert edit > 10  # the model changes the photo noticeably, so the comparison means something
  assert difference.max() <= 4
  assert difference.mean() <= 0.5
  small = np.asarray(Image.open(output_dir / "sub" / "small.png"))
  assert small.shape == (40, 60, 3)


def test_centre_hole_mask_resize_and_intermediate(workdir, loaded, tmp_path):
  """Holes within the model's reach (half its 32-px training size): filled in one pass."""
  repairer = inference.Repairer(workdir)
  image = photo(32, 48)
  save_png(tmp_path / "in" / "a.png", image)
  mask = np.zeros([32, 48, 3], np.float32)
  mask[10:20, 20:32] = 1.0
  save_png(tmp_path / "mask.png", mask)

  options = restoring.RestoreOptions(hole="centre", tile_size=0, save_intermediate=True)
  report = restoring.restore_paths(repairer, [str(tmp_path / "in")], str(tmp_path / "centre"),
                                 options)
  assert report.written == [str(tmp_path / "centre" / "a.png")] and not report.skipped
  holed = image.copy()
  holed[8:24, 16:32] = 0.5  # side min(32, 48) // 2 = 16, centred
  np.testing.assert_array_equal(restoring.centre_hole_mask(32, 48), np.all(holed == 0.5, -1))
  expected = untiled(loaded.model, holed)
  for name, suffix in (("restored", ""), ("inpainted", "_inpainted")):
    got = read_png(tmp_path / "centre" / f"a{suffix}.png")
    np.testing.assert_allclose(got, expected[name], rtol=0, atol=0.5 / 255 + 1e-6)

  options = restoring.RestoreOptions(mask_path=str(tmp_path / "mask.png"), tile_size=0)
  restoring.restore_paths(repairer, [str(tmp_path / "in" / "a.png")], str(tmp_path / "masked"),
                        options)
  holed = np.where(mask > 0.5, np.float32(0.5), image)
  np.testing.assert_allclose(read_png(tmp_path / "masked" / "a.png"),
                             untiled(loaded.model, holed)["restored"], rtol=0,
                             atol=0.5 / 255 + 1e-6)

  # A mask of another size skips the image, naming both files and sizes.
  save_png(tmp_path / "in2" / "b.png", photo(48, 64))
  report = restoring.restore_paths(repairer, [str(tmp_path / "in2")], str(tmp_path / "none"),
                                 options)
  reason = report.skipped[0][1]
  assert not report.written and f"mask {tmp_path / 'mask.png'} is 48x32 px" in reason
  assert f"the image {tmp_path / 'in2' / 'b.png'} is 64x48 px" in reason

  options = restoring.RestoreOptions(resize_short_side=64, tile_size=0)
  restoring.restore_paths(repairer, [str(tmp_path / "in" / "a.png")], str(tmp_path / "large"),
                        options)
  assert read_png(tmp_path / "large" / "a.png").shape == (64, 96, 3)


def test_self_ensemble_option_runs_the_ensembled_cascade(workdir, loaded, tmp_path):
  image = photo(32, 64)  # Not square: the quarter turns swap height and width.
  save_png(tmp_path / "a.png", image)
  options = restoring.RestoreOptions(tile_size=0, self_ensemble=8, precision="float32")
  restoring.restore_paths(workdir, [str(tmp_path / "a.png")], str(tmp_path / "out"), options)
  got = read_png(tmp_path / "out" / "a.png")
  expected = untiled(inference.load_workdir_cascade(workdir, self_ensemble=8).model, image)
  np.testing.assert_allclose(got, expected["restored"], rtol=0, atol=0.5 / 255 + 1e-6)
  assert np.abs(expected["restored"] - untiled(loaded.model, image)["restored"]).max() > 2 / 255


def test_freeze_option_runs_the_frozen_cascade_with_the_same_result(workdir, loaded, tmp_path,
                                                                   monkeypatch):
  frozen = []
  real_freeze = inference.freeze
  monkeypatch.setattr(inference, "freeze",
                      lambda fn, *specs: frozen.append(specs) or real_freeze(fn, *specs))
  image = photo(32, 64)
  save_png(tmp_path / "a.png", image)
  options = restoring.RestoreOptions(tile_size=0, freeze=True, precision="float32")
  restoring.restore_paths(workdir, [str(tmp_path / "a.png")], str(tmp_path / "out"), options)
  assert len(frozen) == 1  # One frozen graph for every size.
  np.testing.assert_allclose(read_png(tmp_path / "out" / "a.png"),
                             untiled(loaded.model, image)["restored"], rtol=0,
                             atol=0.5 / 255 + 1e-6)


def test_holes_beyond_the_models_reach_are_filled_at_a_reduced_scale():
  """A 150 x 100 px hole in a 400 x 600 photo, for a model trained at 64 px (reach 32 px):
  the model sees a shrunken window with the hole 32 px across, its fill lands exactly in the
  hole, and small holes are left to the tiled pass."""
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, [400, 600, 3], dtype=np.uint8)
  before = image.copy()
  hole = np.zeros([400, 600], bool)
  hole[100:250, 300:400] = True  # 150 x 100: too large.
  hole[20:30, 20:40] = True  # 10 x 20: within reach.
  calls = []

  def repair(images, masks):
    calls.append((images.shape, masks.copy(), images.copy()))
    return {"inpainted": np.full(images.shape, 0.25, np.float32)}

  out, remaining, filled = restoring.fill_large_holes(image, hole, repair, tile_size=64,
                                                      multiple=32, fill=0.5)
  assert filled == 1 and len(calls) == 1
  (shape, masks, images) = calls[0]
  assert shape[1] % 32 == 0 and shape[2] % 32 == 0 and shape[1] <= 96
  rows = np.nonzero(masks[0, ..., 0].any(axis=1))[0]
  assert 30 <= rows.max() - rows.min() + 1 <= 36  # The hole is ~32 px across there.
  assert np.all(images[masks[..., 0] > 0.5] == 0.5)  # Filled with grey before the model sees it.
  assert np.all(out[100:250, 300:400] == 64)  # round(0.25 * 255): the model's fill, pasted.
  np.testing.assert_array_equal(out[~hole], before[~hole])  # Nothing else changed...
  np.testing.assert_array_equal(out[20:30, 20:40], before[20:30, 20:40])  # ...not small ones.
  np.testing.assert_array_equal(remaining, hole & (np.arange(400) < 50)[:, None])


def test_inpaint_mode_with_a_mask_dir_changes_nothing_outside_the_dilated_mask(workdir,
                                                                                tmp_path):
  inputs, masks = tmp_path / "in", tmp_path / "masks"
  image = photo(64, 96)
  save_png(inputs / "a.png", image)
  save_png(inputs / "sub" / "b.png", photo(64, 64))
  save_png(inputs / "c.png", photo(64, 64))  # No mask for it: skipped, named.
  mask = np.zeros([64, 96, 3], np.float32)
  mask[20:24, 10:80] = 1.0  # A scratch.
  save_png(masks / "a.png", mask)
  save_png(masks / "sub" / "b.png", np.zeros([64, 64, 3], np.float32))
  options = restoring.RestoreOptions(mask_dir=str(masks), mask_dilate=3, mode="inpaint",
                                     tile_size=0)
  report = restoring.restore_paths(workdir, [str(inputs)], str(tmp_path / "out"), options)
  assert sorted(report.written) == [str(tmp_path / "out" / "a.png"),
                                    str(tmp_path / "out" / "sub" / "b.png")]
  assert report.skipped == [(str(inputs / "c.png"), report.skipped[0][1])]
  assert "no mask for it in --mask_dir" in report.skipped[0][1]
  pixels = np.round(image * 255).astype(np.uint8)
  got = np.asarray(Image.open(tmp_path / "out" / "a.png"))
  dilated = restoring.dilate(mask[..., 0] > 0.5, 3)
  assert dilated.sum() > (mask[..., 0] > 0.5).sum()  # Grown by 3 px on every side.
  assert dilated[17:27, 10:80].all() and dilated[20:24, 7:83].all()  # A disk of radius 3.
  assert not dilated[16].any() and not dilated[:, 6].any() and not dilated[17, 7]
  np.testing.assert_array_equal(got[~dilated], pixels[~dilated])  # Nothing else changed.
  assert not np.array_equal(got[dilated], pixels[dilated])  # The hole holds the model's fill.
  # An empty mask: nothing to fill, the photo comes back unchanged.
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "sub" / "b.png")),
                                np.round(photo(64, 64) * 255).astype(np.uint8))


@pytest.mark.parametrize("options,match", [
    (restoring.RestoreOptions(hole="corner"), "--hole=corner"),
    (restoring.RestoreOptions(hole="centre", mask_path="m.png"), "only one of them"),
    (restoring.RestoreOptions(mask_path="m.png", mask_dir="."), "only one of them"),
    (restoring.RestoreOptions(mode="inpaint"), "--mode=inpaint changes only the hole"),
    (restoring.RestoreOptions(mode="everything"), "--mode=everything"),
    (restoring.RestoreOptions(hole="centre", mode="inpaint", save_intermediate=True),
     "--save_intermediate"),
    (restoring.RestoreOptions(mask_dir="no/such/folder"), "--mask_dir=no/such/folder"),
    (restoring.RestoreOptions(hole="centre", mask_dilate=-2), "--mask_dilate=-2"),
    (restoring.RestoreOptions(tile_size=48), "--tile_size=48"),
    (restoring.RestoreOptions(tile_size=64, tile_overlap=40), "--tile_overlap=40"),
    (restoring.RestoreOptions(batch_size=0), "--batch_size=0"),
    (restoring.RestoreOptions(max_pixels=-1), "--max_pixels=-1"),
    (restoring.RestoreOptions(max_pixels=10 ** 9), "Pillow refuses larger images"),
    (restoring.RestoreOptions(self_ensemble=6), "--self_ensemble=6"),
])
def test_restore_rejects_bad_options(workdir, tmp_path, options, match):
  save_png(tmp_path / "d.png", photo(32, 32))
  with pytest.raises(ValueError, match=match):
    restoring.restore_paths(workdir, [str(tmp_path / "d.png")], str(tmp_path / "out"), options)


def test_restore_skips_files_over_max_pixels_before_decoding(workdir, tmp_path):
  inputs = tmp_path / "in"
  save_png(inputs / "small.png", photo(40, 60))  # 2,400 px
  save_png(inputs / "large.png", photo(64, 96))  # 6,144 px
  # PNGs whose header declares 30000 x 5000 px (150 MP) and 30000 x 20000 px
  # (600 MP, over Pillow's own guard) behind 4 KiB of pixel data: refused
  # from the header, so the missing data is never reached.
  rng = np.random.default_rng(0)
  for name, height in (("huge.png", 5000), ("huger.png", 20000)):
    (inputs / name).write_bytes(fuzz_export.png_declaring(30000, height, rng))
  result = subprocess.run(
      [sys.executable, "restore.py", str(inputs), f"--workdir={workdir}", "--max_pixels=5000",
       f"--output_dir={tmp_path / 'out'}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(tmp_path / "out")) == ["small.png"]
  assert (f"Skipped {inputs / 'large.png'}: too large: 96x64 px (6,144 pixels), over the limit "
          "of 5,000 (--max_pixels=5000); nothing was decoded") in result.stderr
  assert (f"Skipped {inputs / 'huge.png'}: too large: 30000x5000 px (150,000,000 pixels)"
          in result.stderr)
  assert (f"Skipped {inputs / 'huger.png'}: too large for Pillow (Image size (600000000 pixels) "
          "exceeds limit") in result.stderr
  assert "Restored 1 image(s)" in result.stderr and "skipped 3." in result.stderr


def test_restore_rejects_bad_model_and_empty_input(workdir, tmp_path):
  with pytest.raises(ValueError, match="--model="):
    restoring.restore_paths(str(tmp_path), [str(tmp_path)], str(tmp_path / "out"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="No image files found"):
    restoring.restore_paths(workdir, [str(tmp_path / "empty")], str(tmp_path / "out"))


def test_restore_memory_benchmark_runs_each_precision_self_ensemble_and_freeze(monkeypatch,
                                                                           capsys):
  """benchmarks/restore_memory.py: one restore.py per precision x self-ensemble x freeze, labelled.

  restore.py itself is replaced by a recorder (each real run takes seconds;
  the CLI is tested above), so this checks what the benchmark asks for.
  """
  from benchmarks import restore_memory
  calls = []

  def fake_run(repo, photo, workdir, output_dir, extra):
    del repo, workdir, output_dir
    calls.append((os.path.basename(photo), extra))
    return 100.0 + 10.0 * len(calls), 1.0 + len(calls), ""

  monkeypatch.setattr(restore_memory, "run_restore", fake_run)
  assert restore_memory.main(["--megapixels=0.01", "--precisions=float32",
                              "--self_ensembles=1,4", "--freeze=off,on"]) == 0
  # Past tiling and precision, only the flags that differ from restore.py's defaults.
  assert [(name, extra[3:]) for name, extra in calls] == [
      ("small.png", []), ("photo_0.01mp.jpg", []),
      ("small.png", ["--freeze"]), ("photo_0.01mp.jpg", ["--freeze"]),
      ("small.png", ["--self_ensemble=4"]), ("photo_0.01mp.jpg", ["--self_ensemble=4"]),
      ("small.png", ["--self_ensemble=4", "--freeze"]),
      ("photo_0.01mp.jpg", ["--self_ensemble=4", "--freeze"])]
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| float32")]
  assert [row.split(" | ")[0] for row in rows] == [
      "| float32, self-ensemble 1, not frozen", "| float32, self-ensemble 1, frozen",
      "| float32, self-ensemble 4, not frozen", "| float32, self-ensemble 4, frozen"]
  for bad, message in (("--self_ensembles=3", "--self_ensembles=3: expected one of"),
                       ("--self_ensembles=x", "--self_ensembles=x: expected integers"),
                       ("--freeze=yes", "--freeze=yes: expected off, on or off,on")):
    with pytest.raises(SystemExit):
      restore_memory.main([bad])
    assert message in capsys.readouterr().err
