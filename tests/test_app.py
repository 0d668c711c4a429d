"""app.py: the repair logic behind the page, and the page itself in headless Chromium."""

import os
from pathlib import Path
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

from cascade_tf import pretrained
from cascade_tf import webapp

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def repair():
  return webapp.PhotoRepair(pretrained.NAME, max_pixels=200_000)


def test_inpaint_mode_changes_only_the_painted_pixels_and_full_mode_all(repair):
  rng = np.random.default_rng(0)
  photo = (rng.uniform(0, 1, (150, 200, 3)) * 255).astype(np.uint8)
  hole = np.zeros((150, 200), bool)
  hole[60:80, 30:170] = True
  inpainted = repair.repair(photo, hole, full=False)
  assert inpainted.shape == photo.shape and inpainted.dtype == np.uint8
  np.testing.assert_array_equal(inpainted[~hole], photo[~hole])
  assert np.abs(inpainted[hole].astype(int) - photo[hole]).mean() > 5
  restored = repair.repair(photo, hole, full=True)
  assert restored.shape == photo.shape and np.abs(restored[~hole].astype(int) -
                                                  photo[~hole]).mean() > 1
  np.testing.assert_array_equal(repair.repair(photo, None, full=False), photo)
  with pytest.raises(webapp.PhotoTooLarge, match="0.3 MP .*up to 0.2 MP"):
    repair.repair(np.zeros((500, 600, 3), np.uint8), None, full=True)


def test_painted_mask_reads_every_layer_at_the_photo_size():
  layer = np.zeros((10, 12, 4), np.uint8)
  layer[2:4, 3:9, 3] = 255
  hole = webapp.painted_mask({"background": None, "layers": [layer], "composite": None},
                             (10, 12, 3))
  assert hole.sum() == 12 and hole[2:4, 3:9].all()
  assert webapp.painted_mask(None, (10, 12, 3)) is None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_the_page_in_a_browser(tmp_path):
  """Upload, paint a stroke with the mouse, Repair, download; then a file that is no image."""
  playwright = pytest.importorskip("playwright.sync_api")
  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  if chromium is None:
    pytest.skip("no chromium on this machine (.ci/run installs Debian's)")
  photo = np.asarray(Image.open(webapp.sample_paths(str(tmp_path / "samples"))["astronaut"]))
  photo = np.asarray(Image.fromarray(photo).resize((384, 320), Image.Resampling.BICUBIC))
  Image.fromarray(photo).save(tmp_path / "photo.png")
  (tmp_path / "notes.txt").write_text("not a photo")
  port = _free_port()
  log = open(tmp_path / "app.log", "w")
  app = subprocess.Popen([sys.executable, "app.py", f"--port={port}",
                          f"--samples_dir={tmp_path / 'samples'}"], cwd=ROOT, stdout=log,
                         stderr=subprocess.STDOUT, env={**os.environ, "CUDA_VISIBLE_DEVICES": "",
                                                        "GRADIO_ANALYTICS_ENABLED": "False"})
  try:
    deadline = time.monotonic() + 180
    while "Running on local URL" not in (tmp_path / "app.log").read_text():
      assert app.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
      assert time.monotonic() < deadline, "app.py did not start in 180 s"
      time.sleep(1)
    with playwright.sync_playwright() as p:
      browser = p.chromium.launch(executable_path=chromium, headless=True,
                                  args=["--no-sandbox"])
      page = browser.new_page(viewport={"width": 1280, "height": 1600}, accept_downloads=True)
      page.set_default_timeout(120_000)
      page.goto(f"http://127.0.0.1:{port}/")
      page.set_input_files("#upload input[type=file]", str(tmp_path / "photo.png"))
      page.wait_for_function(
          "() => { const c = document.querySelector('#editor canvas'); return c && c.width > 0; }")
      page.wait_for_timeout(2000)  # The editor draws the photo into its canvas.
      page.get_by_role("button", name="Brush", exact=True).click()
      box = page.locator("#editor canvas").first.bounding_box()
      x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
      page.mouse.move(x - 40, y)
      page.mouse.down()
      for i in range(21):
        page.mouse.move(x - 40 + 4 * i, y, steps=2)
      page.mouse.up()
      page.click("#repair")
      page.wait_for_selector("#download", state="visible")
      # APP_SCREENSHOT=/tmp/app.png keeps the page after the repair (the README's picture).
      page.screenshot(path=os.environ.get("APP_SCREENSHOT") or str(tmp_path / "page.png"),
                      full_page=True)
      with page.expect_download() as download:
        page.click("#download")
      repaired = np.asarray(Image.open(download.value.path()))
      # The non-image file: a message on the page, no repair, the page still works.
      page.locator("#upload").get_by_role("button", name="Clear").click()
      page.set_input_files("#upload input[type=file]", str(tmp_path / "notes.txt"))
      page.get_by_text("notes.txt is not an image this page can read").wait_for()
      browser.close()
  finally:
    app.terminate()
    try:
      app.wait(timeout=30)
    except subprocess.TimeoutExpired:
      app.kill()
    log.close()
  assert repaired.shape == photo.shape
  changed = np.abs(repaired.astype(int) - photo.astype(int)).max(axis=-1) > 0
  rows, cols = np.nonzero(changed)
  assert changed.sum() > 500  # The stroke was filled...
  # ... and nothing else changed: only pixels near the middle, where it was painted.
  assert 100 < rows.min() and rows.max() < 220 and 100 < cols.min() and cols.max() < 290
