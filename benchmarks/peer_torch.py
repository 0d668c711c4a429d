"""The cascade's networks, joint update and inference written plainly in PyTorch: the speed peer.

`benchmarks/vs_pytorch.py` times these against the project's own rows
(`benchmarks/bench.py`) in one run. They are what a user who picked
PyTorch instead would write: NCHW tensors, `torch.nn` modules with
PyTorch's default initialisation, eager execution, and then PyTorch's usual speed options (`OPTIONS`):
bfloat16 autocast, channels-last memory format, `torch.compile`, each
alone, and bfloat16 autocast with channels-last together (the recipe for
CPUs whose bfloat16 convolutions want channels-last tensors, such as
those with AMX).

Built from the project's `Config`, so the widths always follow the chosen
preset:

* `Generator`, `Critic`, `Restorer`, `VGGFeatures`: the four networks of
  `cascade_tf/models/` (generator, critic, plain restorer, VGG16 up to
  block4_conv3 behind the perceptual loss, random weights as the
  benchmark's), layer for layer: the same kernels, strides, widths, biases
  and normalisations, with Keras' batch-norm epsilon and momentum.
  Stride-2 3x3 convolutions pad one pixel on each side (PyTorch's usual
  `padding=1`) where TensorFlow's "same" pads only after: the same output
  size and cost, shifted by half a pixel. The critic flattens NCHW rather
  than NHWC: the same dense layer with its inputs permuted.
* `make_joint_step`: one joint update of stage `joint`, as
  `training/objectives.generator_objective` and `training/steps.make_step`
  take it and as bench.py's `joint` row times it: eq. (7) on R(G(x)) plus,
  weighted by `loss.lambda_intermediate`, its MSE and perceptual terms on
  G(x); the critic scores G(x) without being trained (its weights take no
  gradient); VGG16's features of the target are computed once, without
  gradient; then the global gradient norm and one optimizer step on G and
  R (`train.optimizer`: RMSProp with Keras' rho 0.9 and epsilon 1e-7, the
  paper's, or Adam with Keras' epsilon). No critic update: bench.py's
  `joint` row has none either (its `joint_full_step` adds n_critic).
* `make_inference`: the generator then the restorer in eval mode under
  `torch.inference_mode`, [0, 1] in, both outputs clipped to [0, 1] out,
  as bench.py's `infer_keras` row (which folds batch norm into the
  convolutions; the plain PyTorch eval-mode network does not).
* `network_forward_flops`: the analytic FLOPs of these modules themselves,
  counted by forward hooks on the Conv2d, ConvTranspose2d and Linear
  modules of one image's pass, with `cascade_tf/flops.py`'s convention;
  `check_flops` asserts they match the project's count within 1%.
* `peak_fn`: the peer's own peak rows (matrix product, 3x3 convolution),
  the PyTorch counterparts of bench.py's `peak_matmul` and `peak_conv3x3`.

Only the options benchmarked with the preset's networks are mirrored: a
config with the mask channel, the composite, the push-pull prefill, the
U-Net restorer or a decaying learning rate raises ValueError naming the
field.

PyTorch is a benchmark-only dependency: `pip install -r requirements-bench.txt`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

try:
  import torch
  from torch import nn
  from torch.nn import functional as F
except ImportError as error:  # Only the benchmark needs PyTorch; say how to get it.
  raise ImportError(
      f"benchmarks/peer_torch.py needs PyTorch ({error}): pip install -r requirements-bench.txt"
  ) from error

from cascade_tf import config as config_lib
from cascade_tf import flops as flops_lib
from cascade_tf import losses
from cascade_tf import ranges
from cascade_tf.models import critic as critic_lib
from cascade_tf.models import generator as generator_lib
from cascade_tf.models import perceptual

# Keras' BatchNormalization defaults: epsilon 1e-3 and a moving average that
# keeps 0.99 of the old statistics (PyTorch's momentum is the new share).
_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.01
_GROUP_NORM_EPSILON = critic_lib._NORM_EPSILON  # pylint: disable=protected-access
# Keras' optimizer defaults that differ from PyTorch's.
_RMSPROP_RHO = 0.9
_KERAS_EPSILON = 1e-7
# VGG16's convolutions up to block4_conv3 (channels out, or "pool"), and the
# indices of the convolutions whose ReLU outputs are phi_12, phi_22, phi_33, phi_43.
_VGG_LAYERS = (64, 64, "pool", 128, 128, "pool", 256, 256, 256, "pool", 512, 512, 512)
_VGG_FEATURES = (1, 3, 6, 9)

MODES = ("joint", "infer")


@dataclasses.dataclass(frozen=True)
class PeerOptions:
  """One way of running the peer; every field off is PyTorch's float32 eager default."""

  bfloat16: bool = False  # Forward passes under torch.autocast("cpu", torch.bfloat16).
  channels_last: bool = False  # Networks and inputs in torch.channels_last memory format.
  compile: bool = False  # The objective (joint) or the cascade (infer) under torch.compile.

  @property
  def precision(self) -> str:
    """The precision the row is compared at: bfloat16 under autocast, else float32."""
    return "bfloat16" if self.bfloat16 else "float32"


