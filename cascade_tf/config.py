"""One typed configuration tree for cascade_tf, its presets and overrides.

Everything a run needs to know lives in a frozen `Config` made of small
frozen dataclasses. Presets are plain functions (`tiny()`, `cpu()`,
`paper()`); `with_overrides` applies dotted `section.field=value` overrides
and rejects unknown keys; `to_json`/`from_json` write and read the resolved
config that every run saves in its workdir.

This module imports only the standard library.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Mapping

DATASETS = ("samples", "bsd300", "imagenet", "folder")
# Evaluation tracks (PROTOCOL.md). The first three are the paper's.
TRACKS = ("inpaint", "restore", "joint", "inpaint_free", "joint_free", "clean")
PAPER_TRACKS = ("inpaint", "restore", "joint")
# Training adds `blind`: each image independently gets a hole, a blur and noise or not;
# and `blind_restore`, the same without holes (for the restorer alone: in the
# cascade the generator fills the holes before the restorer sees them).
TRAIN_TRACKS = TRACKS + ("blind", "blind_restore")
BLIND_TRACKS = ("blind", "blind_restore")
# What each track applies, in this order (appliers.corrupt). `blind` applies
# each one to an image or not, independently (corruptions.corrupt_batch).
TRACK_CORRUPTIONS = {
    "inpaint": ("hole",), "restore": ("blur", "noise"), "joint": ("blur", "noise", "hole"),
    "inpaint_free": ("hole",), "joint_free": ("blur", "noise", "hole"), "clean": (),
    "blind": ("blur", "noise", "hole"), "blind_restore": ("blur", "noise")}
STAGES = ("pretrain", "gan", "dd", "joint")


def validation_track(train_track: str) -> str:
  """The evaluation track a stage trained on `train_track` is validated on."""
  return {"blind": "joint_free", "blind_restore": "restore"}.get(train_track, train_track)


def training_mask_family(mask_family: str, track: str) -> str:
  """The holes a training track draws: `free` on the *_free tracks, else `data.mask_family`."""
  return "free" if track.endswith("_free") else mask_family


PAPER_STAGE_TRACKS = {"pretrain": "inpaint", "gan": "inpaint", "dd": "restore", "joint": "joint"}
MASK_FAMILIES = ("centre", "box", "free_form", "mixed", "free")
TRAIN_AUGMENTS = ("flip", "dihedral")  # data/augment.py
SMALL_IMAGE_RULES = ("upscale", "skip")
VGG_WEIGHTS_CHOICES = ("imagenet", "none")  # or a path to a local .h5 file
STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")
AUTO = "auto"
# Keras dtype policies; `auto` picks one per device and purpose (runtime.resolve_precision).
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
PRECISIONS = (AUTO,) + POLICIES
JIT_COMPILE = ("auto", "on", "off")
RESTORER_ARCHS = ("plain", "unet")
RECONSTRUCTION_LOSSES = ("mse", "l1", "psnr")
OPTIMIZERS = ("rmsprop", "adam")
LR_DECAYS = ("constant", "cosine")
CRITIC_CONSTRAINTS = ("clip", "gp")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where clean images come from and how they are corrupted (PROTOCOL.md)."""

  dataset: str = "samples"  # samples | bsd300 | imagenet | folder.
  data_dir: str | None = None  # TFDS data dir (None: TFDS default).
  manual_dir: str | None = None  # Extracted BSDS300 folder or its .tgz; ImageNet tars.
  image_dir: str | None = None  # Root of the images for dataset=folder.
  image_size: int = 128  # S, px, square side fed to the networks. Paper: 128.
  hole_size: int = 64  # px, side of the centre hole. Protocol: S/2 = 64.
  hole_fill: float = 0.5  # Value put in the hole, [0, 1] scale. Protocol: 0.5.
  blur_kernel_size: int = 15  # px, side of every blur kernel. Protocol: 15.
  gaussian_blur_prob: float = 0.5  # Probability that a kernel is Gaussian (else motion).
  gaussian_sigma_min: float = 0.5  # px. Protocol: U[0.5, 2.0].
  gaussian_sigma_max: float = 2.0  # px.
  motion_length_min: float = 3.0  # px. Protocol: U[3, 11].
  motion_length_max: float = 11.0  # px.
  noise_sigma_min: float = 0.0  # [0, 1] scale. Protocol: U[0, 0.05].
  noise_sigma_max: float = 0.05  # [0, 1] scale.
  small_image_rule: str = "upscale"  # upscale | skip, for images smaller than S.
  train_crop_min_fraction: float = 0.6  # Smallest random training crop, share of the short side.
  # Symmetry put on each training crop (data/augment.py): flip (random left-right
  # flip) | dihedral (any of the square's 8 flips and quarter turns). Beyond the paper.
  train_augment: str = "flip"
  # Probability that a training crop gets its RGB channels in one of the five other
  # orders (data/augment.py: colour variety for few photos). Beyond the paper; 0: never.
  train_channel_permute: float = 0.0
  folder_test_fraction: float = 0.0  # Share of a folder held out as `test` (0: none).
  split_seed: int = 0  # Seed of the folder train/test split.
  extra_train_dirs: tuple[str, ...] = ()  # More image folders appended to `train`.
  cache: bool = True  # Cache decoded images in memory (small datasets).
  shuffle_buffer: int = 512  # Elements in the training shuffle buffer.
  eval_seed: int = 0  # Seed of the stateless per-image evaluation RNG. Protocol: 0.
  # Holes of the training tracks inpaint, joint and blind (data/masks.py):
  # centre | box | free_form | mixed | free. Evaluation tracks keep the protocol's.
  mask_family: str = "centre"
  mask_mix: tuple[float, ...] = (0.5, 0.25, 0.25)  # P(centre, box, free_form) of `mixed`.
  blind_hole_prob: float = 0.5  # Track `blind`: probability that an image gets a hole,
  blind_blur_prob: float = 0.5  # a blur,
  blind_noise_prob: float = 0.5  # and noise, each drawn independently.
  imagenet_eval_images: int = 1000  # Size of the fixed ImageNet validation subset.


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  """Inpainting generator (paper Sec. 3.2, Fig. 3)."""

  # Paper: silent on the generator's widths and depth (Sec. 3.2 gives only the
  # critic's 64..512); these follow the critic's widths.
  base_filters: int = 64  # Channels of the first encoder conv; doubles per level. Paper: silent.
  max_filters: int = 512  # Channel cap. Paper: silent.
  num_levels: int = 5  # Stride-2 convs in the encoder (and transposed convs). Paper: silent.
  num_res_blocks: int = 7  # Residual blocks at the bottleneck. Paper: 7 (Fig. 3).
  down_kernel_size: int = 4  # px, kernel of the stride-2 (transposed) convs. Paper: silent.
  res_kernel_size: int = 3  # px, kernel of the residual-block convs. Paper: silent.
  leaky_slope: float = 0.2  # Encoder LeakyReLU negative slope. Paper: silent.
  # Beyond the paper (docs/architecture.md, "Masks"): the hole mask as a 4th
  # input channel, and the output composited with the input outside the hole,
  # m * G(x) + (1 - m) * x, before the restorer (training and inference).
  mask_channel: bool = False
  composite: bool = False
  # Beyond the paper (docs/architecture.md, "Beyond the paper"): dilation rate of the
  # convs of each residual block, cycled over the blocks (empty: 1, the paper's
  # plain blocks); and `prefill`, the hole filled by a push-pull interpolation of
  # the known pixels (models/layers.PushPullFill) before the encoder and as the
  # input skip, instead of the constant fill (needs `mask_channel`).
  dilations: tuple[int, ...] = ()
  prefill: bool = False
  # Beyond the paper: residual blocks after each decoder level's mirrored skip (at 1/4
  # and 1/2 of the image size with three levels), where the paper's decoder has one
  # transposed conv per level. Their last batch norm starts at gamma = 0, so a new block
  # is the identity: a generator trained without them grows into one with them
  # (`train.py --init_from=pretrained`) without changing its output at the start.
  decoder_res_blocks: int = 0
  # Beyond the paper: channels of the deepest encoder level and of the residual blocks
  # (0: that level's width, min(base_filters * 2**(num_levels - 1), max_filters)). A
  # generator may grow to a wider bottleneck from its trained weights
  # (`train.py --init_from=pretrained`): the new channels start with no path into the
  # old ones, so its output at the start is the narrower generator's.
  bottleneck_filters: int = 0


