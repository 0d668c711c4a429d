"""Tests of cascade_tf.evaluation.baselines on small images with known answers."""

import sys

import numpy as np
import pytest
from scipy import ndimage
from skimage import data, transform

from cascade_tf import config
from cascade_tf.evaluation import baselines

SIZE = 64
HOLE = 32


def _psnr(clean, restored):
  mse = np.mean((clean.astype(np.float64) - restored)**2)
  return 10 * np.log10(1.0 / max(mse, 1e-10))  # 100 dB cap, as cascade_tf.metrics.


def _gaussian_kernel(sigma, size=15):
  coords = np.arange(size) - size // 2
  kernel = np.exp(-(coords[:, None]**2 + coords[None, :]**2) / (2 * sigma**2))
  return (kernel / kernel.sum()).astype(np.float32)


def _delta_kernel(size=15):
  kernel = np.zeros((size, size), np.float32)
  kernel[size // 2, size // 2] = 1
  return kernel


def _hole_mask(size=SIZE, hole=HOLE):
  mask = np.zeros((size, size, 1), np.float32)
  start = (size - hole) // 2
  mask[start:start + hole, start:start + hole] = 1
  return mask


def _astronaut():
  """A 64x64 crop (face and suit) of the astronaut at 128 px, float32 in [0, 1]."""
  image = transform.resize(data.astronaut(), (128, 128), anti_aliasing=True)
  return image[8:8 + SIZE, 32:32 + SIZE].astype(np.float32)


def _gradient():
  """A smooth colour ramp [64, 64, 3] in [0.1, 0.9]."""
  ramp = np.linspace(0.1, 0.9, SIZE, dtype=np.float32)
  rows, cols = np.meshgrid(ramp, ramp, indexing="ij")
  return np.stack([rows, cols, (rows + cols) / 2], axis=-1)


def _example(clean, track, mask=None, kernel=None, noise_sigma=0.0, seed=0):
  """Corrupts `clean` like the protocol: blur (symmetric padding), noise, hole."""
  kernel = _delta_kernel() if kernel is None else kernel
  mask = np.zeros(clean.shape[:2] + (1,), np.float32) if mask is None else mask
  corrupted = np.stack(
      [ndimage.convolve(clean[..., c], kernel, mode="reflect") for c in range(3)], axis=-1)
  corrupted = corrupted + np.random.default_rng(seed).normal(0, noise_sigma, clean.shape)
  corrupted = np.clip(corrupted, 0, 1)
  corrupted = np.where(mask > 0, 0.5, corrupted).astype(np.float32)
  return {"corrupted": corrupted, "clean": clean, "mask": mask, "blur_kernel": kernel,
          "noise_sigma": np.float32(noise_sigma), "track": track}


def _run(name, example, **kwargs):
  baseline = baselines.get_baselines([name], **kwargs)[0]
  restored = baseline.fn(example)
  assert restored.dtype == np.float32 and restored.shape == example["corrupted"].shape
  assert restored.min() >= 0 and restored.max() <= 1
  return restored


def test_identity_returns_input_on_every_track():
  example = _example(_astronaut(), "joint", _hole_mask(), _gaussian_kernel(1.0), 0.02)
  baseline = baselines.get_baselines(["identity"])[0]
  assert baseline.tracks == config.TRACKS and not baseline.oracle
  np.testing.assert_array_equal(baseline.fn(example), example["corrupted"])


# Largest allowed ratio of the filler's mean hole error to that of the 0.5
# fill. Biharmonic interpolation reproduces a linear ramp almost exactly; the
# cv2 methods propagate the border inwards and blur a 32-px hole somewhat
# (about 0.2x for Telea and 0.36x for Navier-Stokes here); push-pull (the
# `photo` generator's prefill) is smooth but pulls the hole towards coarse
# averages of its surroundings (0.49x here).
_MAX_ERROR_RATIO = {"telea": 0.3, "navier_stokes": 0.45, "biharmonic": 0.01, "push_pull": 0.55}


@pytest.mark.parametrize("name", sorted(_MAX_ERROR_RATIO))
def test_fillers_fill_smooth_hole_and_keep_known_pixels(name):
  mask = _hole_mask()
  example = _example(_gradient(), "inpaint", mask)
  restored = _run(name, example)
  hole = mask[..., 0] > 0
  fill_error = np.abs(example["corrupted"][hole] - example["clean"][hole]).mean()
  restored_error = np.abs(restored[hole] - example["clean"][hole]).mean()
  assert restored_error < _MAX_ERROR_RATIO[name] * fill_error, (restored_error, fill_error)
  np.testing.assert_array_equal(restored[~hole], example["corrupted"][~hole])


@pytest.mark.parametrize("name", ["wiener_oracle", "richardson_lucy_oracle"])
def test_oracle_deconvolution_improves_blurred_natural_image(name):
  clean = _astronaut()
  example = _example(clean, "restore", kernel=_gaussian_kernel(1.5), noise_sigma=0.005)
  restored = _run(name, example)
  gain = _psnr(clean, restored) - _psnr(clean, example["corrupted"])
  assert gain > 1.0, gain
  assert baselines.get_baselines([name])[0].oracle


def test_tv_improves_noisy_image():
  clean = _astronaut()
  example = _example(clean, "restore", noise_sigma=0.05)
  restored = _run("tv", example)
  assert _psnr(clean, restored) > _psnr(clean, example["corrupted"]) + 1.0


def test_bm3d_denoises_with_true_sigma():
  pytest.importorskip("bm3d")
  clean = _astronaut()
  example = _example(clean, "restore", noise_sigma=0.05)
  restored = _run("bm3d", example)
  assert _psnr(clean, restored) > _psnr(clean, example["corrupted"]) + 3.0
  # Without noise there is nothing to remove: the input comes back.
  quiet = _example(clean, "restore")
  np.testing.assert_array_equal(_run("bm3d", quiet), quiet["corrupted"])


def test_bm3d_missing_package_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "bm3d", None)  # Makes `import bm3d` fail.
  with pytest.raises(ImportError, match="pip install bm3d"):
    baselines.get_baselines(["bm3d"])
  with pytest.raises(ImportError, match="pip install bm3d"):
    baselines.get_baselines(["telea+bm3d"])


