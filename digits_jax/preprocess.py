"""A photo or a drawing made into a 28x28 image as the datasets' own images were made.

TF-free (numpy and Pillow):

  from digits_jax import preprocess
  pixels = preprocess.prepare(preprocess.read_image('seven.jpg'), 'digit')  # uint8 [28, 28]

MNIST digits are light ink on black, their longer side 20 px (anti-aliased), centred in
28x28 by their centre of mass. `prepare_digit` makes a photo of paper look like that:
grayscale; if the ink is dark (`ink_is_dark`), divide out uneven light (a shadow, a
gradient, grey paper lit from one side: `even_out_light`) and invert; threshold away
paper noise (Otsu, and at least NOISE_SIGMAS times the paper's own noise above the
paper), drop specks and, in evened-out light, marks that run off the picture (what is
left of a shadow's edge); stretch the ink's contrast, crop to the ink, thicken strokes far thinner than MNIST's
(a pen on a large photo), scale the longer side to 20 px keeping the aspect ratio by area
averaging, and paste into 28x28 with the centre of mass at MNIST's (14, 14).
Fashion-MNIST items are light on black, their longer side 28 px: `prepare_fashion`
inverts, removes the background level, crops, scales and centres.

Every step is integer arithmetic or float64 arithmetic that the report's drawing pad
repeats in JavaScript (digits_jax/assets/drawing_pad.js), so both give the same pixels
(within one grey level where a sum lands on a rounding boundary). For that reason the
resampling is this module's own area averaging rather than Pillow's filters. The
photo-only steps (evening out the light, the paper-noise floor, dropping specks and
marks that run off the picture) change nothing on an evenly lit, noise-free drawing
framed alone, which is what the pad's canvas holds, so the pad has no copy of them.
"""

import functools

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError
from scipy import ndimage

SIZE = 28  # Output side.
MAX_SIDE = 2000  # Larger photos are reduced first (see read_image).
DIGIT_BOX = 20  # MNIST: the longer side of a digit's box.
CENTRE = 14.0  # MNIST: mean centre of mass of the test images (row and column index).
INK_CONTRAST = 40  # Grey levels between paper and ink below which an image is blank.
FASHION_NOISE = 16  # Grey levels above the background still counted as background.
# Stroke width in the 20-px box: thinner than MIN_STROKE (about MNIST's 5th percentile)
# is thickened to TARGET_STROKE (MNIST's median), as measured by `stroke_width`.
MIN_STROKE, TARGET_STROKE = 1.6, 2.5
# Uneven light (see `paper_light`, `even_out_light`): windows of 1/LIGHT_WINDOW of the
# longer side, a LIGHT_BLUR box blur; evened out only where the light varies by
# LIGHT_SPREAD grey levels or more, after which paper reads PAPER_LEVEL.
LIGHT_WINDOW, LIGHT_BLUR, LIGHT_SPREAD, PAPER_LEVEL = 3, 3, 24, 240
LIGHT_PROXY = 200  # Light is estimated on block means of at most this many pixels a side.
LIGHT_PERCENTILE = 75  # The paper's level in a window where ink covers under a quarter.
INK_TAIL = 0.1  # Percent of the pixels at either extreme compared by `ink_is_dark`.
SPECK = 0.05  # On photos of paper, marks under this share of the largest one are dropped.
NOISE_SIGMAS = 4  # Ink starts this many standard deviations of paper noise above the paper.


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


def running_max(values, size, axis):
  """Max over a centred window of `size` (odd) along `axis`, same shape, edges repeated.

  van Herk / Gil-Werman: prefix and suffix maxima within blocks of `size`, so the cost is
  a few passes whatever the window (a 600-px window on a 2000-px photo included).
  """
  x = np.moveaxis(np.asarray(values, np.float64), axis, -1)
  n, r = x.shape[-1], size // 2
  extra = -(n + 2 * r) % size
  padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(r, r + extra)], mode='edge')
  blocks = padded.reshape(*x.shape[:-1], -1, size)
  prefix = np.maximum.accumulate(blocks, axis=-1).reshape(padded.shape)
  suffix = np.maximum.accumulate(blocks[..., ::-1], axis=-1)[..., ::-1].reshape(padded.shape)
  return np.moveaxis(np.maximum(suffix[..., :n], prefix[..., size - 1:size - 1 + n]), -1, axis)


