r"""report.html: a self-contained page per run, and one comparing the runs of a sweep.

  python -m digits_jax.report --workdir=runs/default_mnist   # a run: writes its report.html
  python -m digits_jax.report --workdir=runs/sweep           # a sweep: compares its runs

Everything comes from the saved result files (config.json, model_summary.txt, history.csv,
predictions.npz, results.json and the figures). A missing or unreadable figure is redrawn
first (the image grids need the dataset; if it cannot be loaded, a placeholder says why),
so the page never shows a broken image. Figures are embedded as base64 data URIs: the page
has no external resources and opens offline, mailed or archived as a single file.
"""

import base64
import html
import json
import math
import os
import re
import sys

from absl import app
from absl import flags

from digits_jax import figures
from digits_jax import results as results_lib
from digits_jax import significance
from digits_jax import stats

REPORT = 'report.html'
# The <h2> headings of a run's report, in order (tests and links rely on these texts).
RUN_SECTIONS = ('Goal', 'Results', 'Configuration', 'Model summary', 'Training samples',
                'Accuracy and loss curves', 'Recognized test images',
                'Misclassified test images', 'Confusion matrix', 'Per-class accuracy',
                'Conclusions')
SWEEP_SECTIONS = ('Goal', 'Comparison table', 'Mean test accuracy over seeds', 'Significance',
                  'Test accuracy vs parameter count', 'Validation accuracy curves',
                  'Conclusions')
VARY_SECTION = 'Effect of the varied fields'  # After 'Significance', in a --vary sweep.
DATASET_TITLES = {'mnist': 'MNIST', 'fashion_mnist': 'Fashion-MNIST'}
SUBJECTS = {'mnist': 'handwritten digits', 'fashion_mnist': 'clothing items'}
# A cell's test accuracy over its seeds: n, mean, std, the 95% interval, min and max; then
# replica 0's own numbers (the config's seed: test_accuracy, test_loss, ...) and seconds.
# `run` is the run's folder name; `differs` the config fields that set it apart from the
# other runs of its variant name (e.g. two `default` runs at other learning rates).
COMPARISON_FIELDS = ('run', 'variant', 'differs', 'dataset', 'hidden_sizes', 'params',
                     'epochs', 'batch',
                     'validation_split', 'n', 'test_accuracy_mean', 'test_accuracy_std',
                     'test_accuracy_ci95_low', 'test_accuracy_ci95_high', 'test_accuracy_min',
                     'test_accuracy_max', 'best_val_accuracy', 'final_val_accuracy',
                     'test_accuracy', 'test_loss', 'misclassified', 'train_seconds',
                     'train_seconds_per_seed')
# Short column titles for the HTML table, which shows these fields only (the CSV and
# Markdown keep every field, with its name).
COMPARISON_TITLES = {'variant': 'run', 'differs': 'differs', 'hidden_sizes': 'hidden',
                     'params': 'params',
                     'epochs': 'epochs', 'batch': 'batch', 'validation_split': 'val. split',
                     'n': 'seeds', 'test_accuracy_mean': 'mean test acc.',
                     'test_accuracy_std': 'std', 'test_accuracy_ci95': '95% interval',
                     'test_accuracy_range': 'min - max', 'train_seconds': 'train s'}
SWEEP_FILES = {'csv': 'comparison.csv', 'md': 'comparison.md',
               'significance': 'significance.csv', 'info': 'sweep.json',
               'means': 'sweep_mean_accuracy.png', 'vary': 'sweep_vary.png',
               'params': 'sweep_accuracy_vs_params.png', 'curves': 'sweep_val_accuracy.png'}
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
th{background:#f0f2f5;white-space:nowrap}td.l,th.l{text-align:left}
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
  return Raw(f'<table><tr>{head}</tr>{body}</table>')


def row(*parts):
  """Parts side by side (wrapping on narrow screens)."""
  return Raw('<div class="row">' + ''.join(f'<div>{_esc(p)}</div>' for p in parts) + '</div>')


def section(title, *parts):
  """An <h2> section; `parts` are strings (escaped, as paragraphs) or Raw HTML."""
  body = ''.join(p if isinstance(p, Raw) else f'<p>{html.escape(p)}</p>' for p in parts)
  return Raw(f'<section id="{_slug(title)}"><h2>{html.escape(title)}</h2>{body}</section>')


def page(title, subtitle, sections, footer=''):
  """The whole HTML document: title, a table of contents and the sections."""
  nav = ''.join(f'<a href="#{_slug(html.unescape(t))}">{t}</a>'
                for t in re.findall(r'<h2>(.*?)</h2>', ''.join(sections)))
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<meta name="viewport" content="width=device-width, initial-scale=1">'
          f'<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>'
          f'<h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>'
          f'<nav>{nav}</nav>{"".join(sections)}<footer>{html.escape(footer)}</footer>'
          '</main></body></html>\n')