def _knn_bank_images(rng):
  """A 128x128 source image and unrelated random-ish distractors."""
  source = transform.resize(data.astronaut(), (128, 128), anti_aliasing=True).astype(np.float32)
  distractors = rng.uniform(size=(3, 128, 128, 3)).astype(np.float32)
  return source, np.concatenate([distractors, source[None]], axis=0)


@pytest.mark.parametrize("positions", ["grid", "random"])
def test_knn_reconstructs_hole_from_bank_holding_the_source(positions):
  rng = np.random.default_rng(0)
  source, bank = _knn_bank_images(rng)
  mask = _hole_mask(128, 64)
  example = _example(source, "inpaint", mask)
  kwargs = {"positions": positions}
  if positions == "random":
    # Random places rarely hit the hole's exact position, so the fill is only
    # asked to beat the 0.5 fill there (it picks a nearby patch of the source).
    kwargs.update(patches_per_image=200, seed=1)
  knn = baselines.make_knn_baseline(bank, hole_size=64, border_px=8, **kwargs)
  assert knn.name == "knn" and knn.tracks == ("inpaint",) and knn.params["hole_size"] == 64
  restored = knn.fn(example)
  hole = mask[..., 0] > 0
  if positions == "grid":
    # The centred grid includes the hole's own position in the source image.
    np.testing.assert_allclose(restored, source, atol=1e-6)
  else:
    assert _psnr(source[hole], restored[hole]) > _psnr(source[hole], example["corrupted"][hole])
    np.testing.assert_array_equal(restored[~hole], example["corrupted"][~hole])


def test_knn_picks_nearest_context_among_many_patches():
  rng = np.random.default_rng(1)
  source, bank = _knn_bank_images(rng)
  # Only a shifted copy of the source is in the bank: the hole's true patch
  # (rows and columns 24 to 104 with border_px 8) sits at the off-centre grid
  # place (40, 8) of it, among 9 places in each of 4 images.
  shifted = np.roll(source, (16, -16), axis=(0, 1))
  distractors = bank[:-1]
  knn = baselines.get_baselines(["knn"], params={"knn": {"hole_size": 64, "stride_px": 16}},
                                train_images=np.concatenate([distractors, shifted[None]]))[0]
  example = _example(source, "inpaint", _hole_mask(128, 64))
  hole = _hole_mask(128, 64)[..., 0] > 0
  restored = knn.fn(example)
  assert _psnr(source[hole], restored[hole]) > 60  # Exact, to float rounding.


def test_knn_rejects_missing_bank_and_wrong_hole():
  with pytest.raises(ValueError, match="training images"):
    baselines.get_baselines(["knn"])
  bank = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)
  knn = baselines.make_knn_baseline(bank, hole_size=16, border_px=4)
  with pytest.raises(ValueError, match="16-px square hole"):
    knn.fn(_example(_gradient(), "inpaint", _hole_mask(SIZE, 20)))
  with pytest.raises(ValueError, match="does not fit"):
    baselines.make_knn_baseline(bank, hole_size=60, border_px=4)


