"""A photo or a drawing made into a 28x28 image as the datasets' own images were made.

TF-free (numpy and Pillow):

  from digits_jax import preprocess
  pixels = preprocess.prepare(preprocess.read_image('seven.jpg'), 'digit')  # uint8 [28, 28]

MNIST digits are light ink on black, their longer side 20 px (anti-aliased), centred in
28x28 by their centre of mass. `prepare_digit` makes dark-on-white paper look like that:
grayscale, invert when the background is light, threshold away paper noise (Otsu),
stretch the ink's contrast, crop to the ink, thicken strokes far thinner than MNIST's
(a pen on a large photo), scale the longer side to 20 px keeping the aspect ratio by area
averaging, and paste into 28x28 with the centre of mass at MNIST's (14, 14).
Fashion-MNIST items are light on black, their longer side 28 px: `prepare_fashion`
inverts, removes the background level, crops, scales and centres.

Every step is integer arithmetic or float64 arithmetic that the report's drawing pad
repeats in JavaScript (digits_jax/assets/drawing_pad.js), so both give the same pixels
(within one grey level where a sum lands on a rounding boundary). For that reason the
resampling is this module's own area averaging rather than Pillow's filters.
"""

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

SIZE = 28  # Output side.
MAX_SIDE = 2000  # Larger photos are reduced first (see read_image).
DIGIT_BOX = 20  # MNIST: the longer side of a digit's box.
CENTRE = 14.0  # MNIST: mean centre of mass of the test images (row and column index).
INK_CONTRAST = 40  # Grey levels between paper and ink below which an image is blank.
FASHION_NOISE = 16  # Grey levels above the background still counted as background.
# Stroke width in the 20-px box: thinner than MIN_STROKE (about MNIST's 5th percentile)
# is thickened to TARGET_STROKE (MNIST's median), as measured by `stroke_width`.
MIN_STROKE, TARGET_STROKE = 1.6, 2.5


class ImageError(ValueError):
  """The file cannot be read as an image, or the image holds no ink."""


def read_image(path):
  """The image at `path` as uint8 RGBA [H, W, 4], turned upright by its EXIF orientation.

  A photo longer than MAX_SIDE pixels is first reduced by an integer factor (box
  average): a 28x28 needs no more, and a 48-megapixel photo would need gigabytes.

  Raises:
    ImageError: the file is missing or is not an image Pillow can read.
  """
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)
      if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):  # 16-bit or float grey.
        grey = np.asarray(image, np.float64)
        grey = grey * (255.0 / max(grey.max(), 1.0))
        image = Image.fromarray(np.uint8(np.floor(grey + 0.5)))
      image = image.convert('RGBA')
      factor = -(-max(image.size) // MAX_SIDE)
      return np.asarray(image.reduce(factor) if factor > 1 else image, np.uint8)
  except FileNotFoundError:
    raise ImageError('no such file') from None
  except IsADirectoryError:
    raise ImageError('a folder, not an image file') from None
  except PermissionError:
    raise ImageError('not readable (permission denied)') from None
  except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
          ValueError) as e:
    raise ImageError(f'not an image Pillow can read ({e})') from None


def round_half_up(x):
  """floor(x + 0.5): JavaScript's Math.round (Python's round() rounds halves to even)."""
  return np.floor(np.asarray(x, np.float64) + 0.5).astype(np.int64)


def to_grey(pixels):
  """uint8 grey [H, W] of uint8 grey, RGB or RGBA pixels; transparency over white.

  The luma weights are Pillow's convert('L') (ITU-R 601-2, in 16-bit fixed point).
  """
  pixels = np.asarray(pixels)
  if pixels.ndim == 2:
    return pixels.astype(np.uint8)
  rgb = pixels[..., :3].astype(np.int64)
  if pixels.shape[-1] == 4:
    alpha = pixels[..., 3:4].astype(np.int64)
    rgb = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def lower_median(values):
  """The lower median of uint8 values, from their histogram (no sort of a large image)."""
  counts = np.bincount(np.ravel(values), minlength=256)
  return int(np.searchsorted(np.cumsum(counts), (values.size - 1) // 2 + 1))


def border(grey):
  """The image's outermost pixels (its frame, one pixel wide)."""
  if min(grey.shape) <= 2:
    return grey.ravel()
  return np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])


def light_on_dark(grey):
  """Inverts `grey` when its frame is mostly light (dark ink on paper), so ink is bright."""
  return 255 - grey if lower_median(border(grey)) > 127 else grey


def otsu_threshold(grey):
  """Otsu's threshold of uint8 values (pixels above it are ink), or None if all are equal."""
  counts = np.bincount(grey.ravel(), minlength=256).astype(np.int64)
  below = np.cumsum(counts)
  sum_below = np.cumsum(counts * np.arange(256))
  above, sum_above = grey.size - below, sum_below[-1] - sum_below
  valid = (below > 0) & (above > 0)
  if not valid.any():
    return None
  with np.errstate(divide='ignore', invalid='ignore'):
    diff = sum_below / below - sum_above / above
    between = below.astype(np.float64) * above.astype(np.float64) * diff * diff
  return int(np.argmax(np.where(valid, between, -1.0)))