# The options vs_pytorch.py measures: PyTorch's default, each speed option alone, and
# bfloat16 autocast on channels-last tensors (oneDNN's bfloat16 convolutions, AMX ones
# included, run on channels-last data; in NCHW each convolution reorders its tensors).
OPTIONS = {
    "f32": PeerOptions(),
    "bf16": PeerOptions(bfloat16=True),
    "channels_last": PeerOptions(channels_last=True),
    "compile": PeerOptions(compile=True),
    "bf16_channels_last": PeerOptions(bfloat16=True, channels_last=True),
}


def check_supported(cfg: config_lib.Config) -> None:
  """Raises ValueError for a config option the peer does not mirror."""
  unsupported = [("generator.mask_channel", cfg.generator.mask_channel, False),
                 ("generator.composite", cfg.generator.composite, False),
                 ("generator.prefill", cfg.generator.prefill, False),
                 ("restorer.arch", cfg.restorer.arch, "plain"),
                 ("train.lr_decay", cfg.train.lr_decay, "constant")]
  for name, value, mirrored in unsupported:
    if value != mirrored:
      raise ValueError(f"{name}={value!r}: the PyTorch peer mirrors only {name}={mirrored!r} "
                       f"(the networks and update of the paper, cpu and tiny presets).")


def _batch_norm(channels: int) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(channels, eps=_BN_EPSILON, momentum=_BN_MOMENTUM)


# --------------------------------------------------------------------------
# Networks.


class ResidualBlock(nn.Module):
  """conv-BN-ReLU-conv-BN plus the identity, no activation after the sum."""

  def __init__(self, channels: int, kernel_size: int, dilation: int = 1):
    super().__init__()
    self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding="same", dilation=dilation,
                           bias=False)
    self.bn1 = _batch_norm(channels)
    self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding="same", dilation=dilation,
                           bias=False)
    self.bn2 = _batch_norm(channels)

  def forward(self, x):
    return x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class Generator(nn.Module):
  """`models/generator.py`: strided encoder, residual blocks, transposed decoder, skips.

  [B, 3, H, W] in [-1, 1] -> [B, 3, H, W] = input + decoder output.
  """

  def __init__(self, cfg: config_lib.GeneratorConfig):
    super().__init__()
    widths = generator_lib._level_filters(cfg)  # pylint: disable=protected-access
    k = cfg.down_kernel_size
    # PyTorch's paddings that give TensorFlow's "same" sizes at stride 2: H -> H/2
    # for the convolutions, H -> 2H for the transposed ones.
    pad = (k - 1) // 2
    self.leaky_slope = cfg.leaky_slope
    self.encoder = nn.ModuleList()
    for i, width in enumerate(widths):
      self.encoder.append(nn.Sequential(
          nn.Conv2d(3 if i == 0 else widths[i - 1], width, k, stride=2, padding=pad, bias=False),
          _batch_norm(width)))
    self.blocks = nn.Sequential(*[
        ResidualBlock(widths[-1], cfg.res_kernel_size,
                      cfg.dilations[j % len(cfg.dilations)] if cfg.dilations else 1)
        for j in range(cfg.num_res_blocks)])
    self.decoder = nn.ModuleList()
    for j in range(cfg.num_levels - 1):
      level = cfg.num_levels - 2 - j
      self.decoder.append(nn.Sequential(
          nn.ConvTranspose2d(widths[level + 1], widths[level], k, stride=2, padding=pad,
                             output_padding=2 * pad + 2 - k, bias=False),
          _batch_norm(widths[level])))
    self.decoder_out = nn.ConvTranspose2d(widths[0], 3, k, stride=2, padding=pad,
                                          output_padding=2 * pad + 2 - k, bias=True)

  def forward(self, image):
    x, skips = image, []
    for layer in self.encoder:
      x = F.leaky_relu(layer(x), self.leaky_slope)
      skips.append(x)
    x = self.blocks(x)
    for j, layer in enumerate(self.decoder):
      x = F.relu(layer(x)) + skips[len(self.encoder) - 2 - j]
    return image + self.decoder_out(x)