@dataclasses.dataclass(frozen=True)
class CriticConfig:
  """WGAN critic, VGG16-like without pooling (paper Sec. 3.2)."""

  base_filters: int = 64  # Channels of the first group. Paper: 64.
  max_filters: int = 512  # Channel cap. Paper: 512.
  convs_per_group: tuple[int, ...] = (2, 2, 3, 3, 3)  # As VGG16. Paper: five groups.
  dense_units: int = 1024  # Width of the hidden dense layer. Paper: silent.
  leaky_slope: float = 0.2  # LeakyReLU slope after every conv. Paper: silent.
  normalization: str = "group"  # group (per-image layer norm) | none, after convs 2..13. Paper: silent.


@dataclasses.dataclass(frozen=True)
class RestorerConfig:
  """Deblurring-denoising auto-encoder (paper Sec. 3.3, Fig. 4)."""

  filters: int = 96  # Channels of every hidden conv. Paper: 96.
  num_encode: int = 4  # Encoding convs. Paper: 4.
  num_decode: int = 4  # Decoding convs (the last outputs 3 channels). Paper: 4.
  kernel_size: int = 3  # px. Paper: 3.
  leaky_slope: float = 0.001  # LeakyReLU slope. Paper: 0.001.
  # plain (the paper's full-resolution auto-encoder above) | unet (beyond the paper:
  # a U-Net of residual blocks at len(unet_filters) scales, models/restorer.py).
  arch: str = "plain"
  unet_filters: tuple[int, ...] = (32, 64, 128)  # Channels of each scale, full size first.
  unet_blocks: int = 2  # Residual blocks per scale in the encoder (the decoder has one).


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Loss weights of eq. (7) and the perceptual network."""

  lambda_mse: float = 1.0  # Weight of L_MSE, eq. (1). Paper: not given.
  # Pixel loss of the reconstruction stages `pretrain` and `dd`: mse (eq. (1), the
  # paper's) | l1 | psnr (beyond the paper; psnr: minus each image's PSNR, the
  # evaluation's metric, losses.neg_psnr_loss). Logged MSE is eq. (1) either way.
  reconstruction: str = "mse"
  lambda_per: float = 1e-5  # Weight of L_per, eqs. (2-3), VGG features on a 0-255 scale. Paper: not given.
  lambda_adv: float = 1e-3  # Weight of the adversarial term, eq. (6). Paper: not given.
  # Stage `joint`: weight of eq. (7)'s reconstruction terms on the intermediate G(x)
  # beside those on the final R(G(x)) (Sec. 3.4 optimises R *and the inpainting GAN*
  # jointly; 0: G is trained only through R and the adversarial term).
  lambda_intermediate: float = 1.0
  # Critic of the adversarial stages: clip (WGAN weight clipping, the paper's, with
  # RMSProp) | gp (WGAN-GP: gradient penalty weighted by lambda_gp, with Adam(lr, 0.5, 0.9)).
  critic_constraint: str = "clip"
  lambda_gp: float = 10.0
  vgg_weights: str = "imagenet"  # imagenet | none (random, tests only) | path to a .h5 file.
  perceptual_size: int | None = None  # px; images are resized to this before VGG16 (None: as is).


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation, schedule and runtime of `train.py`."""

  batch_size: int = 64  # Global batch, images per step. Paper: silent (WGAN's own: 64).
  lr: float = 5e-5  # Learning rate. Paper (WGAN, RMSProp): 5e-5.
  # Optimizer of each stage's main update (the critic keeps RMSProp, as WGAN with
  # clipping needs): rmsprop (the paper's) | adam (beyond the paper). `lr_decay`:
  # constant | cosine (the main update's lr decays to 0 over the stage's steps).
  optimizer: str = "rmsprop"
  lr_decay: str = "constant"
  clip: float = 0.01  # Critic weight-clipping bound. Paper (WGAN): 0.01.
  # Critic steps per generator step. Paper (WGAN): 5. 0 (beyond the paper; needs
  # loss.lambda_adv=0): `gan` and `joint` train no critic, i.e. `joint` fine-tunes the
  # cascade end to end on eq. (7)'s pixel terms alone.
  n_critic: int = 5
  steps: int = 1000  # Steps per stage unless a per-stage value is set.
  pretrain_steps: int | None = None  # Steps of stage `pretrain` (None: `steps`).
  gan_steps: int | None = None  # Steps of stage `gan` (None: `steps`).
  dd_steps: int | None = None  # Steps of stage `dd` (None: `steps`).
  joint_steps: int | None = None  # Steps of stage `joint` (None: `steps`).
  pretrain_lr: float | None = None  # Learning rate of stage `pretrain` (None: `lr`).
  gan_lr: float | None = None  # Learning rate of stage `gan` (None: `lr`).
  dd_lr: float | None = None  # Learning rate of stage `dd` (None: `lr`).
  joint_lr: float | None = None  # Learning rate of stage `joint` (None: `lr`).
  # A budget in images of the main update instead of steps (the critic's n_critic
  # batches per step are not counted): steps = ceil(images / the stage's batch size).
  pretrain_images: int | None = None
  gan_images: int | None = None
  dd_images: int | None = None
  joint_images: int | None = None
  pretrain_batch_size: int | None = None  # Global batch of stage `pretrain` (None: `batch_size`).
  gan_batch_size: int | None = None  # Global batch of stage `gan` (None: `batch_size`).
  dd_batch_size: int | None = None  # Global batch of stage `dd` (None: `batch_size`).
  joint_batch_size: int | None = None  # Global batch of stage `joint` (None: `batch_size`).
  # Training track of each stage (TRAIN_TRACKS; None: the paper's, PAPER_STAGE_TRACKS).
  pretrain_track: str | None = None
  gan_track: str | None = None
  dd_track: str | None = None
  joint_track: str | None = None
  checkpoint_every: int = 500  # Steps between checkpoints.
  eval_every: int = 250  # Steps between validation PSNR and image summaries.
  log_every: int = 50  # Steps between scalar summaries.
  seed: int = 0  # Seed of weights, data order and training corruptions.
  strategy: str = "auto"  # auto | default | mirrored | multiworker | tpu.
  # auto (runtime.resolve_precision: from the device) | float32 | mixed_float16 | mixed_bfloat16.
  mixed_precision: str = AUTO
  # XLA for the training updates: auto (on for a single-replica CPU run, where it
  # measured faster, docs/benchmarks.md; off on GPUs, not yet measured) | on | off.
  jit_compile: str = "auto"
  val_images: int = 16  # Images in the fixed validation batch.
  # More evaluation tracks every stage is validated on besides its own (TRACKS; e.g.
  # "inpaint" for a blind stage validated on joint_free), logged, never stopping a stage.
  val_tracks: tuple[str, ...] = ()
  # With N > 0, each validation track is also scored on the first N *training*
  # images (the protocol's crop and corruptions): the gap to the test score shows
  # memorisation while training (training/validation.py).
  val_train_images: int = 0
  # A stage ends early after `patience` validations in a row without a new best PSNR
  # of its final output (better by more than `min_improvement` dB); 0: never.
  patience: int = 0
  min_improvement: float = 0.02