def box_blur(values, size):
  """Mean over a centred `size` x `size` square (odd size), same shape, edges repeated."""
  out = np.asarray(values, np.float64)
  r = size // 2
  for axis in (0, 1):
    padded = np.pad(out, [(r + 1, r) if a == axis else (0, 0) for a in (0, 1)], mode='edge')
    sums = np.cumsum(padded, axis=axis)
    out = (np.take(sums, np.arange(size, sums.shape[axis]), axis=axis)
           - np.take(sums, np.arange(sums.shape[axis] - size), axis=axis)) / size
  return out


def block_mean(values, factor):
  """`values` [H, W] averaged over `factor` x `factor` blocks (edges repeated to fit)."""
  h, w = values.shape
  padded = np.pad(values, [(0, -h % factor), (0, -w % factor)], mode='edge')
  return padded.reshape(padded.shape[0] // factor, factor, -1, factor).mean(axis=(1, 3))


def upsample(values, factor, shape):
  """`values` (block means of `factor`) bilinearly back to full size, cropped to `shape`."""
  image = Image.fromarray(values.astype(np.float32), 'F')
  size = (values.shape[1] * factor, values.shape[0] * factor)
  full = np.asarray(image.resize(size, Image.BILINEAR), np.float64)
  return full[:shape[0], :shape[1]]


def closing(values, size, sign=1):
  """Grey closing by a `size` square (sign -1: opening): removes dark (light) marks narrower.

  A max filter then a min filter, each separable; shapes wider than the window (the
  light's gradients and shadows) are kept.
  """
  out = values
  for s in (sign, -sign):
    for axis in (0, 1):
      out = s * running_max(s * out, size, axis)
  return out


def paper_light(grey):
  """(closing, light): the paper's brightness under each pixel of a light-paper photo.

  The lower of two estimates, each blind to strokes in its own way: a grey closing with a
  window wider than any pen stroke (1/LIGHT_WINDOW of the longer side) fills the dark
  strokes with the paper around them and keeps straight shadow edges sharp, but also fills
  the light's valleys (a dim corner); the LIGHT_PERCENTILE-th percentile of the same
  window follows valleys, ink being a minority of any window. Light varies slowly, so
  both run on block means (at most LIGHT_PROXY and LIGHT_PROXY / 4 px a side, so a
  2000-px photo takes milliseconds); a box blur stops the closing picking paper grains.

  Returns:
    float64 [H, W] twice: the closing alone (flat on evenly lit paper, however dense the
    ink) and the lower of the two estimates.
  """
  estimates = []
  for side, closing_not_percentile in ((LIGHT_PROXY, True), (LIGHT_PROXY // 4, False)):
    factor = max(1, -(-max(grey.shape) // side))
    proxy = block_mean(grey.astype(np.float64), factor)
    size = max(max(proxy.shape) // LIGHT_WINDOW, 3) | 1
    if closing_not_percentile:
      light = closing(box_blur(proxy, LIGHT_BLUR), size)
    else:
      windows = np.lib.stride_tricks.sliding_window_view(
          np.pad(proxy, size // 2, mode='edge'), (size, size))
      light = np.percentile(windows, LIGHT_PERCENTILE, axis=(-2, -1))
    estimates.append(upsample(light, factor, grey.shape) if factor > 1 else light)
  return estimates[0], np.minimum(*estimates)


def ink_is_dark(grey):
  """Whether the strokes of uint8 `grey` are darker than its paper.

  A light frame (median above 127) is paper under dark ink, as always. A dark frame is
  either a black background under light strokes or dim paper (grey, in a shadow, at the
  dark end of a gradient) under dark ink: the ink is then the extreme (the darkest or the
  brightest INK_TAIL percent of the picture) farther from the frame's brightest part.
  """
  frame = border(grey)
  if lower_median(frame) > 127:
    return True
  paper = percentile(frame, 99)
  return paper - percentile(grey, INK_TAIL) > percentile(grey, 100 - INK_TAIL) - paper


def even_out_light(grey):
  """(`grey` with uneven light divided out, whether it was uneven), for light paper.

  A photo's paper is lit unevenly (a gradient, a shadow, grey paper lit from one side),
  and ink on the darker paper can be lighter than the paper elsewhere, so no single
  threshold separates them. Dividing by the paper's estimated brightness (`paper_light`)
  turns every pixel into its reflectance relative to the paper, which is what a scanner
  would see. Evenly lit paper is returned as it is.
  """
  closed, light = paper_light(grey)
  if closed.max() - closed.min() < LIGHT_SPREAD:
    return grey, False
  ratio = np.clip(grey / np.maximum(light, 1.0), 0.0, 1.0)
  return to_uint8(ratio * (PAPER_LEVEL / 255.0)), True


def without_stray_marks(strong, evened):
  """`strong` (bool ink mask of a photo) without specks and, if `evened`, edge marks.

  Grains of paper are specks (under SPECK of the largest mark's area). After evening out
  the light, what is left of a shadow's edge or the page's edge runs off the picture; a
  digit framed alone does neither. All marks are kept if none would be.
  """
  labels, count = ndimage.label(strong, structure=np.ones((3, 3)))
  if count <= 1:
    return strong
  sizes = np.bincount(labels.ravel(), minlength=count + 1)
  keep = sizes >= SPECK * sizes[1:].max()
  keep[0] = False
  if evened:
    keep[np.unique(border(labels))] = False
  return keep[labels] if keep.any() else strong


def percentile(values, q):
  """The q-th percentile (0..100) of uint8 values, from their histogram (lower value)."""
  counts = np.cumsum(np.bincount(np.ravel(values), minlength=256))
  return int(np.searchsorted(counts, max(1, int(np.ceil(q / 100.0 * values.size)))))


def paper_noise(paper):
  """The standard deviation of uint8 paper pixels, robustly: half their 16-84% range."""
  return (percentile(paper, 84.1) - percentile(paper, 15.9)) / 2.0 if paper.size else 0.0


def ink_of_paper(grey, marks=None):
  """The ink of a grey image of light strokes on dark paper.

  `marks`, if given, filters the strokes found (a bool mask to a bool mask) before the
  ink's level is measured, so that stray marks neither count as ink nor dilute it.

  Returns:
    (ink, strong): float64 [H, W] in [0, 1], paper 0 and the ink's median level 1; and
    bool [H, W], the pixels above Otsu's threshold (the strokes without their soft edges,
    which is where the ink lies for sure).

  Raises:
    ImageError: the ink differs from the paper by fewer than INK_CONTRAST grey levels.
  """
  threshold = otsu_threshold(grey)
  if threshold is None:
    raise ImageError('blank: the image is one flat colour, no ink was found')
  found = grey > threshold
  strong = found if marks is None else marks(found)
  level, paper = lower_median(grey[strong]), lower_median(grey)
  if level - paper < INK_CONTRAST:
    raise ImageError(f'blank: no ink was found (the darkest marks differ from the paper by '
                     f'{level - paper} grey levels, fewer than {INK_CONTRAST})')
  # Halfway keeps the strokes' soft edges; grainy paper (a photo's noise) needs more.
  low = max((paper + threshold) / 2, paper + NOISE_SIGMAS * paper_noise(grey[~found]))
  low = min(low, (threshold + level) / 2)  # Never above the strokes themselves.
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
  grey, evened = to_grey(pixels), False
  dark_ink = ink_is_dark(grey)
  if dark_ink:  # Dark ink on paper, the usual photo: even out the light, invert.
    grey, evened = even_out_light(grey)
    grey = 255 - grey
  marks = functools.partial(without_stray_marks, evened=evened) if dark_ink else None
  ink, strong = ink_of_paper(grey, marks)
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