def pct(x, digits=2):
  """0.97791 -> '97.79%'; None or NaN -> 'n/a'."""
  return 'n/a' if x is None or math.isnan(x) else f'{100 * x:.{digits}f}%'


def _goal(dataset=None):
  """One paragraph on what the lab does (on one dataset, or on both when None)."""
  if dataset is None:
    what = ('handwritten digits (MNIST, Task 1) and of clothing items (Fashion-MNIST, '
            'Task 2)')
  else:
    what = f'{SUBJECTS.get(dataset, "images")} from {DATASET_TITLES.get(dataset, dataset)}'
  return ('The lab trains a fully connected network (Flatten 28×28 → Dense+ReLU hidden '
          'layer(s) → Dense(10) with softmax) to recognise 28×28 grey-level images of '
          f'{what} '
          '(60,000 training and 10,000 test images, 10 classes). Inputs are scaled to [0, 1]; '
          'the loss is categorical cross-entropy and the optimizer Adam. The last fraction of '
          'the training set is held out for validation, as Keras does. After training, the '
          'network is evaluated on the test set, chosen test images are recognised with their '
          '10 output probabilities, and the misclassified test images are counted and shown.')


# ----------------------------------------------------------------------------- run report


def load_run(workdir):
  """The saved results of a finished run, as a dict of its parts."""
  path = lambda name: os.path.join(workdir, results_lib.FILES[name])
  if not os.path.exists(path('results')) or not os.path.exists(path('predictions')):
    raise FileNotFoundError(f'{workdir} holds no finished run (results.json and '
                            'predictions.npz are written at the end of training).')
  summary = ''
  if os.path.exists(path('summary')):
    with open(path('summary')) as f:
      summary = f.read()
  config = results_lib.read_json(path('config')) if os.path.exists(path('config')) else {}
  history = results_lib.read_history(workdir) if os.path.exists(path('history')) else []
  return {'workdir': workdir, 'res': results_lib.read_json(path('results')),
          'config': config, 'summary': summary, 'history': history,
          'preds': results_lib.read_predictions(workdir)}


def _redraw_image_grids(run, keys):
  """Redraws the figures that need the dataset's images, or placeholders saying why not."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from digits_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  path = lambda key: os.path.join(run['workdir'], figures.FILES[key])
  config, res, preds = run['config'], run['res'], run['preds']
  names = res['class_names']
  try:
    data = input_pipeline.load(ml_collections.ConfigDict(config))
  except Exception as e:  # pylint: disable=broad-except
    for key in keys:  # Any failure to load the data must still leave a valid image.
      figures.placeholder(f'{key}.png could not be redrawn: the dataset did not load '
                          f'({type(e).__name__}: {e})'[:300], path(key))
    return
  figures.draw_image_grids(run['workdir'], config, res, preds, data.train_images,
                           data.train_labels, data.test_images, names, keys)


def ensure_figures(run):
  """Redraws every missing or broken figure of a run; returns {key: path} of valid ones."""
  workdir, res, preds = run['workdir'], run['res'], run['preds']
  path = lambda key: os.path.join(workdir, figures.FILES[key])
  if not is_png(path('curves')):
    figures.curves(run['history'], path('curves'))
  if not is_png(path('confusion')):
    figures.confusion(preds['labels'], preds['predicted'], res['class_names'],
                      path('confusion'))
  wanted = ['samples', 'misclassified'] + (['recognized'] if res['recognized'] else [])
  missing = [key for key in wanted if not is_png(path(key))]
  if missing:
    _redraw_image_grids(run, missing)
  return {key: path(key) for key in figures.FILES if is_png(path(key))}


def _probability_cell(p, rec, k):
  """A probability with a bar; the predicted class bold (red if wrong)."""
  cls = 'p'
  if k == rec['predicted']:
    cls += ' pred' if rec['predicted'] == rec['true'] else ' pred wrong'
  return (f'<td class="{cls}"><span class="bar"><span style="width:{100 * p:.1f}%"></span>'
          f'</span>{100 * p:.2f}%</td>')


def recognized_table(res):
  """The chosen test images' 10 output probabilities: one column per image, one row per class."""
  recs, names = res['recognized'], res['class_names']
  head = ''.join(f'<th>test #{r["index"]}</th>' for r in recs)
  verdict = lambda r: ('<span class="good">right</span>' if r['predicted'] == r['true']
                       else '<span class="bad">wrong</span>')
  tr = lambda label, cells: f'<tr><td class="l">{html.escape(label)}</td>{"".join(cells)}</tr>'
  rows = [tr('true class', (f'<td>{html.escape(r["true_name"])}</td>' for r in recs)),
          tr('predicted (argmax)', (f'<td>{html.escape(r["predicted_name"])} ({verdict(r)})'
                                    '</td>' for r in recs))]
  rows += [tr(f'P({name})', (_probability_cell(r['probabilities'][k], r, k) for r in recs))
           for k, name in enumerate(names)]
  return Raw(f'<table><tr><th class="l">output</th>{head}</tr>{"".join(rows)}</table>')


