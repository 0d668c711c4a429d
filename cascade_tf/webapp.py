"""The page behind app.py: paint the damage on a photo, get it repaired (Gradio).

`PhotoRepair` holds one loaded model (the shipped cascade by default) and
repairs a photo with a painted mask exactly as `restore.py --mask=...`
does (`restoring.TileGeometry.repair`: holes larger than the model's
reach first, then overlapping tiles at the photo's own resolution). With
"also remove blur and noise" unticked only the painted pixels change (the
`inpaint` mode); ticked, the whole photo goes through the cascade (`full`).

`build_app` lays out the page: a file upload (decoded by the package's
own decoder, `sources.decode_image_file`, so an unreadable file or one over
the size limit gets a message that names it), a choice of bundled sample
photos (scikit-image's), the editor to paint in (brush of adjustable size,
eraser, undo), the tick box, Repair, a before/after slider and a download
button for the full-resolution PNG. Requests are queued one at a time
(`queue(default_concurrency_limit=1)`): one model, one repair at a time.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from PIL import Image

from cascade_tf import inference
from cascade_tf import restoring
from cascade_tf.data import sources

DEFAULT_MAX_PIXELS = 16_777_216  # 2**24: the export's default limit (serving.DEFAULT_MAX_PIXELS).
SAMPLE_NAMES = ("astronaut", "chelsea", "coffee", "rocket")


class PhotoTooLarge(ValueError):
  """A photo over the page's size limit."""


class PhotoRepair:
  """One model behind the page; `repair(photo, hole, full)` -> the repaired photo."""

  def __init__(self, model: str = "pretrained", max_pixels: int = DEFAULT_MAX_PIXELS):
    self.model = model
    self.max_pixels = max_pixels
    self.repairer = inference.Repairer(inference.resolve_model(model))
    self.geometry = restoring.TileGeometry.for_model(self.repairer.config, model=model)

  def _run(self, batch, masks):
    return {k: v.numpy() for k, v in self.repairer(batch, masks).items()}

  def check_size(self, height: int, width: int, name: str = "The photo") -> None:
    if self.max_pixels and height * width > self.max_pixels:
      raise PhotoTooLarge(
          f"{name} has {height * width / 1e6:.1f} MP ({width} x {height}); this page repairs "
          f"photos up to {self.max_pixels / 1e6:.1f} MP. Shrink it first, or use restore.py, "
          "which takes up to 100 MP.")

  def repair(self, photo: np.ndarray, hole: np.ndarray | None, full: bool) -> np.ndarray:
    """Repairs `photo` (uint8 [H, W, 3]) with `hole` (bool [H, W] or None).

    Returns uint8 [H, W, 3]: with `full`, the cascade's restored photo;
    otherwise the photo with only the hole's pixels replaced by the fill.
    """
    photo = np.ascontiguousarray(photo[..., :3], dtype=np.uint8)
    self.check_size(*photo.shape[:2])
    if hole is not None and not hole.any():
      hole = None
    if not full and hole is None:
      return photo.copy()
    output = "restored" if full else "inpainted"
    result = self.geometry.repair(photo.copy(), hole, self._run, (output,))[output]
    if full:
      return result
    return np.where(hole[..., None], result, photo)


def painted_mask(editor_value, shape) -> np.ndarray | None:
  """The painted pixels of an ImageEditor value (any layer, alpha > 0) as bool [H, W]."""
  if not editor_value:
    return None
  hole = np.zeros(shape[:2], bool)
  for layer in editor_value.get("layers") or []:
    if layer is None:
      continue
    layer = np.asarray(layer)
    if layer.shape[:2] != hole.shape:  # The editor keeps layers at the photo's size.
      layer = np.asarray(Image.fromarray(layer).resize((hole.shape[1], hole.shape[0]),
                                                       Image.Resampling.NEAREST))
    alpha = layer[..., 3] if layer.ndim == 3 and layer.shape[-1] == 4 else layer.max(axis=-1)
    hole |= alpha > 0
  return hole