@dataclasses.dataclass(frozen=True)
class Config:
  """The whole resolved configuration of one run."""

  preset: str = "paper"  # Name of the preset this config started from.
  data: DataConfig = DataConfig()
  generator: GeneratorConfig = GeneratorConfig()
  critic: CriticConfig = CriticConfig()
  restorer: RestorerConfig = RestorerConfig()
  loss: LossConfig = LossConfig()
  train: TrainConfig = TrainConfig()

  def stage_steps(self, stage: str) -> int:
    """Steps to run for `stage`: from its image budget, else its own steps, else `train.steps`."""
    images = getattr(self.train, f"{stage}_images")
    if images is not None:
      return -(-images // self.stage_batch_size(stage))
    value = getattr(self.train, f"{stage}_steps")
    return self.train.steps if value is None else value

  def stage_track(self, stage: str) -> str:
    """Training track of `stage` (per-stage value, else the paper's track of the stage)."""
    value = getattr(self.train, f"{stage}_track")
    return PAPER_STAGE_TRACKS[stage] if value is None else value

  def size_multiple(self) -> int:
    """What every image height and width must be a multiple of for the cascade's networks."""
    multiple = 2 ** self.generator.num_levels
    if self.restorer.arch == "unet":
      multiple = max(multiple, 2 ** (len(self.restorer.unet_filters) - 1))
    return multiple

  def stage_batch_size(self, stage: str) -> int:
    """Global batch of `stage` (per-stage value, else `train.batch_size`)."""
    value = getattr(self.train, f"{stage}_batch_size")
    return self.train.batch_size if value is None else value

  def stage_lr(self, stage: str) -> float:
    """Learning rate of `stage` (per-stage value, else `train.lr`)."""
    value = getattr(self.train, f"{stage}_lr")
    return self.train.lr if value is None else value


# --------------------------------------------------------------------------
# Presets.


def paper() -> Config:
  """The paper's setting: 128x128, hole 64, widths 64..512, restorer 96, batch 64."""
  return validate(Config(preset="paper"))


def cpu() -> Config:
  """The protocol's 128x128 / 64-px hole, with networks narrow enough for a CPU.

  Evaluated exactly like the paper (same image and hole size), but the
  generator, critic and restorer are about a quarter to a ninth of the
  paper's width so that a joint training step runs several times faster
  than `paper()` on a 2-core machine.
  """
  return validate(
      Config(
          preset="cpu",
          generator=GeneratorConfig(base_filters=16, max_filters=128, num_res_blocks=4),
          critic=CriticConfig(base_filters=16, max_filters=128, dense_units=256),
          # The restorer works at full resolution: at 32 channels it is ~40% of a
          # joint step's MACs (2.8 of 6.9 GMAC per image), at 16 about 15%.
          restorer=RestorerConfig(filters=16),
          # VGG16 up to block4_conv3 costs ~4.5 GMAC per 128x128 image, several
          # times the cpu networks themselves; at 64x64 it costs a quarter.
          loss=LossConfig(perceptual_size=64),
          train=TrainConfig(batch_size=16, checkpoint_every=200, eval_every=100, log_every=20),
      ))


def blind() -> Config:
  """Damage of any shape, blur and noise or none of them: the `cpu` networks, mask-aware.

  The `cpu` preset's widths (the same cost per step, plus the mask channel's
  few weights), with the options beyond the paper that make the cascade
  usable on real photos (docs/architecture.md, "Masks"): the generator takes
  the mask as a 4th channel and its output is composited with the input
  outside the hole; holes are `mixed` (half the protocol's centre square,
  half boxes and brush strokes); and the stages train on the `blind` mix,
  where each image independently gets a hole, a blur and noise with
  probability 1/2 each, so that 1 in 8 images is clean; the restorer alone
  (`dd`) on `blind_restore`, the same mix without holes (1 in 4 clean), so
  that it learns to leave an intact photo alone. Stages on `blind` are
  validated on `joint_free`, `dd` on `restore`. docs/architecture.md
  ("Masks") gives the short runs these choices rest on.
  """
  base = cpu()
  return validate(dataclasses.replace(
      base, preset="blind",
      data=dataclasses.replace(base.data, mask_family="mixed"),
      generator=dataclasses.replace(base.generator, mask_channel=True, composite=True),
      train=dataclasses.replace(base.train, pretrain_track="blind", gan_track="blind",
                                dd_track="blind_restore", joint_track="blind")))


def photo() -> Config:
  """The shipped model's preset (`pretrained`): `blind`, with the networks beyond the paper.

  Everything of `blind` (mask channel, composite, `mixed` holes, the blind
  mix), and the options that measured better at equal CPU time
  (docs/architecture.md, "Beyond the paper"): a generator with a push-pull
  prefill, three levels (a 16 x 16 bottleneck at 128 px, whose six
  residual blocks already see the whole image) of 32, 64 and 256 channels
  (7.7 M parameters; the shipped generator grew to 256 from 128 channels,
  which it beat on the centre hole and `joint` at equal CPU time,
  docs/training.md "Fifth sitting"); a three-scale U-Net restorer
  (32-64-128 channels, 1.0 M parameters) trained at batch 8; the
  reconstruction stages on L1 with
  Adam and a cosine decay, the adversarial stages' main updates on Adam at
  the paper's rate; training crops in all eight orientations of the square
  (`data.train_augment=dihedral`: at equal steps +0.18 dB on the centre
  hole over left-right flips only, docs/training.md "Seventh sitting").
  Every stage is validated on the centre hole too, and on 16 training
  photos as well as the test photos (the centre hole overfits the 400
  photos, docs/training.md "Sixth sitting"). Dilated blocks
  (`generator.dilations`) made a step 3.2x slower under XLA on the CPU and
  are left out.
  """
  base = blind()
  return validate(dataclasses.replace(
      base, preset="photo",
      data=dataclasses.replace(base.data, train_augment="dihedral"),
      generator=dataclasses.replace(base.generator, num_levels=3, base_filters=32,
                                    max_filters=128, num_res_blocks=6, prefill=True,
                                    bottleneck_filters=256),
      restorer=dataclasses.replace(base.restorer, arch="unet"),
      loss=dataclasses.replace(base.loss, reconstruction="l1"),
      train=dataclasses.replace(base.train, optimizer="adam", lr_decay="cosine",
                                pretrain_lr=5e-4, dd_lr=5e-4, dd_batch_size=8,
                                val_tracks=("inpaint",), val_train_images=16)))


def tiny() -> Config:
  """For tests and smoke runs: 32x32 images, 16-px hole, very narrow networks."""
  return validate(
      Config(
          preset="tiny",
          data=DataConfig(image_size=32, hole_size=16, shuffle_buffer=16),
          generator=GeneratorConfig(base_filters=4, max_filters=16, num_res_blocks=2),
          critic=CriticConfig(base_filters=4, max_filters=16, dense_units=16),
          restorer=RestorerConfig(filters=8),
          loss=LossConfig(vgg_weights="none"),
          # XLA off: compiling each update takes longer than the few steps
          # a smoke run or test makes with networks this small.
          train=TrainConfig(
              batch_size=4, steps=4, checkpoint_every=2, eval_every=2, log_every=1,
              n_critic=2, val_images=4, jit_compile="off"),
      ))


PRESETS = {"tiny": tiny, "cpu": cpu, "paper": paper, "blind": blind, "photo": photo}


def get_preset(name: str) -> Config:
  """Returns the preset called `name`, or raises ValueError naming the choices."""
  if name not in PRESETS:
    raise ValueError(f"Unknown preset {name!r}: expected one of {sorted(PRESETS)}.")
  return PRESETS[name]()


# --------------------------------------------------------------------------
# Overrides, validation, serialisation.


def _field_types(cls) -> dict[str, Any]:
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
  """Converts `value` (possibly a command-line string) to `annotation`."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
      if type(None) in args:
        return None
    inner = [a for a in args if a is not type(None)]
    return _coerce(value, inner[0], key)
  if origin is tuple:
    if isinstance(value, str):
      value = [v for v in value.replace(" ", "").split(",") if v]
    return tuple(_coerce(v, args[0], key) for v in value)
  if annotation is bool:
    if isinstance(value, str):
      if value.lower() in ("1", "true", "yes", "on"):
        return True
      if value.lower() in ("0", "false", "no", "off"):
        return False
      raise ValueError(f"Override {key}={value!r}: expected a boolean.")
    return bool(value)
  if annotation in (int, float, str):
    try:
      if annotation is int and isinstance(value, float) and not value.is_integer():
        raise ValueError
      return annotation(value)
    except (TypeError, ValueError):
      raise ValueError(
          f"Override {key}={value!r}: expected {annotation.__name__}.") from None
  return value


def with_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
  """Returns `config` with dotted overrides applied, e.g. {"train.lr": 1e-4}.

  Values may be typed or command-line strings. Unknown sections or fields
  raise ValueError naming the valid ones; the result is validated.
  """
  sections: dict[str, dict[str, Any]] = {}
  top: dict[str, Any] = {}
  for key, value in overrides.items():
    parts = key.split(".")
    if len(parts) == 1:
      if parts[0] != "preset":
        raise ValueError(f"Unknown config key {key!r}: use section.field, e.g. train.lr.")
      top["preset"] = str(value)
      continue
    if len(parts) != 2:
      raise ValueError(f"Unknown config key {key!r}: use section.field, e.g. train.lr.")
    section, field = parts
    section_types = _field_types(Config)
    if section not in section_types or section == "preset":
      valid = [n for n in section_types if n != "preset"]
      raise ValueError(f"Unknown config section {section!r} in {key!r}: expected one of {valid}.")
    fields = _field_types(type(getattr(config, section)))
    if field not in fields:
      raise ValueError(
          f"Unknown config field {key!r}: {section} has {sorted(fields)}.")
    sections.setdefault(section, {})[field] = _coerce(value, fields[field], key)
  replaced = {s: dataclasses.replace(getattr(config, s), **f) for s, f in sections.items()}
  return validate(dataclasses.replace(config, **top, **replaced))


def validate(config: Config) -> Config:
  """Checks cross-field constraints; raises ValueError naming the field."""
  d, g, c, r, t = config.data, config.generator, config.critic, config.restorer, config.train
  if d.dataset not in DATASETS:
    raise ValueError(f"data.dataset={d.dataset!r}: expected one of {DATASETS}.")
  if d.small_image_rule not in SMALL_IMAGE_RULES:
    raise ValueError(f"data.small_image_rule={d.small_image_rule!r}: expected one of {SMALL_IMAGE_RULES}.")
  multiple = 2 ** g.num_levels
  if d.image_size < multiple or d.image_size % multiple:
    raise ValueError(
        f"data.image_size={d.image_size}: must be a positive multiple of {multiple} "
        f"(2 ** generator.num_levels).")
  if d.image_size < 2 ** len(c.convs_per_group):
    raise ValueError(f"data.image_size={d.image_size}: too small for the critic's "
                     f"{len(c.convs_per_group)} stride-2 groups.")
  if not 0 < d.hole_size < d.image_size:
    raise ValueError(f"data.hole_size={d.hole_size}: must be in (0, image_size={d.image_size}).")
  if (d.image_size - d.hole_size) % 2:
    raise ValueError(f"data.hole_size={d.hole_size}: image_size - hole_size must be even "
                     "so that the hole is centred exactly.")
  if d.blur_kernel_size < 1 or d.blur_kernel_size % 2 == 0:
    raise ValueError(f"data.blur_kernel_size={d.blur_kernel_size}: must be odd and positive.")
  if d.blur_kernel_size // 2 >= d.image_size:
    raise ValueError("data.blur_kernel_size: reflect padding needs kernel_size // 2 < image_size.")
  for lo, hi, name in ((d.gaussian_sigma_min, d.gaussian_sigma_max, "gaussian_sigma"),
                       (d.motion_length_min, d.motion_length_max, "motion_length"),
                       (d.noise_sigma_min, d.noise_sigma_max, "noise_sigma")):
    if lo < 0 or hi < lo:
      raise ValueError(f"data.{name}_min/max=({lo}, {hi}): need 0 <= min <= max.")
  if d.gaussian_sigma_min <= 0:
    raise ValueError("data.gaussian_sigma_min must be > 0.")
  if not 0.0 <= d.gaussian_blur_prob <= 1.0:
    raise ValueError(f"data.gaussian_blur_prob={d.gaussian_blur_prob}: must be in [0, 1].")
  if not 0.0 < d.train_crop_min_fraction <= 1.0:
    raise ValueError(f"data.train_crop_min_fraction={d.train_crop_min_fraction}: must be in (0, 1].")
  for track in t.val_tracks:
    if track not in TRACKS:
      raise ValueError(f"train.val_tracks: {track!r} is not an evaluation track {TRACKS}.")
  if t.val_train_images < 0:
    raise ValueError(f"train.val_train_images={t.val_train_images}: must be >= 0.")
  if d.train_augment not in TRAIN_AUGMENTS:
    raise ValueError(f"data.train_augment={d.train_augment!r}: expected one of {TRAIN_AUGMENTS}.")
  if not 0.0 <= d.train_channel_permute <= 1.0:
    raise ValueError(f"data.train_channel_permute={d.train_channel_permute}: must be a "
                     "probability in [0, 1].")
  if not 0.0 <= d.folder_test_fraction < 1.0:
    raise ValueError(f"data.folder_test_fraction={d.folder_test_fraction}: must be in [0, 1).")
  for name, value in (("generator.base_filters", g.base_filters), ("critic.base_filters", c.base_filters),
                      ("restorer.filters", r.filters), ("critic.dense_units", c.dense_units),
                      ("train.batch_size", t.batch_size),
                      ("train.checkpoint_every", t.checkpoint_every), ("train.eval_every", t.eval_every),
                      ("train.log_every", t.log_every), ("train.val_images", t.val_images)):
    if value < 1:
      raise ValueError(f"{name}={value}: must be >= 1.")
  if t.n_critic < 0:
    raise ValueError(f"train.n_critic={t.n_critic}: must be >= 0.")
  if t.n_critic == 0 and config.loss.lambda_adv != 0:
    raise ValueError(f"train.n_critic=0 trains no critic: loss.lambda_adv={config.loss.lambda_adv} "
                     "would push the generator with an untrained one; set it to 0 (stages gan "
                     "and joint without the adversary) or n_critic >= 1.")
  if r.num_encode < 1 or r.num_decode < 1:
    raise ValueError("restorer.num_encode and restorer.num_decode must be >= 1.")
  if t.lr <= 0 or t.clip <= 0:
    raise ValueError(f"train.lr={t.lr} and train.clip={t.clip} must be > 0.")
  if d.mask_family not in MASK_FAMILIES:
    raise ValueError(f"data.mask_family={d.mask_family!r}: expected one of {MASK_FAMILIES}.")
  if len(d.mask_mix) != 3 or min(d.mask_mix) < 0 or sum(d.mask_mix[1:]) <= 0:
    raise ValueError(f"data.mask_mix={d.mask_mix}: expected three probabilities (centre, box, "
                     "free_form), >= 0, with box + free_form > 0.")
  for name in ("blind_hole_prob", "blind_blur_prob", "blind_noise_prob"):
    if not 0.0 <= getattr(d, name) <= 1.0:
      raise ValueError(f"data.{name}={getattr(d, name)}: must be in [0, 1].")
  for stage in STAGES:
    track = getattr(t, f"{stage}_track")
    if track is not None and track not in TRAIN_TRACKS:
      raise ValueError(f"train.{stage}_track={track!r}: expected one of {TRAIN_TRACKS}.")
    steps, lr = getattr(t, f"{stage}_steps"), getattr(t, f"{stage}_lr")
    if steps is not None and steps < 0:
      raise ValueError(f"train.{stage}_steps={steps}: must be >= 0.")
    if lr is not None and lr <= 0:
      raise ValueError(f"train.{stage}_lr={lr}: must be > 0.")
    batch = getattr(t, f"{stage}_batch_size")
    if batch is not None and batch < 1:
      raise ValueError(f"train.{stage}_batch_size={batch}: must be >= 1.")
    images = getattr(t, f"{stage}_images")
    if images is not None and images < 0:
      raise ValueError(f"train.{stage}_images={images}: must be >= 0.")
    if images is not None and steps is not None:
      raise ValueError(f"train.{stage}_images and train.{stage}_steps both set the length of "
                       f"stage {stage}: give one.")
  if config.loss.lambda_intermediate < 0 or config.loss.lambda_gp < 0:
    raise ValueError(f"loss.lambda_intermediate={config.loss.lambda_intermediate} and "
                     f"loss.lambda_gp={config.loss.lambda_gp}: must be >= 0.")
  for name, value, choices in (("restorer.arch", r.arch, RESTORER_ARCHS),
                               ("loss.critic_constraint", config.loss.critic_constraint,
                                CRITIC_CONSTRAINTS),
                               ("loss.reconstruction", config.loss.reconstruction,
                                RECONSTRUCTION_LOSSES),
                               ("train.optimizer", t.optimizer, OPTIMIZERS),
                               ("train.lr_decay", t.lr_decay, LR_DECAYS)):
    if value not in choices:
      raise ValueError(f"{name}={value!r}: expected one of {choices}.")
  if r.arch == "unet":
    if not r.unet_filters or min(r.unet_filters) < 1 or r.unet_blocks < 1:
      raise ValueError(f"restorer.unet_filters={r.unet_filters} and restorer.unet_blocks="
                       f"{r.unet_blocks}: need at least one scale, widths >= 1, blocks >= 1.")
    scales = 2 ** (len(r.unet_filters) - 1)
    if d.image_size % scales:
      raise ValueError(f"data.image_size={d.image_size}: the U-Net restorer with "
                       f"{len(r.unet_filters)} scales needs a multiple of {scales}.")
  if g.decoder_res_blocks < 0:
    raise ValueError(f"generator.decoder_res_blocks={g.decoder_res_blocks}: must be >= 0.")
  if g.bottleneck_filters < 0:
    raise ValueError(f"generator.bottleneck_filters={g.bottleneck_filters}: must be >= 0 "
                     "(0: the deepest level's width).")
  if any(rate < 1 for rate in g.dilations):
    raise ValueError(f"generator.dilations={g.dilations}: rates must be >= 1.")
  if g.prefill and not g.mask_channel:
    raise ValueError("generator.prefill needs generator.mask_channel=true (the fill reads the "
                     "mask from the generator's 4th input channel).")
  if t.steps < 0:
    raise ValueError(f"train.steps={t.steps}: must be >= 0.")
  if t.patience < 0 or t.min_improvement < 0:
    raise ValueError(f"train.patience={t.patience} and train.min_improvement="
                     f"{t.min_improvement}: must be >= 0.")
  if config.loss.perceptual_size is not None and config.loss.perceptual_size < 32:
    raise ValueError(f"loss.perceptual_size={config.loss.perceptual_size}: VGG16 needs >= 32 px.")
  if t.strategy not in STRATEGIES:
    raise ValueError(f"train.strategy={t.strategy!r}: expected one of {STRATEGIES}.")
  if t.mixed_precision not in PRECISIONS:
    raise ValueError(f"train.mixed_precision={t.mixed_precision!r}: expected one of {PRECISIONS}.")
  if t.jit_compile not in JIT_COMPILE:
    raise ValueError(f"train.jit_compile={t.jit_compile!r}: expected one of {JIT_COMPILE}.")
  return config


def to_dict(config: Config) -> dict[str, Any]:
  """The config as plain JSON-able dicts."""
  return dataclasses.asdict(config)


def overrides_between(base: Config, config: Config) -> dict[str, str]:
  """{"section.field": command-line string} that turn `base` into `config`.

  `with_overrides(base, overrides_between(base, config)) == config`: how a
  resolved config is handed to another program as `--set` flags (e.g.
  scripts/table2.py's calls of scripts/train_jax.py). The preset name is
  not included.
  """
  def as_text(value):
    if value is None:
      return "none"
    if isinstance(value, (tuple, list)):
      return ",".join(as_text(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)

  before, after = to_dict(base), to_dict(config)
  return {f"{section}.{field}": as_text(value)
          for section, fields in after.items() if isinstance(fields, dict)
          for field, value in fields.items() if before[section][field] != value}


def to_json(config: Config) -> str:
  return json.dumps(to_dict(config), indent=2, sort_keys=True)


def from_dict(data: Mapping[str, Any]) -> Config:
  """Inverse of `to_dict`; unknown keys raise ValueError."""
  overrides = {}
  for section, fields in data.items():
    if section == "preset":
      overrides["preset"] = fields
      continue
    if not isinstance(fields, Mapping):
      raise ValueError(f"Config section {section!r} must be a mapping.")
    for field, value in fields.items():
      overrides[f"{section}.{field}"] = value
  return with_overrides(Config(), overrides)


def from_json(text: str) -> Config:
  return from_dict(json.loads(text))