def per_class_table(cm, names):
  """Per class: test images, correct, accuracy and the class most often predicted instead."""
  named = any(n != str(c) for c, n in enumerate(names))  # MNIST's names are the digits.
  rows = []
  for c, name in enumerate(names):
    total = int(cm[c].sum())
    off = [(int(cm[c, p]), p) for p in range(len(names)) if p != c]
    count, other = max(off) if off else (0, c)
    rows.append((c,) + ((name,) if named else ()) + (
        f'{total:,}', f'{int(cm[c, c]):,}', pct(cm[c, c] / total) if total else 'n/a',
        f'{names[other]} ({count})' if count else '-'))
  header = ('class',) + (('name',) if named else ()) + (
      'test images', 'correct', 'accuracy', 'most often mistaken for (times)')
  return table(header, rows, left=(1, 5) if named else (4,))


def confused_pairs(cm, names, top=3):
  """The `top` largest off-diagonal cells: (count, true name, predicted name, share of true)."""
  cells = [(int(cm[t, p]), t, p) for t in range(len(names)) for p in range(len(names))
           if t != p and cm[t, p] > 0]
  cells.sort(key=lambda x: (-x[0], x[1], x[2]))
  return [(n, names[t], names[p], n / max(int(cm[t].sum()), 1)) for n, t, p in cells[:top]]


def overfitting_start(history):
  """The epoch from which validation loss stays above its minimum for good (the epoch
  after its last lowest point), or None when it is lowest at the last epoch.

  Returns:
    (lowest record, first record after it, last record) or None.
  """
  lowest = min(history, key=lambda h: (h['val_loss'], -h['epoch']))  # The last minimum.
  after = [h for h in history if h['epoch'] > lowest['epoch']]
  return (lowest, after[0], history[-1]) if after else None


def overfitting_sentence(history):
  """The overfitting conclusion in one sentence (history: epochs with validation)."""
  found = overfitting_start(history)
  if found is None:
    return (f'No sign of overfitting: validation loss was lowest at the last epoch, '
            f'{history[-1]["epoch"]} ({history[-1]["val_loss"]:.4f}).')
  lowest, first, last = found
  rise = last['val_loss'] - lowest['val_loss']
  train = (f', while training loss fell from {lowest["loss"]:.4f} to {last["loss"]:.4f}'
           if last['loss'] < lowest['loss'] else '')
  return (f'Overfitting from epoch {first["epoch"]}: validation loss was lowest at epoch '
          f'{lowest["epoch"]} ({lowest["val_loss"]:.4f}) and stayed above it from then on, '
          f'ending {rise:.4f} higher (+{rise / max(lowest["val_loss"], 1e-12):.0%}) at epoch '
          f'{last["epoch"]}{train}.')


def _history_conclusions(history):
  """Best epoch and the overfitting check, from the per-epoch log."""
  valid = [h for h in history if not math.isnan(h['val_accuracy'])]
  if not valid:
    return ['No validation split was held out (validation_split=0), so there is no best '
            'epoch or overfitting check.']
  best = max(valid, key=lambda h: h['val_accuracy'])
  out = [f'Best epoch: epoch {best["epoch"]} of {len(history)} reached the highest validation '
         f'accuracy, {pct(best["val_accuracy"])} (validation loss {best["val_loss"]:.4f}).']
  if len(valid) < 2:
    return out + ['Only one epoch was trained, so there is no overfitting check.']
  return out + [overfitting_sentence(valid)]