def sample_paths(directory: str, names=SAMPLE_NAMES) -> dict[str, str]:
  """Writes the bundled sample photos (scikit-image's) as PNGs; {name: path}."""
  arrays = dict(sources.sample_arrays())
  os.makedirs(directory, exist_ok=True)
  paths = {}
  for name in names:
    path = os.path.join(directory, f"{name}.png")
    if not os.path.exists(path):
      Image.fromarray(arrays[name]).save(path)
    paths[name] = path
  return paths


def build_app(repair: PhotoRepair, samples: dict[str, str], output_dir: str | None = None):
  """The Gradio page (a gr.Blocks; call .queue().launch() on it)."""
  import gradio as gr  # pylint: disable=g-import-not-at-top

  output_dir = output_dir or tempfile.mkdtemp(prefix="cascade_tf_app-")

  def editor_value(photo):
    return {"background": photo, "layers": [], "composite": photo}

  def load_file(path):
    if not path:
      return gr.update()
    name = os.path.basename(path)
    try:
      photo = sources.decode_image_file(path, max_pixels=repair.max_pixels or None)
    except sources.ImageTooLarge as error:
      raise gr.Error(f"{name}: {error}") from None
    except Exception as error:  # pylint: disable=broad-except
      # Decoders raise many types on a file that is not an image.
      raise gr.Error(f"{name} is not an image this page can read (JPEG, PNG, BMP, TIFF, "
                     f"WebP): {type(error).__name__}.") from None
    try:
      repair.check_size(*photo.shape[:2], name=name)
    except PhotoTooLarge as error:
      raise gr.Error(str(error)) from None
    return editor_value(photo)

  def load_sample(name):
    if not name:
      return gr.update()
    return editor_value(np.asarray(Image.open(samples[name]).convert("RGB")))

  def run(value, full):
    if not value or value.get("background") is None:
      raise gr.Error("Upload a photo (or pick a sample) first, then paint over the damage.")
    photo = np.asarray(value["background"])[..., :3].astype(np.uint8)
    hole = painted_mask(value, photo.shape)
    if not full and (hole is None or not hole.any()):
      raise gr.Error("Paint over the damage first (or tick 'Also remove blur and noise' to "
                     "repair the whole photo).")
    try:
      repaired = repair.repair(photo, hole, full)
    except PhotoTooLarge as error:
      raise gr.Error(str(error)) from None
    path = os.path.join(output_dir, f"repaired-{time.strftime('%Y%m%d-%H%M%S')}-"
                        f"{os.getpid()}-{np.random.randint(1 << 30)}.png")
    Image.fromarray(repaired).save(path)
    return (photo, repaired), gr.update(value=path, visible=True)

  with gr.Blocks(title="cascade_tf: repair a photo") as page:
    gr.Markdown("# Repair a photo\nUpload a photo (or pick a sample), paint over the damage "
                "with the brush (its size is adjustable; eraser and undo are in the toolbar), "
                "then press **Repair**. Unticked, only the painted pixels change.")
    with gr.Row():
      upload = gr.File(label="Photo (JPEG, PNG, ...)", file_count="single", type="filepath",
                       elem_id="upload")
      sample = gr.Dropdown(choices=list(samples), value=None, label="or a sample photo",
                           elem_id="sample")
    editor = gr.ImageEditor(type="numpy", label="Paint over the damage", sources=(),
                            brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed"),
                            eraser=gr.Eraser(), layers=False, transforms=(),
                            image_mode="RGB", format="png", height=560, elem_id="editor")
    full = gr.Checkbox(value=False, label="Also remove blur and noise (the whole photo changes)",
                       elem_id="full")
    button = gr.Button("Repair", variant="primary", elem_id="repair")
    result = gr.ImageSlider(label="Before / after", type="numpy", elem_id="result",
                            interactive=False)
    download = gr.DownloadButton("Download the repaired photo (PNG, full resolution)",
                                 visible=False, elem_id="download")
    upload.upload(load_file, upload, editor)
    sample.change(load_sample, sample, editor)
    button.click(run, [editor, full], [result, download])
  return page
