"""The building blocks of the report pages (report.html): escaped HTML parts, sections
with their navigation, tables, embedded PNG figures, and the lab's goal paragraph.

A page is a list of `Section` values; `page` makes the navigation from their titles.
Figures are embedded as base64 data URIs, so a page has no external resources.
"""

import base64
import dataclasses
import html
import os
import re

from digits_jax import input_pipeline

REPORT = 'report.html'  # A run's or a sweep's page, in its folder.
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PNG_END = b'IEND\xaeB`\x82'

CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0;
 background:#f4f5f7;color:#222;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px;background:#fff;
 box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{margin:0 0 4px;font-size:1.7em}
h2{margin:32px 0 10px;padding-bottom:4px;border-bottom:2px solid #e3e6ea;font-size:1.3em}
h3{margin:18px 0 6px;font-size:1.05em}
.sub{color:#666;margin:0 0 12px}
nav{font-size:.9em;margin:8px 0 0}nav a{margin-right:12px;color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;margin:6px 0 10px;font-size:.9em}
th,td{border:1px solid #dde1e6;padding:3px 8px;text-align:right;vertical-align:middle}
th{background:#f0f2f5;white-space:nowrap}.tw{max-width:100%;overflow-x:auto}
td{white-space:nowrap}td.l{white-space:normal;min-width:8em}td.l,th.l{text-align:left}
pre{background:#f6f8fa;border:1px solid #e3e6ea;padding:10px;overflow-x:auto;font-size:.85em}
img{max-width:100%;height:auto;display:block;margin:8px 0}
.kpi{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0}
.kpi div{background:#f0f5fb;border-radius:6px;padding:8px 14px;min-width:120px}
.kpi b{display:block;font-size:1.35em}.kpi span{color:#555;font-size:.85em}
.bar{position:relative;width:60px;height:12px;background:#eef0f3;display:inline-block;
 vertical-align:middle;margin-right:4px}td.p{white-space:nowrap}
.bar span{position:absolute;left:0;top:0;bottom:0;background:#8fb8de}
td.pred .bar span{background:#2a9d8f}td.wrong .bar span{background:#e63946}
td.pred{font-weight:bold}.bad{color:#c62828}.good{color:#2e7d32}
.row{display:flex;flex-wrap:wrap;gap:12px 36px;align-items:flex-start}
.row>*{min-width:0}.row img{max-width:480px}
ul.conc li{margin:4px 0}footer{color:#888;font-size:.8em;margin-top:32px}
"""



class Raw(str):
  """HTML that is inserted as is (everything else is escaped)."""


def _esc(value):
  """`value` as HTML text, unless it is Raw HTML already."""
  return value if isinstance(value, Raw) else html.escape(str(value))


def _slug(title):
  """A section's anchor: 'Per-class accuracy' -> 'per-class-accuracy'."""
  return re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-')


def _paragraphs(parts):
  """Strings (escaped, as paragraphs) and Raw HTML, joined."""
  return ''.join(p if isinstance(p, Raw) else f'<p>{html.escape(p)}</p>' for p in parts)


@dataclasses.dataclass(frozen=True)
class Section:
  """An <h2> section of a page: its title and its body (HTML)."""
  title: str
  body: str

  def html(self):
    return (f'<section id="{_slug(self.title)}"><h2>{html.escape(self.title)}</h2>'
            f'{self.body}</section>')


def section(title, *parts):
  """A Section; `parts` are strings (escaped, as paragraphs) or Raw HTML."""
  return Section(title, _paragraphs(parts))


def is_png(path):
  """Whether `path` holds a complete PNG file (signature and end chunk)."""
  if not os.path.isfile(path) or os.path.getsize(path) < len(PNG_SIGNATURE) + len(PNG_END):
    return False
  with open(path, 'rb') as f:
    data = f.read()
  return data.startswith(PNG_SIGNATURE) and data.rstrip(b'\0').endswith(PNG_END)


def img(path, alt):
  """An <img> whose source is the PNG file embedded as a data URI."""
  with open(path, 'rb') as f:
    data = base64.b64encode(f.read()).decode('ascii')
  return Raw(f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">')


def table(header, rows, left=()):
  """An HTML table; columns whose index is in `left` are left-aligned."""
  cls = lambda i: ' class="l"' if i in left else ''
  head = ''.join(f'<th{cls(i)}>{_esc(h)}</th>' for i, h in enumerate(header))
  body = ''.join('<tr>' + ''.join(f'<td{cls(i)}>{_esc(c)}</td>' for i, c in enumerate(r))
                 + '</tr>' for r in rows)
  return Raw(f'<div class="tw"><table><tr>{head}</tr>{body}</table></div>')


def row(*parts):
  """Parts side by side (wrapping on narrow screens)."""
  return Raw('<div class="row">' + ''.join(f'<div>{_esc(p)}</div>' for p in parts) + '</div>')


def page(title, subtitle, sections, footer=''):
  """The whole HTML document: title, navigation to every section's title, the sections."""
  nav = ''.join(f'<a href="#{_slug(s.title)}">{html.escape(s.title)}</a>' for s in sections)
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<meta name="viewport" content="width=device-width, initial-scale=1">'
          f'<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>'
          f'<h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>'
          f'<nav>{nav}</nav>{"".join(s.html() for s in sections)}'
          f'<footer>{html.escape(footer)}</footer></main></body></html>\n')


def goal(datasets, optimizer=None, network=None):
  """One paragraph on what the lab does, on the datasets named (registry names), with which
  network (`network`, e.g. run_report.network_words; None: each run's own, in the
  comparison table) and optimizer (`optimizers.describe`; None: each run's)."""
  records = [input_pipeline.DATASETS.get(d) for d in datasets]
  parts = [(r.subject, r.title) if r else ('images', d) for r, d in zip(records, datasets)]
  if len(parts) == 1:
    what = f'{parts[0][0]} from {parts[0][1]}'
  else:
    what = ' and of '.join(f'{subject} ({title})' for subject, title in parts)
  optimizer = optimizer or "the one each run's config names"
  network = network or "neural networks (each run's is in the comparison table)"
  return (f'The lab trains {network} to recognise 28×28 grey-level images of '
          f'{what} '
          '(60,000 training and 10,000 test images, 10 classes). Inputs are scaled to [0, 1]; '
          f'the loss is categorical cross-entropy and the optimizer {optimizer}. The last '
          'fraction of the training set is held out for validation, as Keras does. After '
          'training, the network is evaluated on the test set, chosen test images are '
          'recognised with their 10 output probabilities, and the misclassified test images '
          'are counted and shown.')


def conclusions_section(findings):
  """The findings (sentences) as a list."""
  return section('Conclusions', Raw('<ul class="conc">' + ''.join(
      f'<li>{html.escape(c)}</li>' for c in findings) + '</ul>'))