class Critic(nn.Module):
  """`models/critic.py`: VGG-like 3x3 groups, the last of each stride 2, then two dense layers.

  [B, 3, S, S] in [-1, 1] -> [B, 1] scores.
  """

  def __init__(self, cfg: config_lib.CriticConfig, image_size: int):
    super().__init__()
    self.leaky_slope = cfg.leaky_slope
    self.convs = nn.ModuleList()
    channels = 3
    for g, num_convs in enumerate(cfg.convs_per_group):
      width = min(cfg.base_filters * 2**g, cfg.max_filters)
      for c in range(num_convs):
        stride = 2 if c == num_convs - 1 else 1
        normalized = cfg.normalization == "group" and (g, c) != (0, 0)
        norm = nn.GroupNorm(1, width, eps=_GROUP_NORM_EPSILON) if normalized else nn.Identity()
        self.convs.append(nn.Sequential(nn.Conv2d(channels, width, 3, stride=stride, padding=1),
                                        norm))
        channels = width
    side = image_size // 2**len(cfg.convs_per_group)
    self.fc = nn.Linear(channels * side * side, cfg.dense_units)
    self.critic_out = nn.Linear(cfg.dense_units, 1)

  def forward(self, images):
    x = images
    for layer in self.convs:
      x = F.leaky_relu(layer(x), self.leaky_slope)
    x = F.leaky_relu(self.fc(torch.flatten(x, 1)), self.leaky_slope)
    return self.critic_out(x)


class Restorer(nn.Module):
  """`models/restorer.py` (plain): full-resolution convolutions; y = x - R(x).

  [B, 3, H, W] in [-1, 1] -> [B, 3, H, W].
  """

  def __init__(self, cfg: config_lib.RestorerConfig):
    super().__init__()
    self.leaky_slope = cfg.leaky_slope
    self.convs = nn.ModuleList()
    for k in range(cfg.num_encode + cfg.num_decode - 1):
      first = k == 0
      conv = nn.Conv2d(3 if first else cfg.filters, cfg.filters, cfg.kernel_size,
                       padding="same", bias=first)
      self.convs.append(conv if first else nn.Sequential(conv, _batch_norm(cfg.filters)))
    self.residual_out = nn.Conv2d(cfg.filters, 3, cfg.kernel_size, padding="same", bias=True)

  def forward(self, images):
    x = images
    for layer in self.convs:
      x = F.leaky_relu(layer(x), self.leaky_slope)
    return images - self.residual_out(x)


class VGGFeatures(nn.Module):
  """`models/perceptual.py`: VGG16's "caffe" preprocessing and phi_12, phi_22, phi_33, phi_43.

  [B, 3, H, W] RGB in [-1, 1] -> the four ReLU feature maps. Frozen.
  """

  def __init__(self):
    super().__init__()
    self.layers = nn.ModuleList()
    channels = 3
    for spec in _VGG_LAYERS:
      if spec == "pool":
        self.layers.append(nn.MaxPool2d(2))
      else:
        self.layers.append(nn.Conv2d(channels, spec, 3, padding=1))
        channels = spec
    self.register_buffer("mean_bgr", torch.tensor(perceptual.IMAGENET_MEAN_BGR).view(1, 3, 1, 1))
    self.requires_grad_(False)

  def forward(self, images):
    x = (images.float() + 1.0) * 127.5
    x = torch.flip(x, dims=[1]) - self.mean_bgr  # RGB -> BGR, minus the ImageNet mean.
    features, conv_index = [], 0
    for layer in self.layers:
      x = layer(x)
      if isinstance(layer, nn.Conv2d):
        x = F.relu(x)
        if conv_index in _VGG_FEATURES:
          features.append(x)
        conv_index += 1
    return features