def conclusions(run, cm):
  """Plain-text findings computed from the run's data (see RUN_SECTIONS' last section)."""
  res, history = run['res'], run['history']
  out = _history_conclusions(history)
  pairs = confused_pairs(cm, res['class_names'])
  if pairs:
    out.append('Most confused classes: ' + '; '.join(
        f'true {t} predicted as {p}: {n} time{"s" if n != 1 else ""} ({pct(share, 1)} of class {t})'
        for n, t, p, share in pairs) + '.')
  else:
    out.append('No test image was misclassified.')
  final = history[-1]['val_accuracy'] if history else math.nan
  if math.isnan(final):
    out.append(f'Test accuracy: {pct(res["test_accuracy"])} (no validation accuracy to '
               'compare with).')
  else:
    diff = 100 * (res['test_accuracy'] - final)
    verdict = ('the validation split predicted the test accuracy well' if abs(diff) <= 1 else
               'the validation split is not a close estimate of the test accuracy')
    out.append(f'Test accuracy {pct(res["test_accuracy"])} vs final validation accuracy '
               f'{pct(final)}: {diff:+.2f} percentage points; {verdict}.')
  return out


def _results_section(run):
  """Headline numbers as tiles, then where and with what the run was made."""
  res = run['res']
  timings = res.get('timings', {})
  tiles = [(pct(res['test_accuracy']), 'test accuracy'),
           (f'{res["test_loss"]:.4f}', 'test loss'),
           (f'{res["misclassified_count"]:,} / {res["num_test"]:,}', 'misclassified'),
           (pct(res.get('best_val_accuracy')),
            f'best val. accuracy (epoch {res.get("best_epoch")})'),
           (f'{res["num_params"]:,}', 'parameters'),
           (f'{timings.get("train_seconds", math.nan):.1f} s',
            f'training, {res["num_epochs"]} epochs')]
  kpi = ''.join(f'<div><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>'
                for v, k in tiles)
  dev = res.get('devices', {})
  where = (f'Data: {res.get("data_source", "?")}: {res["num_train"]:,} training, '
           f'{res["num_val"]:,} validation, {res["num_test"]:,} test images. Devices: '
           f'{dev.get("count", "?")} x {dev.get("kind", "?")} ({dev.get("platform", "?")}). '
           f'Finished {res.get("finished_at", "?")}.')
  return section('Results', Raw(f'<div class="kpi">{kpi}</div>'), where)


