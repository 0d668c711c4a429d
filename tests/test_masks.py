"""Hole masks of every family, the new tracks, and the blind corruption mix."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf.config import DataConfig
from cascade_tf.data import corruptions
from cascade_tf.data import masks

CFG = DataConfig()  # S = 128, centre hole 64.
# Share of the image each family may cover (docs/masks.md measures the distribution).
AREA = {"centre": (0.25, 0.25), "box": ((128 // 8) ** 2 / 128**2, 0.75),
        "free_form": (0.10, 0.40), "mixed": ((128 // 8) ** 2 / 128**2, 0.75),
        "free": ((128 // 8) ** 2 / 128**2, 0.75)}


def _seeds(n, first=0, stream=7):
  return tf.stack([tf.fill([n], tf.constant(stream, tf.int64)),
                   tf.range(first, first + n, dtype=tf.int64)], axis=-1)


@pytest.mark.parametrize("family", masks.FAMILIES)
def test_each_family_is_binary_seeded_and_covers_its_range(family):
  draw = tf.function(lambda s: masks.masks(family, s, 128, 128, CFG))
  batch = draw(_seeds(120)).numpy()
  assert batch.shape == (120, 128, 128, 1) and batch.dtype == np.float32
  assert set(np.unique(batch)) <= {0.0, 1.0}
  area = batch.mean(axis=(1, 2, 3))
  low, high = AREA[family]
  assert area.min() >= low - 1e-6 and area.max() <= high + 1e-6, (area.min(), area.max())
  # Same seed, same mask, whatever the batch it sits in; other seeds, other masks.
  again = draw(_seeds(3, first=5)).numpy()
  np.testing.assert_array_equal(again, batch[5:8])
  distinct = len({m.tobytes() for m in batch})
  assert distinct == 1 if family == "centre" else distinct > 120 * (
      1 - CFG.mask_mix[0] if family == "mixed" else 1) * 0.8


def test_mixed_draws_each_family_at_its_rate_and_free_never_the_centre():
  cfg = DataConfig(mask_mix=(0.5, 0.3, 0.2))
  centre = masks.centre(128, 128, 64).numpy()
  draw = tf.function(lambda family, s: masks.masks(family, s, 128, 128, cfg))
  mixed = draw("mixed", _seeds(300)).numpy()
  share = np.mean([np.array_equal(m, centre) for m in mixed])
  assert abs(share - 0.5) < 0.1
  free = draw("free", _seeds(100)).numpy()
  assert not any(np.array_equal(m, centre) for m in free)
  with pytest.raises(ValueError, match="mask family"):
    masks.mask("stars", _seeds(1)[0], 128, 128, cfg)


def test_box_masks_are_unions_of_one_to_three_rectangles_on_non_square_images():
  batch = masks.masks("box", _seeds(50), 96, 160, CFG).numpy()[..., 0]
  assert batch.shape == (50, 96, 160)
  for mask in batch:
    rows, cols = np.nonzero(mask)
    assert rows.size and mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1].mean() > 0
    # Every hole pixel lies in an axis-aligned run: rows of a rectangle union
    # have at most 3 runs each.
    runs = [np.count_nonzero(np.diff(np.concatenate([[0], row, [0]])) == 1) for row in mask]
    assert max(runs) <= 3


def _clean(n, size=32, seed=0):
  return tf.constant(np.random.default_rng(seed).uniform(0.05, 0.95, (n, size, size, 3)),
                     tf.float32)


def test_new_tracks_corrupt_as_the_protocol_says():
  cfg = config_lib.tiny().data
  clean = _clean(6)
  seeds = _seeds(6)
  out = {track: corruptions.corrupt_batch(clean, seeds, track, cfg) for track in
         ("clean", "inpaint_free", "joint_free", "joint", "restore")}
  np.testing.assert_array_equal(out["clean"]["corrupted"], clean)
  assert not out["clean"]["mask"].numpy().any()
  free = out["inpaint_free"]
  mask = free["mask"].numpy()
  assert mask.any(axis=(1, 2, 3)).all()
  expected = clean.numpy() * (1 - mask) + cfg.hole_fill * mask
  np.testing.assert_array_equal(free["corrupted"], expected)
  # joint_free = restore's blur and noise, then the free-form mask of inpaint_free.
  np.testing.assert_array_equal(out["joint_free"]["mask"], mask)
  np.testing.assert_allclose(out["joint_free"]["corrupted"].numpy(),
                             out["restore"]["corrupted"].numpy() * (1 - mask)
                             + cfg.hole_fill * mask, atol=1e-7)
  np.testing.assert_array_equal(out["joint_free"]["blur_kernel"], out["joint"]["blur_kernel"])
  centre = masks.centre(32, 32, cfg.hole_size).numpy()
  assert all(np.array_equal(m, centre) for m in out["joint"]["mask"].numpy())
  with pytest.raises(ValueError, match="Unknown track"):
    corruptions.corrupt_batch(clean, seeds, "scratch", cfg)


def test_blind_mix_draws_every_combination_at_its_rate():
  cfg = config_lib.with_overrides(config_lib.tiny(), {
      "data.blind_hole_prob": 0.5, "data.blind_blur_prob": 0.3, "data.blind_noise_prob": 0.6,
      "data.mask_family": "mixed"}).data
  n = 800
  clean = _clean(n, size=32, seed=1)
  corrupt = tf.function(lambda c, s: corruptions.corrupt_batch(c, s, "blind", cfg))
  out = corrupt(clean, _seeds(n))
  flags = np.stack([out[k].numpy() for k in ("has_hole", "has_blur", "has_noise")], axis=1)
  rates = (0.5, 0.3, 0.6)
  for combo in itertools.product((False, True), repeat=3):
    expected = np.prod([p if on else 1 - p for on, p in zip(combo, rates)])
    share = np.mean((flags == np.array(combo)).all(axis=1))
    assert abs(share - expected) < 0.04, (combo, share, expected)
  corrupted, clean_np = out["corrupted"].numpy(), clean.numpy()
  mask = out["mask"].numpy()
  # What each image got is what the flags say.
  untouched = ~flags.any(axis=1)
  np.testing.assert_array_equal(corrupted[untouched], clean_np[untouched])
  assert (mask.any(axis=(1, 2, 3)) == flags[:, 0]).all()
  assert ((out["noise_sigma"].numpy() > 0) <= flags[:, 2]).all()
  assert ((out["blur_type"].numpy() != corruptions.BLUR_NONE) == flags[:, 1]).all()
  hole_only = flags[:, 0] & ~flags[:, 1] & ~flags[:, 2]
  np.testing.assert_array_equal(corrupted[hole_only] * (1 - mask[hole_only]),
                                clean_np[hole_only] * (1 - mask[hole_only]))
  # The same seeds give the same mix.
  again = corrupt(clean[:5], _seeds(5))
  np.testing.assert_array_equal(again["corrupted"], corrupted[:5])
  # `blind_restore` (the restorer's stage): the same blur and noise draws, never a hole.
  restore = corruptions.corrupt_batch(clean[:40], _seeds(40), "blind_restore", cfg)
  assert not restore["has_hole"].numpy().any() and not restore["mask"].numpy().any()
  np.testing.assert_array_equal(restore["has_blur"], flags[:40, 1])
  np.testing.assert_array_equal(restore["has_noise"], flags[:40, 2])
  no_hole = ~flags[:40, 0]
  np.testing.assert_array_equal(restore["corrupted"].numpy()[no_hole], corrupted[:40][no_hole])


def test_training_tracks_and_mask_family_are_validated_per_stage():
  cfg = config_lib.with_overrides(config_lib.tiny(), {"train.pretrain_track": "blind"})
  assert cfg.stage_track("pretrain") == "blind" and cfg.stage_track("joint") == "joint"
  blind = config_lib.blind()
  assert [blind.stage_track(s) for s in config_lib.STAGES] == [
      "blind", "blind", "blind_restore", "blind"]
  assert [config_lib.validation_track(t) for t in ("blind", "blind_restore", "inpaint")] == [
      "joint_free", "restore", "inpaint"]
  with pytest.raises(ValueError, match="train.dd_track"):
    config_lib.with_overrides(config_lib.tiny(), {"train.dd_track": "everything"})
  with pytest.raises(ValueError, match="data.mask_family"):
    config_lib.with_overrides(config_lib.tiny(), {"data.mask_family": "round"})
  with pytest.raises(ValueError, match="data.mask_mix"):
    config_lib.with_overrides(config_lib.tiny(), {"data.mask_mix": "1,0,0"})


# --------------------------------------------------------------------------
# The model takes the mask and keeps the known pixels.


def _mask_cfg(**overrides):
  return config_lib.with_overrides(config_lib.tiny(), {
      "generator.mask_channel": True, "generator.composite": True, "data.mask_family": "mixed",
      "train.pretrain_track": "blind", "train.gan_track": "blind", "train.steps": 2,
      "train.checkpoint_every": 1, "train.eval_every": 2, "train.log_every": 1, **overrides})


def test_composite_keeps_the_input_outside_the_hole_exactly():
  from cascade_tf.models import cascade as cascade_lib  # pylint: disable=g-import-not-at-top
  from cascade_tf.models import fold  # pylint: disable=g-import-not-at-top
  from cascade_tf.training import stages  # pylint: disable=g-import-not-at-top
  cfg = _mask_cfg()
  nets = stages.build_networks(cfg, ["generator", "restorer"])
  assert nets["generator"].input_shape[-1] == 4
  clean = _clean(4)
  batch = corruptions.corrupt_batch(clean, _seeds(4), "inpaint_free", cfg.data)
  x = batch["corrupted"] * 2 - 1
  mask = batch["mask"]
  outside = mask.numpy() == 0
  for generator in (nets["generator"], fold.fold_batch_norm(nets["generator"])):
    model = cascade_lib.build_cascade(generator, nets["restorer"], composite=True)
    out = model(cascade_lib.cascade_inputs(x, mask), training=False)["inpainted"].numpy()
    np.testing.assert_array_equal(np.broadcast_to(outside, out.shape) * out,
                                  np.broadcast_to(outside, out.shape) * x.numpy())
    assert np.abs(out - x.numpy())[~np.broadcast_to(outside, out.shape)].max() > 1e-3
  # Without the composite the generator changes known pixels too; with the mask channel
  # the mask is an input the output depends on.
  plain = cascade_lib.forward(x, nets["generator"], mask=mask, training=False)["inpainted"]
  assert np.abs(plain.numpy() - x.numpy())[np.broadcast_to(outside, x.shape)].max() > 1e-3
  other = cascade_lib.forward(x, nets["generator"], mask=1 - mask, training=False)["inpainted"]
  assert np.abs(other.numpy() - plain.numpy()).max() > 1e-4
  with pytest.raises(ValueError, match="needs the hole mask"):
    cascade_lib.forward(x, nets["generator"])


def test_validation_sets_per_stage_and_their_flags():
  from cascade_tf.training import validation  # pylint: disable=g-import-not-at-top
  cfg = _mask_cfg(**{"train.val_tracks": "inpaint,joint_free,inpaint"})
  # The stage's own track first, no track twice, no training images unless asked.
  assert validation.sets(cfg, "gan") == [("joint_free", "test"), ("inpaint", "test")]
  assert validation.sets(cfg, "dd") == [("restore", "test"), ("inpaint", "test"),
                                        ("joint_free", "test")]
  both = config_lib.with_overrides(cfg, {"train.val_train_images": 3})
  assert validation.sets(both, "gan")[2:] == [("joint_free", "train"), ("inpaint", "train")]
  assert [validation.key(*s) for s in validation.sets(both, "gan")] == [
      "joint_free", "inpaint", "joint_free@train", "inpaint@train"]
  assert validation.num_images(both, "train") == 3 and validation.num_images(both, "test") == 4
  assert validation.row_set({"val_track": "restore"}) == ("restore", "test")  # Older rows.
  with pytest.raises(ValueError, match="train.val_tracks: 'blind'"):
    config_lib.with_overrides(cfg, {"train.val_tracks": "blind"})
  with pytest.raises(ValueError, match="train.val_train_images=-1"):
    config_lib.with_overrides(cfg, {"train.val_train_images": -1})
  # The shipped model's preset watches the centre hole and the training photos, and trains
  # on crops in every orientation.
  photo = config_lib.photo()
  assert photo.data.train_augment == "dihedral" and config_lib.cpu().data.train_augment == "flip"
  assert validation.sets(photo, "pretrain") == [
      ("joint_free", "test"), ("inpaint", "test"), ("joint_free", "train"), ("inpaint", "train")]


def test_a_mask_channel_model_trains_on_the_blind_mix_checkpoints_and_repairs(tmp_path):
  from cascade_tf import inference  # pylint: disable=g-import-not-at-top
  from cascade_tf.training import loop  # pylint: disable=g-import-not-at-top
  from cascade_tf.training import report  # pylint: disable=g-import-not-at-top
  # Validated on the centre hole too, and on 2 training images as well as the test images.
  cfg = _mask_cfg(**{"train.val_tracks": "inpaint,joint_free", "train.val_train_images": 2})
  [result] = loop.train(cfg, "gan", str(tmp_path), init_from="scratch")
  assert result.step == 2
  assert set(result.last_losses) >= {"mse", "adversarial", "critic_loss"}
  val = report.load_metrics(str(tmp_path))["gan"]["val"]
  # The stage's own track first (damage of any shape), each set once per validation.
  assert [(r["step"], r["val_track"], r["val_split"]) for r in val] == [
      (2, "joint_free", "test"), (2, "inpaint", "test"), (2, "joint_free", "train"),
      (2, "inpaint", "train")]
  assert result.validation == {k[4:]: v for k, v in val[0].items() if k.startswith("val_psnr")}
  # The training-image rows score the first 2 images of the training split.
  from cascade_tf import losses  # pylint: disable=g-import-not-at-top
  from cascade_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  train_batch = pipeline.validation_batch(cfg.data, "joint_free", 2, split="train")
  identity = float(np.mean(losses.psnr(train_batch["clean"], train_batch["corrupted"])))
  assert val[2]["val_psnr_identity"] == pytest.approx(identity, abs=1e-4)
  drawn = report.plot_curves(str(tmp_path), str(tmp_path / "curves.png"))
  assert set(drawn["gan"]["validation"]) == {
      f"{output}{suffix}" for output in ("identity", "inpainted")
      for suffix in ("", "@inpaint", "@joint_free@train", "@inpaint@train")}
  table = report.validation_table(str(tmp_path))
  assert "| gan | joint_free | 2 | inpainted |" in table
  assert (f"| gan | inpaint (train images) | 2 | inpainted | "
          f"{val[3]['val_psnr_inpainted']:.2f} (step 2) |") in table
  loaded = inference.load_workdir_cascade(str(tmp_path), allow_random_restorer=True)
  assert loaded.generator.input_shape[-1] == 4
  assert loaded.weights_from["generator"].endswith("gan/checkpoints/ckpt-2")
  clean = _clean(2)
  batch = corruptions.corrupt_batch(clean, _seeds(2), "joint_free", cfg.data)
  from cascade_tf.models import cascade as cascade_lib  # pylint: disable=g-import-not-at-top
  out = loaded.model(cascade_lib.cascade_inputs(batch["corrupted"] * 2 - 1, batch["mask"]),
                     training=False)
  outside = np.broadcast_to(batch["mask"].numpy() == 0, clean.shape)
  np.testing.assert_array_equal(out["inpainted"].numpy()[outside],
                                (batch["corrupted"].numpy() * 2 - 1)[outside])
  # Exported, the masked signature keeps every pixel outside the hole (float precision).
  from cascade_tf import serving  # pylint: disable=g-import-not-at-top
  trained = inference.load_workdir_cascade(str(tmp_path), allow_random_restorer=True,
                                           fold_batch_norm=False)
  inference.write_workdir(str(tmp_path / "both"), cfg, trained.generator, trained.restorer)
  export = serving.export_savedmodel(str(tmp_path / "both"), str(tmp_path / "export"))
  serve = tf.saved_model.load(export).signatures[serving.SIGNATURE_MASKED]
  images = np.random.default_rng(0).uniform(0, 1, (1, 40, 70, 3)).astype(np.float32)
  holes = np.zeros((1, 40, 70, 1), np.float32)
  holes[:, 5:20, 10:50] = 1.0
  inpainted = serve(images=tf.constant(images), masks=tf.constant(holes))["inpainted"].numpy()
  known = np.broadcast_to(holes == 0, images.shape)
  np.testing.assert_allclose(inpainted[known], images[known], atol=1e-6)
  assert np.abs(inpainted - images)[~known].mean() > 0.01