def build_networks(cfg: config_lib.Config, options: PeerOptions = PeerOptions()) -> dict:
  """{"generator", "critic", "restorer", "vgg"} for `cfg` (vgg None when lambda_per is 0).

  Seeded with `cfg.train.seed`; in `options.channels_last` memory format.
  """
  check_supported(cfg)
  torch.manual_seed(cfg.train.seed)
  nets = {"generator": Generator(cfg.generator),
          "critic": Critic(cfg.critic, cfg.data.image_size),
          "restorer": Restorer(cfg.restorer),
          "vgg": VGGFeatures().eval() if cfg.loss.lambda_per > 0 else None}
  if options.channels_last:
    for net in nets.values():
      if net is not None:
        net.to(memory_format=torch.channels_last)
  return nets


# --------------------------------------------------------------------------
# Losses and the joint update.


def _mse(y_true, y_pred):
  """Eq. (1), averaged over the batch too: `losses.mse_loss` reduced over the batch."""
  return F.mse_loss(y_pred.float(), y_true.float())


def _perceptual(vgg, target_features, images, size: int | None):
  """Eqs. (2-3) against precomputed target features, images resized as `objectives._downscale`."""
  features = vgg(_downscale(images, size))
  per_layer = [_mse(t, f) for t, f in zip(target_features, features)]
  return sum(per_layer) / len(per_layer)


def _downscale(images, size: int | None):
  """Box filter for an integer factor, else anti-aliased bilinear, to [size, size]."""
  height = images.shape[-2]
  if size is None or height == size:
    return images
  if height % size == 0 and images.shape[-1] == height:
    return F.avg_pool2d(images, height // size)
  return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)


def _weighted(terms: dict, loss_cfg: config_lib.LossConfig):
  """Eq. (7)'s weighted sum, as `losses.total_generator_loss` (zero weights left out)."""
  total = 0.0
  for key, weight_name in losses.TERM_WEIGHTS.items():
    weight = float(getattr(loss_cfg, weight_name))
    if key in terms and weight != 0.0:
      total = total + weight * terms[key]
  return total


def joint_objective(nets: dict, cfg: config_lib.Config, batch: dict):
  """`objectives.generator_objective` with a restorer: (total, terms) of one joint update.

  Args:
    nets: from `build_networks`.
    cfg: the config (loss weights, perceptual size).
    batch: {"corrupted", "clean"}, [B, 3, S, S] in [0, 1].

  Returns:
    (total, {"mse", "perceptual", "adversarial", "mse_intermediate" and,
    when both weights are on, "perceptual_intermediate"}), float32 scalars.
  """
  loss_cfg = cfg.loss
  inputs, targets = ranges.to_model(batch["corrupted"]), ranges.to_model(batch["clean"])
  inpainted = nets["generator"](inputs)
  restored = nets["restorer"](inpainted)
  terms = {"mse": _mse(targets, restored), "perceptual": torch.zeros((), device=targets.device),
           "adversarial": -nets["critic"](inpainted).float().mean()}
  size = loss_cfg.perceptual_size
  if loss_cfg.lambda_per > 0:
    with torch.no_grad():
      target_features = nets["vgg"](_downscale(targets, size))
    terms["perceptual"] = _perceptual(nets["vgg"], target_features, restored, size)
  total = _weighted(terms, loss_cfg)
  weight = float(loss_cfg.lambda_intermediate)
  intermediate = {"mse": _mse(targets, inpainted if weight > 0 else inpainted.detach())}
  if weight > 0 and loss_cfg.lambda_per > 0:
    intermediate["perceptual"] = _perceptual(nets["vgg"], target_features, inpainted, size)
    terms["perceptual_intermediate"] = intermediate["perceptual"]
  terms["mse_intermediate"] = intermediate["mse"]
  if weight > 0:
    total = total + weight * _weighted(intermediate, loss_cfg)
  return total, terms


def _optimizer(cfg: config_lib.Config, parameters) -> torch.optim.Optimizer:
  """The joint stage's main optimizer (`stages.new_optimizer`) with Keras' hyperparameters."""
  lr = cfg.stage_lr("joint")
  if cfg.train.optimizer == "rmsprop":
    return torch.optim.RMSprop(parameters, lr=lr, alpha=_RMSPROP_RHO, eps=_KERAS_EPSILON)
  return torch.optim.Adam(parameters, lr=lr, eps=_KERAS_EPSILON)