def _config_section(config):
  """config.json as a four-column (field, value, field, value) table."""
  items = [(k, v if not isinstance(v, (list, tuple)) else tuple(v)) for k, v in config.items()]
  half = -(-len(items) // 2)
  left, right = items[:half], items[half:] + [('', '')] * (2 * half - len(items))
  rows = [(a, b, c, d) for (a, b), (c, d) in zip(left, right)]
  return section('Configuration', table(('field', 'value', 'field', 'value'), rows,
                                        left=(0, 1, 2, 3)))


def _figure_or_note(figs, key, alt, note):
  """The figure if the run has it, else a note."""
  return img(figs[key], alt) if key in figs else note


def _image_sections(run, figs, cm):
  """The sections built around figures: samples to per-class accuracy."""
  res, config = run['res'], run['config']
  names = res['class_names']
  wrong = results_lib.misclassified(run['preds']['probabilities'], run['preds']['labels'])
  shown = min(len(wrong), config.get('num_misclassified_show', len(wrong)))
  recognized = (section('Recognized test images', row(_figure_or_note(
      figs, 'recognized', 'chosen test images and their probabilities', ''),
      recognized_table(res))) if res['recognized'] else section(
          'Recognized test images', 'No test images were chosen (config.test_indices is empty).'))
  return [
      section('Training samples', _figure_or_note(figs, 'samples', 'first training images',
                                                  'The sample grid is missing.')),
      section('Accuracy and loss curves', img(figs['curves'], 'accuracy and loss per epoch')),
      recognized,
      section('Misclassified test images',
              f'{len(wrong):,} of {res["num_test"]:,} test images '
              f'({pct(len(wrong) / max(res["num_test"], 1))}) were misclassified; the first '
              f'{shown} are shown with their true and predicted classes.',
              _figure_or_note(figs, 'misclassified', 'misclassified test images', '')),
      section('Confusion matrix', img(figs['confusion'], 'confusion matrix'),
              'Rows: the true class; columns: the predicted one. Colour on a log scale, so '
              'that the few errors show beside the diagonal.'),
      section('Per-class accuracy', per_class_table(cm, names)),
  ]


def write_run_report(workdir):
  """Writes workdir/report.html from a finished run's files (redrawing missing figures).

  Args:
    workdir: the folder of a finished run (holding results.json and predictions.npz).

  Returns:
    The path of report.html.
  """
  run = load_run(workdir)
  res = run['res']
  figs = ensure_figures(run)
  cm = figures.confusion_matrix(run['preds']['labels'], run['preds']['predicted'],
                                len(res['class_names']))
  dataset = DATASET_TITLES.get(res['dataset'], res['dataset'])
  sections = [section('Goal', _goal(res['dataset'])), _results_section(run),
              _config_section(run['config']),
              section('Model summary', Raw(f'<pre>{html.escape(run["summary"])}</pre>'))]
  sections += _image_sections(run, figs, cm)
  sections.append(section('Conclusions', Raw('<ul class="conc">' + ''.join(
      f'<li>{html.escape(c)}</li>' for c in conclusions(run, cm)) + '</ul>')))
  versions = ', '.join(f'{k} {v}' for k, v in res.get('versions', {}).items())
  text = page(f'{res["name"]} on {dataset}', f'digits_jax run report - {os.path.abspath(workdir)}',
              sections, f'Written by digits_jax.report from the files in this folder. {versions}')
  path = os.path.join(workdir, REPORT)
  results_lib.write_text(path, text)
  return path


# --------------------------------------------------------------------------- sweep report


def variant_key(name):
  """Sort key: 'default' first, then v1, v2, ..., v10, then other names."""
  m = re.fullmatch(r'v(\d+)', name)
  return (0, 0, '') if name == 'default' else (1, int(m.group(1)), '') if m else (2, 0, name)


def dataset_key(dataset):
  """Sort key: MNIST, then Fashion-MNIST, then others by name."""
  order = list(DATASET_TITLES)
  return (order.index(dataset) if dataset in order else len(order), dataset)


def find_runs(sweep_dir):
  """The finished runs directly under `sweep_dir`: {subfolder: results.json content}.

  Folders a run was moved aside to (`*.old-<time>`, see workdir.prepare_workdir) are left out.
  """
  runs = {}
  for name in sorted(os.listdir(sweep_dir)) if os.path.isdir(sweep_dir) else []:
    path = os.path.join(sweep_dir, name, results_lib.FILES['results'])
    if '.old-' not in name and os.path.isfile(path):
      runs[os.path.join(sweep_dir, name)] = results_lib.read_json(path)
  return dict(sorted(runs.items(), key=lambda kv: (
      dataset_key(kv[1]['dataset']), variant_key(kv[1]['name']), kv[0])))


def comparison_row(res):
  """One run's row of comparison.csv, every value taken from its results.json.

  The spread over seeds comes from per_seed.test_accuracy (one value before num_seeds).
  """
  acc = stats.summarize(significance.seed_values(res))
  ci = acc['ci95'] or [None, None]
  return {'variant': res['name'], 'dataset': res['dataset'],
          'hidden_sizes': 'x'.join(str(s) for s in res['hidden_sizes']),
          'params': res['num_params'], 'epochs': res['num_epochs'], 'batch': res['batch_size'],
          'validation_split': res['validation_split'], 'n': acc['n'],
          'test_accuracy_mean': acc['mean'], 'test_accuracy_std': acc['std'],
          'test_accuracy_ci95_low': ci[0], 'test_accuracy_ci95_high': ci[1],
          'test_accuracy_min': acc['min'], 'test_accuracy_max': acc['max'],
          'best_val_accuracy': res['best_val_accuracy'],
          'final_val_accuracy': res['final_val_accuracy'],
          'test_accuracy': res['test_accuracy'], 'test_loss': res['test_loss'],
          'misclassified': res['misclassified_count'],
          'train_seconds': res['timings']['train_seconds'],
          'train_seconds_per_seed': res['timings']['train_seconds'] / acc['n']}


def _formatted(row):
  """A comparison row for reading: accuracies in percent, losses and seconds rounded."""
  out = dict(row)
  for k in ('best_val_accuracy', 'final_val_accuracy', 'test_accuracy', 'test_accuracy_mean',
            'test_accuracy_ci95_low', 'test_accuracy_ci95_high', 'test_accuracy_min',
            'test_accuracy_max'):
    out[k] = pct(row[k]) if row[k] is not None else '-'
  out['test_accuracy_std'] = f'{100 * row["test_accuracy_std"]:.2f} pt'
  out['test_accuracy_ci95'] = (f'[{pct(row["test_accuracy_ci95_low"])}, '
                               f'{pct(row["test_accuracy_ci95_high"])}]'
                               if row['test_accuracy_ci95_low'] is not None else '-')
  out['test_accuracy_range'] = f'{out["test_accuracy_min"]} - {out["test_accuracy_max"]}'
  out['validation_split'] = f'{100 * row["validation_split"]:g}%'
  out['test_loss'] = f'{row["test_loss"]:.4f}'
  for k in ('train_seconds', 'train_seconds_per_seed'):
    out[k] = f'{row[k]:.1f}'
  out['params'] = f'{row["params"]:,}'
  return out


def differing_fields(runs):
  """{workdir: 'field=value, ...'}: for runs sharing a variant name on a dataset, the config
  fields whose values differ among them ('' for a run whose name is its own)."""
  groups = {}
  for workdir, res in runs.items():
    groups.setdefault((res['dataset'], res['name']), []).append(workdir)
  out = {w: '' for w in runs}
  for workdirs in groups.values():
    if len(workdirs) < 2:
      continue
    configs = {w: results_lib.read_json(os.path.join(w, results_lib.FILES['config']))
               for w in workdirs}
    fields = sorted({k for c in configs.values() for k in c})
    differ = [k for k in fields
              if len({json.dumps(c.get(k), sort_keys=True) for c in configs.values()}) > 1]
    for w, config in configs.items():
      out[w] = ', '.join(f'{k}={config.get(k)!r}'.replace("'", '') for k in differ)
  return out


def write_comparison(sweep_dir):
  """comparison.csv (exact values) and comparison.md (rounded) of every finished run.

  Returns:
    The comparison rows (dicts keyed by COMPARISON_FIELDS), in table order.
  """
  runs = find_runs(sweep_dir)
  differs = differing_fields(runs)
  rows = [dict(comparison_row(res), run=os.path.basename(w), differs=differs[w])
          for w, res in runs.items()]
  results_lib.write_csv(os.path.join(sweep_dir, SWEEP_FILES['csv']), COMPARISON_FIELDS, rows)
  lines = [f'# Sweep comparison: {os.path.abspath(sweep_dir)}', '',
           '| ' + ' | '.join(COMPARISON_FIELDS) + ' |',
           '|' + '|'.join('---' for _ in COMPARISON_FIELDS) + '|']
  lines += ['| ' + ' | '.join(str(_formatted(r)[k]) for k in COMPARISON_FIELDS) + ' |'
            for r in rows]
  results_lib.write_text(os.path.join(sweep_dir, SWEEP_FILES['md']), '\n'.join(lines) + '\n')
  return rows


def _sweep_tables(sweep_dir, runs):
  """One comparison table per dataset; variant names link to the runs' own reports."""
  parts = []
  names, differs = labels(runs), differing_fields(runs)
  titles = {k: t for k, t in COMPARISON_TITLES.items() if k != 'differs' or any(differs.values())}
  for dataset in sorted({r['dataset'] for r in runs.values()}, key=dataset_key):
    rows = []
    for workdir, res in runs.items():
      if res['dataset'] != dataset:
        continue
      row = dict(_formatted(comparison_row(res)), variant=names[workdir],
                 differs=differs[workdir])
      if os.path.exists(os.path.join(workdir, REPORT)):
        link = f'{os.path.basename(workdir)}/{REPORT}'
        row['variant'] = Raw(f'<a href="{html.escape(link)}">{html.escape(names[workdir])}</a>')
      rows.append([row[k] for k in titles])
    parts.append(Raw(f'<h3>{html.escape(DATASET_TITLES.get(dataset, dataset))}</h3>'))
    parts.append(table(list(titles.values()), rows, left=tuple(
        i for i, k in enumerate(titles) if k in ('variant', 'differs', 'hidden_sizes'))))
  return parts


def labels(runs):
  """A plot label per run: its variant, or its folder's name where a variant repeats."""
  key = lambda res: (res['dataset'], res['name'])
  counts = {}
  for res in runs.values():
    counts[key(res)] = counts.get(key(res), 0) + 1
  return {w: res['name'] if counts[key(res)] == 1 else os.path.basename(w)
          for w, res in runs.items()}


def write_sweep_info(sweep_dir, *, reference, vary):
  """sweep.json: what the cells are compared with, and the --vary fields and values."""
  results_lib.write_json(os.path.join(sweep_dir, SWEEP_FILES['info']),
                         {'reference': reference, 'vary': vary})


def read_sweep_info(sweep_dir):
  """sweep.json, or a plain sweep's (the lab's variants, compared with 'default')."""
  path = os.path.join(sweep_dir, SWEEP_FILES['info'])
  info = results_lib.read_json(path) if os.path.exists(path) else {}
  return {'reference': info.get('reference', 'default'), 'vary': info.get('vary', {})}


def sweep_cells(runs, names):
  """One cell per run: dataset, plot label, test accuracy per seed and train seconds."""
  return [{'dataset': res['dataset'], 'variant': names[w],
           'values': significance.seed_values(res),
           'train_seconds': res['timings']['train_seconds'], 'workdir': w}
          for w, res in runs.items()]


def write_significance(sweep_dir, cells, reference):
  """significance.csv: each cell against its dataset's reference cell; returns the rows."""
  rows = significance.compare(cells, reference)
  results_lib.write_csv(os.path.join(sweep_dir, SWEEP_FILES['significance']),
                        significance.FIELDS, rows)
  return rows


def _significance_tables(rows, reference_label):
  """One table per dataset: difference with its interval, p and Holm-adjusted p."""
  parts = []
  p = lambda x: '-' if x is None else ('<0.001' if x < 0.001 else f'{x:.3f}')
  for dataset in sorted({r['dataset'] for r in rows}, key=dataset_key):
    body = [[r['variant'], r['n'], pct(r['mean']), pct(r['reference_mean']),
             significance.interval(r), p(r['p_value']), p(r['p_holm']),
             'yes' if r['significant'] else 'no'] for r in rows if r['dataset'] == dataset]
    parts.append(Raw(f'<h3>{html.escape(DATASET_TITLES.get(dataset, dataset))}</h3>'))
    parts.append(table(['variant', 'seeds', 'mean', f'{reference_label}', 'difference [95%]',
                        'Welch p', 'Holm p', f'p_holm < {significance.ALPHA}'], body,
                       left=(0,)))
  return parts


def _vary_cells(cells, vary):
  """The cells of a --vary sweep with their x (first field) and series (the others)."""
  first, others = list(vary)[0], list(vary)[1:]
  out = []
  for cell in cells:
    config = results_lib.read_json(os.path.join(cell['workdir'], results_lib.FILES['config']))
    if isinstance(config.get(first), bool) or not isinstance(config.get(first), (int, float)):
      return []
    out.append(dict(cell, x=config[first],
                    series=','.join(f'{f}={config.get(f)}' for f in others)))
  return out


def write_sweep_report(sweep_dir):
  """Writes comparison.csv/md, significance.csv and report.html comparing a sweep's runs.

  Args:
    sweep_dir: a folder whose subfolders are runs (each with results.json when finished).

  Returns:
    The path of sweep_dir/report.html.
  """
  runs = find_runs(sweep_dir)
  info = read_sweep_info(sweep_dir)
  vary, reference = info['vary'], info['reference']
  reference_label = f'the base ({reference})' if vary else f'the {reference} config'
  rows = write_comparison(sweep_dir)
  names = labels(runs)
  if names and reference not in names.values():  # A folder of runs without the reference
    reference = reference_label = next(iter(names.values()))  # (e.g. two `default` runs).
  cells = sweep_cells(runs, names)
  sig = write_significance(sweep_dir, cells, reference)
  path = lambda key: os.path.join(sweep_dir, SWEEP_FILES[key])
  vary_cells = _vary_cells(cells, vary) if vary and cells else []
  if rows:
    figures.sweep_means(cells, path('means'), DATASET_TITLES)
    figures.sweep_accuracy_vs_params(
        [dict(r, variant=names[w], test_accuracy=r['test_accuracy_mean'])
         for r, w in zip(rows, runs)], path('params'), DATASET_TITLES)
    figures.sweep_val_curves(
        [(res['dataset'], names[w], _first_seed(results_lib.read_history(w)))
         for w, res in runs.items()
         if os.path.exists(os.path.join(w, results_lib.FILES['history']))],
        path('curves'), DATASET_TITLES)
    if vary_cells:
      figures.vary_effect(vary_cells, list(vary)[0], path('vary'), DATASET_TITLES)
  plot = lambda key, alt: img(path(key), alt) if rows and is_png(path(key)) else 'No runs.'
  datasets = sorted({r['dataset'] for r in rows}, key=dataset_key)
  titles = ', '.join(DATASET_TITLES.get(d, d) for d in datasets)
  values = '; '.join(f'{f}: {", ".join(map(str, v))}' for f, v in vary.items())
  swept = os.path.exists(path('info'))  # Written by the sweep; absent for any folder of runs.
  what = (f'the values of {" x ".join(vary)} ({values}) around a base config' if vary
          else 'the variants of the lab (table 1)' if swept
          else 'the runs in this folder (each named by its folder)')
  sections = [
      section('Goal', _goal(datasets[0] if len(datasets) == 1 else None),
              f'This page compares {what}{" trained in this sweep" if swept else ""}. '
              'Each cell (a config on a '
              'dataset) holds one test accuracy per seed; every number comes with its '
              'spread, and a difference is called one only where it holds.'),
      section('Comparison table', *_sweep_tables(sweep_dir, runs),
              'Mean, sample std, 95% t-interval, min and max of the test accuracy over '
              'the seeds of each cell; train s: the cell\'s training, all seeds together. '
              f'The exact values, with seed 0\'s own numbers, are in {SWEEP_FILES["csv"]}.'),
      section('Mean test accuracy over seeds',
              plot('means', 'mean test accuracy and 95% interval per config')),
      section('Significance', *_significance_tables(sig, reference_label),
              f'Each cell against {reference_label} on the same dataset: the difference of '
              "the mean test accuracies with its 95% Welch interval, Welch's t-test "
              "p-value (unequal variances), and that p-value Holm-adjusted over the "
              f'dataset\'s comparisons. Exact values: {SWEEP_FILES["significance"]}.'
              if sig else 'No reference cell to compare with in this folder.'),
  ]
  if vary:
    sections.append(section(VARY_SECTION, plot('vary', 'test accuracy and train seconds '
                                               'against the varied value')
                            if vary_cells else 'The plot needs numeric values.'))
  sections += [
      section('Test accuracy vs parameter count', plot('params', 'test accuracy vs parameters')),
      section('Validation accuracy curves', plot('curves', 'validation accuracy per epoch'),
              'Seed 0 of each cell.' if any(len(c['values']) > 1 for c in cells) else ''),
      section('Conclusions', Raw('<ul class="conc">' + ''.join(
          f'<li>{html.escape(c)}</li>' for c in significance.conclusions(
              sig, cells, reference_label, DATASET_TITLES)) + '</ul>')),
  ]
  text = page(f'Sweep: {len(rows)} cells ({titles or "none"})',
              f'digits_jax sweep report - {os.path.abspath(sweep_dir)}', sections,
              'Written by digits_jax.report from the runs in this folder.')
  out = os.path.join(sweep_dir, REPORT)
  results_lib.write_text(out, text)
  return out


def _first_seed(history):
  """The rows of history.csv of its first seed (a multi-seed run has a seed column)."""
  if not history or 'seed' not in history[0]:
    return history
  return [h for h in history if h['seed'] == history[0]['seed']]


def is_sweep_dir(folder):
  """A sweep folder: no results.json of its own, but subfolders holding one."""
  return (not os.path.exists(os.path.join(folder, results_lib.FILES['results']))
          and bool(find_runs(folder)))


def main(argv):
  """Writes the report of --workdir (a run or a sweep folder) and prints its path."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  folder = flags.FLAGS.workdir
  write = write_sweep_report if is_sweep_dir(folder) else write_run_report
  try:
    print(write(folder))
  except FileNotFoundError as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  # Defined here, not on import: train.py imports this module and main.py owns --workdir.
  flags.DEFINE_string('workdir', None, 'A run folder, or a sweep folder of runs.',
                      required=True)
  app.run(main)
