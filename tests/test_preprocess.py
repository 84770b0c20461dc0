"""digits_jax.preprocess on synthetic drawings: orientation, size, centring, blanks, strokes."""

import numpy as np
import pytest
from PIL import Image
from PIL import ImageDraw

from digits_jax import preprocess


def paper(width=300, height=240, shade=235, seed=0):
  """Off-white paper with a little noise, uint8 grey."""
  rng = np.random.default_rng(seed)
  return np.clip(rng.normal(shade, 4, (height, width)), 0, 255).astype(np.uint8)


def draw_seven(image, top_left=(60, 30), size=150, width=14, ink=30):
  """A '7' drawn on `image` (uint8 grey); returns the new image."""
  im = Image.fromarray(image)
  d = ImageDraw.Draw(im)
  x, y = top_left
  d.line([(x, y), (x + size * 0.7, y), (x + size * 0.35, y + size)], fill=ink, width=width,
         joint='curve')
  return np.asarray(im)


def centre_of_mass(image):
  image = image.astype(np.float64)
  r = np.arange(image.shape[0])
  return ((image.sum(1) * r).sum() / image.sum(), (image.sum(0) * r).sum() / image.sum())


def box(image):
  top, bottom, left, right = preprocess.bounding_box(image > 0)
  return bottom - top, right - left


def test_a_digit_on_paper_becomes_an_mnist_image():
  out = preprocess.prepare_digit(draw_seven(paper()))
  assert out.dtype == np.uint8 and out.shape == (28, 28)
  assert out.max() == 255 and out[0].max() == 0 and out[:, 0].max() == 0  # Light on black.
  assert max(box(out)) == 20  # The longer side, as in MNIST.
  cy, cx = centre_of_mass(out)
  assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_position_size_and_ink_colour_do_not_matter():
  base = preprocess.prepare_digit(draw_seven(paper()))
  moved = preprocess.prepare_digit(draw_seven(paper(500, 400), top_left=(300, 200)))
  assert np.abs(moved.astype(int) - base).max() <= 8  # The paper's noise differs, not the 7.
  assert preprocess.bounding_box(moved) == preprocess.bounding_box(base)
  light_on_dark = preprocess.prepare_digit(255 - draw_seven(paper()))
  assert np.abs(light_on_dark.astype(int) - base).max() <= 1
  big = preprocess.prepare_digit(draw_seven(paper(900, 700), size=450, width=42))
  assert np.abs(big.astype(int) - base).mean() < 8  # Only anti-aliasing differs.
  rgb = np.stack([draw_seven(paper())] * 3, -1)
  rgb[..., 2] = np.maximum(rgb[..., 2], 120)  # Blue ink.
  assert (preprocess.prepare_digit(rgb) > 0).sum() == pytest.approx((base > 0).sum(), rel=0.1)


def test_transparency_counts_as_white_paper():
  ink = np.zeros((200, 200, 4), np.uint8)  # Transparent everywhere...
  ink[50:150, 95:105] = (0, 0, 0, 255)  # ...but a black bar: a '1'.
  out = preprocess.prepare_digit(ink)
  assert box(out)[0] == 20 and out[14, 14] == 255


@pytest.mark.parametrize('image', [
    np.full((100, 80), 255, np.uint8),  # White paper.
    np.zeros((100, 80), np.uint8),  # Black.
    paper(seed=1),  # Paper noise only.
    np.tile(np.linspace(180, 230, 80).astype(np.uint8), (100, 1)),  # Uneven light, no ink.
])
def test_blank_images_are_refused(image):
  with pytest.raises(preprocess.ImageError, match='blank'):
    preprocess.prepare_digit(image)


def test_thin_pen_strokes_are_thickened_to_mnist_width():
  thin = preprocess.prepare_digit(draw_seven(paper(900, 700), size=450, width=4))
  normal = preprocess.prepare_digit(draw_seven(paper()))
  assert (thin > 127).sum() >= 0.7 * (normal > 127).sum()
  widths = [preprocess.stroke_width(i > 127) for i in (thin, normal)]
  assert widths[0] == pytest.approx(widths[1], rel=0.35)


def test_area_resize_keeps_the_mean_and_fits_the_aspect():
  values = np.random.default_rng(0).random((97, 41))
  small = preprocess.resize(values, 20, 8)
  assert small.shape == (20, 8)
  assert small.mean() == pytest.approx(values.mean())
  assert preprocess.fitted_size((97, 41), 20) == (20, 8)
  assert preprocess.fitted_size((3, 300), 28) == (1, 28)


def test_otsu_splits_two_levels():
  values = np.array([10] * 50 + [200] * 30, np.uint8)
  assert 10 <= preprocess.otsu_threshold(values) < 200
  assert preprocess.otsu_threshold(np.full(9, 7, np.uint8)) is None


def test_a_clothing_photo_becomes_a_fashion_mnist_image():
  photo = np.full((300, 200), 250, np.uint8)
  photo[40:260, 60:140] = 90  # A dark coat, taller than wide, on white.
  out = preprocess.prepare_fashion(photo)
  assert out.shape == (28, 28) and out.max() == 255
  assert box(out) == (28, 10)  # The longer side fills 28; centred.
  assert preprocess.bounding_box(out > 0)[2] == 9
  with pytest.raises(preprocess.ImageError, match='blank'):
    preprocess.prepare_fashion(np.full((30, 30), 250, np.uint8))


@pytest.mark.parametrize('content,reason', [(None, 'no such file'),
                                            (b'not an image', 'not an image')])
def test_unreadable_files(tmp_path, content, reason):
  path = tmp_path / 'x.png'
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(preprocess.ImageError, match=reason):
    preprocess.read_image(str(path))


def test_exif_rotation_is_applied(tmp_path):
  image = Image.fromarray(np.zeros((10, 30), np.uint8))
  exif = image.getexif()
  exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view.
  image.save(tmp_path / 'r.jpg', exif=exif)
  assert preprocess.read_image(str(tmp_path / 'r.jpg')).shape == (30, 10, 4)


def test_a_large_photo_is_reduced_on_reading(tmp_path):
  Image.fromarray(draw_seven(paper(4100, 3000), size=2000, width=180)).save(tmp_path / 'p.png')
  image = preprocess.read_image(str(tmp_path / 'p.png'))
  assert image.shape == (1000, 1367, 4)  # Reduced 3x: 4100 / 3 = 1366.7, rounded up.
  assert max(box(preprocess.prepare_digit(image))) == 20