def test_chained_names_fill_then_restore():
  clean = _astronaut()
  mask = _hole_mask()
  example = _example(clean, "joint", mask, _gaussian_kernel(1.5), noise_sigma=0.005)
  chain = baselines.get_baselines(["telea+wiener_oracle"])[0]
  assert chain.name == "telea+wiener_oracle"
  assert chain.tracks == ("joint", "joint_free") and chain.oracle
  assert set(chain.params) == {"telea", "wiener_oracle"}
  restored = chain.fn(example)
  hole = mask[..., 0] > 0
  # The chain is the filler followed by the restorer, nothing else.
  filled = baselines.get_baselines(["telea"])[0].fn(example)
  expected = baselines.get_baselines(["wiener_oracle"])[0].fn({**example, "corrupted": filled})
  np.testing.assert_allclose(restored, expected, atol=1e-6)
  assert _psnr(clean[~hole], restored[~hole]) > _psnr(clean[~hole], example["corrupted"][~hole]) + 1
  assert _psnr(clean[hole], restored[hole]) > _psnr(clean[hole], example["corrupted"][hole]) + 1
  tv_chain = baselines.get_baselines(["biharmonic+tv"])[0]
  assert not tv_chain.oracle and tv_chain.fn(example).shape == clean.shape


def test_unknown_or_malformed_names_raise_value_error():
  with pytest.raises(ValueError, match="Unknown baseline 'nope'.*telea"):
    baselines.get_baselines(["identity", "nope"])
  with pytest.raises(ValueError, match="FILLER\\+RESTORER"):
    baselines.get_baselines(["tv+telea"])
  with pytest.raises(ValueError, match="FILLER\\+RESTORER"):
    baselines.get_baselines(["telea+tv+bm3d"])
  with pytest.raises(ValueError, match="sequence of names"):
    baselines.get_baselines("telea")


def test_params_override_and_validation():
  baseline = baselines.get_baselines(["tv"], params={"tv": {"weight": 0.3}})[0]
  assert baseline.params == {"weight": 0.3}
  with pytest.raises(ValueError, match="unknown params \\['radius'\\]"):
    baselines.get_baselines(["tv"], params={"tv": {"radius": 3}})
  with pytest.raises(ValueError, match="not in names"):
    baselines.get_baselines(["tv"], params={"telea": {"radius": 3}})
  chain = baselines.get_baselines(["telea+tv"], params={"telea+tv": {"tv": {"weight": 0.3}}})[0]
  assert chain.params["tv"] == {"weight": 0.3} and chain.params["telea"]["radius"] > 0


def test_example_missing_keys_or_bad_shapes_raise_value_error():
  example = _example(_gradient(), "restore")
  with pytest.raises(ValueError, match="blur_kernel"):
    baselines.get_baselines(["wiener_oracle"])[0].fn(
        {k: v for k, v in example.items() if k != "blur_kernel"})
  with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
    baselines.get_baselines(["identity"])[0].fn(
        {**example, "corrupted": example["corrupted"][None]})
  with pytest.raises(ValueError, match="mask"):
    baselines.get_baselines(["telea"])[0].fn({**example, "mask": example["mask"][..., 0]})


def test_tune_baseline_picks_best_grid_point_on_given_examples():
  clean = _astronaut()
  examples = [_example(clean, "restore", noise_sigma=0.05, seed=s) for s in range(2)]
  best = baselines.tune_baseline("tv", examples, {"weight": [0.0001, 0.05, 2.0]})
  assert best == {"weight": 0.05}
  chain_examples = [_example(clean, "joint", _hole_mask(), noise_sigma=0.05)]
  best_chain = baselines.tune_baseline(
      "biharmonic+tv", chain_examples, {"tv.weight": [2.0, 0.05]})
  assert best_chain == {"biharmonic": {}, "tv": {"weight": 0.05}}
  with pytest.raises(ValueError, match="no param 'radius'"):
    baselines.tune_baseline("tv", examples, {"radius": [1]})
  with pytest.raises(ValueError, match="PART.PARAM"):
    baselines.tune_baseline("biharmonic+tv", chain_examples, {"weight": [1]})


def test_default_names_build_on_every_track():
  for track in ("inpaint", "restore", "joint"):
    names = baselines.default_baseline_names(track, include_bm3d=False)
    assert "identity" in names and not any("bm3d" in n for n in names)
    built = baselines.get_baselines(names)
    assert all(track in b.tracks for b in built)
  assert "bm3d" in baselines.default_baseline_names("restore", include_bm3d=True)
  with pytest.raises(ValueError, match="Unknown track"):
    baselines.default_baseline_names("denoise")