def random_batch(batch_size: int, size: int, seed: int = 0,
                 options: PeerOptions = PeerOptions()) -> dict:
  """{"corrupted", "clean"}: float32 [B, 3, S, S] uniform in [0, 1]."""
  generator = torch.Generator().manual_seed(seed)
  memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
  return {key: torch.rand(batch_size, 3, size, size, generator=generator).contiguous(
      memory_format=memory_format) for key in ("corrupted", "clean")}


def _autocast(options: PeerOptions):
  return torch.autocast("cpu", dtype=torch.bfloat16, enabled=options.bfloat16)


def make_joint_step(cfg: config_lib.Config, options: PeerOptions = PeerOptions(),
                    nets: dict | None = None) -> Callable[[dict], dict]:
  """One joint update of G and R per call: batch -> {**terms, "total", "grad_norm"}.

  The networks train (batch norm in training mode); the critic and VGG16
  take no gradient for their weights. Values are detached float32 scalars.
  """
  nets = build_networks(cfg, options) if nets is None else nets
  nets["generator"].train()
  nets["restorer"].train()
  nets["critic"].eval().requires_grad_(False)  # Scored through, not trained (steps.py).
  parameters = [p for name in ("generator", "restorer") for p in nets[name].parameters()]
  optimizer = _optimizer(cfg, parameters)

  def objective(batch):
    with _autocast(options):
      return joint_objective(nets, cfg, batch)

  if options.compile:
    objective = torch.compile(objective)

  def step(batch):
    optimizer.zero_grad(set_to_none=True)
    total, terms = objective(batch)
    total.backward()
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    optimizer.step()
    return {**{k: v.detach() for k, v in terms.items()}, "total": total.detach(),
            "grad_norm": grad_norm}

  return step


def make_inference(cfg: config_lib.Config, options: PeerOptions = PeerOptions(),
                   nets: dict | None = None) -> Callable:
  """The cascade in eval mode: [B, 3, H, W] in [0, 1] -> {"inpainted", "restored"} in [0, 1]."""
  nets = build_networks(cfg, options) if nets is None else nets
  generator, restorer = nets["generator"].eval(), nets["restorer"].eval()

  def cascade(images_01):
    with _autocast(options):
      inpainted = generator(ranges.to_model(images_01))
      restored = restorer(inpainted)
    return {"inpainted": ranges.from_model(inpainted.float()).clamp(0.0, 1.0),
            "restored": ranges.from_model(restored.float()).clamp(0.0, 1.0)}

  if options.compile:
    cascade = torch.compile(cascade)

  def infer(images_01):
    with torch.inference_mode():
      return cascade(images_01)

  return infer


def make_row(mode: str, cfg: config_lib.Config, batch_size: int,
             options: PeerOptions = PeerOptions()) -> Callable[[], dict]:
  """What vs_pytorch.py times for `mode` (MODES): a call of one step on a fixed random batch.

  `joint`: one joint update (bench.py's `joint` row); `infer`: the cascade's
  inference (its `infer_keras` row). Builds the networks once, seeded.
  """
  if mode not in MODES:
    raise ValueError(f"mode={mode!r}: expected one of {MODES}.")
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size}: must be >= 1.")
  batch = random_batch(batch_size, cfg.data.image_size, cfg.train.seed, options)
  if mode == "joint":
    step = make_joint_step(cfg, options)
    return lambda: step(batch)
  infer = make_inference(cfg, options)
  return lambda: infer(batch["corrupted"])


# --------------------------------------------------------------------------
# FLOPs and peak.