def ink_of_paper(grey):
  """The ink of a grey image of strokes on paper.

  Returns:
    (ink, strong): float64 [H, W] in [0, 1], paper 0 and the ink's median level 1; and
    bool [H, W], the pixels above Otsu's threshold (the strokes without their soft edges,
    which is where the ink lies for sure).

  Raises:
    ImageError: the ink differs from the paper by fewer than INK_CONTRAST grey levels.
  """
  grey = light_on_dark(grey)
  threshold = otsu_threshold(grey)
  if threshold is None:
    raise ImageError('blank: the image is one flat colour, no ink was found')
  strong = grey > threshold
  level, paper = lower_median(grey[strong]), lower_median(grey)
  if level - paper < INK_CONTRAST:
    raise ImageError(f'blank: no ink was found (the darkest marks differ from the paper by '
                     f'{level - paper} grey levels, fewer than {INK_CONTRAST})')
  low = (paper + threshold) / 2  # Keeps the strokes' soft edges; paper noise stays below.
  return np.clip((grey.astype(np.float64) - low) / (level - low), 0.0, 1.0), strong


def bounding_box(values):
  """(top, bottom, left, right) of the non-zero values, bottom and right exclusive."""
  rows, cols = np.flatnonzero(values.any(1)), np.flatnonzero(values.any(0))
  return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def stroke_width(mask):
  """Mean stroke width in pixels of a boolean mask: twice the area over the boundary.

  A stroke of width w and length L has area wL and 2L boundary pixels (those with a
  4-neighbour outside the mask); strokes up to 2 px wide all measure 2.
  """
  padded = np.pad(mask, 1)
  inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
  boundary = np.count_nonzero(mask & ~inner)
  return 2.0 * np.count_nonzero(mask) / max(boundary, 1)


def max_filter(values, radius):
  """Grey dilation by a (2 radius + 1)-square, outside values 0 (the image grows by radius)."""
  size = 2 * radius + 1
  out = np.pad(values, radius)
  for axis in (0, 1):
    padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, size, axis=axis)
    out = windows.max(axis=-1)
  return out


def thicken(ink):
  """`ink` (cropped to its box) with strokes far thinner than MNIST's dilated to its median."""
  scale = DIGIT_BOX / max(ink.shape)
  width = stroke_width(ink > 0)
  if width * scale >= MIN_STROKE:
    return ink
  radius = int(round_half_up((TARGET_STROKE / scale - width) / 2))
  return max_filter(ink, radius) if radius >= 1 else ink


def area_weights(n_in, n_out):
  """[n_out, n_in]: the share of each input pixel in each output pixel (area averaging)."""
  step = n_in / n_out
  start = np.arange(n_out)[:, None] * step
  pixel = np.arange(n_in)[None, :]
  overlap = np.minimum(start + step, pixel + 1) - np.maximum(start, pixel)
  return np.clip(overlap, 0.0, None) / step


def resize(values, height, width):
  """`values` [H, W] resampled to [height, width] by area averaging (anti-aliased)."""
  rows = area_weights(values.shape[0], height)
  cols = area_weights(values.shape[1], width)
  return rows @ values @ cols.T


def fitted_size(shape, longest):
  """(height, width) with the longer side `longest` and the aspect ratio of `shape`."""
  h, w = shape
  scale = longest / max(h, w)
  return max(1, int(round_half_up(h * scale))), max(1, int(round_half_up(w * scale)))


def to_uint8(values):
  """[0, 1] floats to uint8 grey levels, rounding halves up."""
  return np.clip(round_half_up(values * 255.0), 0, 255).astype(np.uint8)


def prepare_digit(pixels):
  """A digit on paper (uint8 grey, RGB or RGBA [H, W(, C)]) as an MNIST image.

  Returns:
    uint8 [28, 28], light on dark.

  Raises:
    ImageError: the image is blank (see `ink_of_paper`).
  """
  ink, strong = ink_of_paper(to_grey(pixels))
  top, bottom, left, right = bounding_box(strong)
  ink = thicken(ink[top:bottom, left:right])
  digit = resize(ink, *fitted_size(ink.shape, DIGIT_BOX))
  total = digit.sum()
  cy = (digit.sum(1) * np.arange(digit.shape[0])).sum() / total
  cx = (digit.sum(0) * np.arange(digit.shape[1])).sum() / total
  top = int(np.clip(round_half_up(CENTRE - cy), 0, SIZE - digit.shape[0]))
  left = int(np.clip(round_half_up(CENTRE - cx), 0, SIZE - digit.shape[1]))
  out = np.zeros((SIZE, SIZE))
  out[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
  return to_uint8(out)


def prepare_fashion(pixels):
  """A clothing item photographed on a plain background as a Fashion-MNIST image.

  Returns:
    uint8 [28, 28], light on dark, the longer side 28 px, centred.

  Raises:
    ImageError: nothing stands out from the background by INK_CONTRAST grey levels.
  """
  grey = light_on_dark(to_grey(pixels))
  background, peak = lower_median(border(grey)), int(grey.max())
  if peak - background < INK_CONTRAST:
    raise ImageError(f'blank: nothing stands out from the background (by {peak - background} '
                     f'grey levels, fewer than {INK_CONTRAST})')
  low = background + FASHION_NOISE
  item = np.clip((grey.astype(np.float64) - low) / (peak - low), 0.0, 1.0)
  top, bottom, left, right = bounding_box(item)
  item = resize(item[top:bottom, left:right], *fitted_size((bottom - top, right - left), SIZE))
  out = np.zeros((SIZE, SIZE))
  top, left = (SIZE - item.shape[0]) // 2, (SIZE - item.shape[1]) // 2
  out[top:top + item.shape[0], left:left + item.shape[1]] = item
  return to_uint8(out)


# By name; a dataset's record (input_pipeline.DATASETS) names the one its images were made with.
PREPARATIONS = {'digit': prepare_digit, 'fashion': prepare_fashion}


def prepare(pixels, preparation):
  """`pixels` prepared by the PREPARATIONS entry `preparation` ('digit' or 'fashion')."""
  return PREPARATIONS[preparation](pixels)