def forward_flops(module: nn.Module, example) -> int:
  """FLOPs (2 per multiply-add) of one image through `module`, from its own layers.

  Forward hooks on every Conv2d, ConvTranspose2d and Linear module count,
  per call, as `cascade_tf.flops.layer_flops` does: convolution = output
  elements x kernel area x input channels / groups; transposed convolution
  = input elements x kernel area x output channels / groups; dense =
  output elements x input features. Norms, activations and merges count 0.

  Args:
    module: a network of this module.
    example: its input for one image, batch first (batch size 1).
  """
  if example.shape[0] != 1:
    raise ValueError(f"forward_flops counts one image: got a batch of {example.shape[0]}.")
  total = 0

  def count(layer, inputs, output):
    nonlocal total
    if isinstance(layer, nn.ConvTranspose2d):
      total += (2 * inputs[0].numel() * math.prod(layer.kernel_size) * layer.out_channels
                // layer.groups)
    elif isinstance(layer, nn.Conv2d):
      total += (2 * output.numel() * math.prod(layer.kernel_size) * layer.in_channels
                // layer.groups)
    else:
      total += 2 * output.numel() * layer.in_features

  handles = [m.register_forward_hook(count) for m in module.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
  was_training = module.training
  try:
    module.eval()
    with torch.no_grad():
      module(example)
  finally:
    module.train(was_training)
    for handle in handles:
      handle.remove()
  return total


def network_forward_flops(cfg: config_lib.Config, nets: dict | None = None) -> dict[str, int]:
  """Forward FLOPs per image of the peer's networks, as `flops.network_forward_flops`.

  Generator, critic and restorer at `cfg.data.image_size`, VGG16 at
  `cfg.loss.perceptual_size` (or the image size); vgg 0 when lambda_per is 0.
  """
  nets = build_networks(cfg) if nets is None else nets
  size = cfg.data.image_size
  image = torch.zeros(1, 3, size, size)
  counts = {name: forward_flops(nets[name], image)
            for name in ("generator", "critic", "restorer")}
  vgg_size = cfg.loss.perceptual_size or size
  counts["vgg"] = (forward_flops(nets["vgg"], torch.zeros(1, 3, vgg_size, vgg_size))
                   if nets["vgg"] is not None else 0)
  return counts


def check_flops(cfg: config_lib.Config, tolerance: float = 0.01,
                project: dict[str, int] | None = None) -> dict[str, int]:
  """The peer's forward FLOPs per network, checked against `cascade_tf.flops` for `cfg`.

  Args:
    cfg: the config both sides are built from.
    tolerance: the largest relative difference allowed per network.
    project: `flops.network_forward_flops(cfg)` when the caller has it.

  Returns:
    The peer's counts ({"generator", "critic", "restorer", "vgg"}).

  Raises:
    AssertionError: naming each network whose counts differ by more than
      `tolerance` (the peer then does not mirror the project's networks).
  """
  project = flops_lib.network_forward_flops(cfg) if project is None else project
  peer = network_forward_flops(cfg)
  mismatched = [f"{name}: peer {peer[name]:,} vs project {project[name]:,}"
                for name in project
                if abs(peer[name] - project[name]) > tolerance * max(project[name], 1)]
  if mismatched:
    raise AssertionError(f"The PyTorch peer's FLOPs differ from cascade_tf.flops by more than "
                         f"{tolerance:.0%} (preset {cfg.preset}): {'; '.join(mismatched)}.")
  return peer


PEAK_NAMES = ("peak_matmul", "peak_conv3x3")
PEAK_PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def peak_fn(name: str, precision: str, matmul_size: int, conv_shape: Sequence[int]):
  """bench.py's peak rows in PyTorch: (fn, items per call, FLOPs per item, batch, image size).

  `peak_matmul`: an NxN matrix product (one item); `peak_conv3x3`: a 3x3
  same convolution [B, C, S, S] -> C (B items), at `precision` (float32 or
  bfloat16), each summed to one float32 value as bench.py's are.
  """
  if name not in PEAK_NAMES:
    raise ValueError(f"name={name!r}: expected one of {PEAK_NAMES}.")
  if precision not in PEAK_PRECISIONS:
    raise ValueError(f"precision={precision!r}: the peer's peak rows have "
                     f"{list(PEAK_PRECISIONS)}.")
  dtype, generator = PEAK_PRECISIONS[precision], torch.Generator().manual_seed(0)
  if name == "peak_matmul":
    n = matmul_size
    a = torch.rand(n, n, generator=generator).to(dtype)
    b = torch.rand(n, n, generator=generator).to(dtype)
    return (lambda: torch.matmul(a, b).float().sum()), 1, 2 * n**3, 1, n
  batch, size, channels = conv_shape
  x = torch.rand(batch, channels, size, size, generator=generator).to(dtype)
  kernel = (torch.randn(channels, channels, 3, 3, generator=generator) * 0.05).to(dtype)
  return ((lambda: F.conv2d(x, kernel, padding=1).float().sum()), batch,
          2 * size * size * channels * channels * 9, batch, size)
