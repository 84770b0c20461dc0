"""Which differences in a sweep hold, and sentences that say only that.

A cell of a sweep (a config on a dataset) holds one test accuracy per seed. Each cell is
compared with its dataset's reference cell (the default config, or the base value of a
--vary sweep): the difference of the means with its 95% Welch interval and p-value
(digits_jax.stats), the p-values Holm-adjusted over that dataset's comparisons. The
conclusions quote those numbers and claim a difference only where the adjusted p-value
is below ALPHA.
"""

from digits_jax import stats

ALPHA = 0.05  # Family-wise error rate per dataset (Holm).
FIELDS = ('dataset', 'variant', 'reference', 'n', 'n_reference', 'mean', 'reference_mean',
          'difference', 'ci95_low', 'ci95_high', 'p_value', 'p_holm', 'significant')


def seed_values(res, key='test_accuracy'):
  """A run's values of `key`, one per seed: results.json's per_seed[key], else [res[key]]."""
  per_seed = res.get('per_seed') or {}
  return [float(v) for v in (per_seed.get(key) or [res[key]])]


def compare(cells, reference):
  """Every cell against its dataset's `reference` cell, Holm-adjusted per dataset.

  Args:
    cells: dicts with 'dataset', 'variant' and 'values' (one accuracy per seed, fractions),
      in the order the rows should keep.
    reference: the variant the others are compared with (e.g. 'default').

  Returns:
    Rows keyed by FIELDS (differences as fractions, like the accuracies; p-values None
    where the test is undefined: one seed, or no spread), one per cell other than the
    reference, for datasets that have the reference. 'significant' is p_holm < ALPHA.
  """
  refs = {c['dataset']: c for c in cells if c['variant'] == reference}
  rows = []
  for cell in cells:
    ref = refs.get(cell['dataset'])
    if ref is None or cell is ref:
      continue
    w = stats.welch(cell['values'], ref['values'])
    ci = w['ci95'] or [None, None]
    rows.append({'dataset': cell['dataset'], 'variant': cell['variant'],
                 'reference': reference, 'n': w['n_a'], 'n_reference': w['n_b'],
                 'mean': sum(cell['values']) / w['n_a'],
                 'reference_mean': sum(ref['values']) / w['n_b'],
                 'difference': w['difference'], 'ci95_low': ci[0], 'ci95_high': ci[1],
                 'p_value': w['p_value']})
  for dataset in refs:
    mine = [r for r in rows if r['dataset'] == dataset]
    for row, adjusted in zip(mine, stats.holm([r['p_value'] for r in mine])):
      row['p_holm'] = adjusted
      row['significant'] = adjusted is not None and adjusted < ALPHA
  return rows


def points(x, sign=True):
  """A fraction as accuracy points: 0.003 -> '+0.30'."""
  return f'{100 * x:+.2f}' if sign else f'{100 * x:.2f}'


def interval(row):
  """'+0.30 pt [+0.10, +0.50]' or '+0.30 pt (no interval)'."""
  text = f'{points(row["difference"])} pt'
  if row['ci95_low'] is None:
    return text + ' (no interval)'
  return text + f' [{points(row["ci95_low"])}, {points(row["ci95_high"])}]'


def _p(p):
  return 'p<0.001' if p < 0.001 else f'p={p:.3f}'


def conclusions(rows, cells, reference_label='the default', dataset_titles=None):
  """Sentences per dataset: significant differences, the rest, and the highest mean.

  Args:
    rows: `compare`'s rows.
    cells: the cells they came from (for the highest mean and its interval).
    reference_label: how to name the reference in a sentence.
    dataset_titles: optional {dataset: title}.

  Returns:
    A list of sentences (strings).
  """
  titles = dataset_titles or {}
  out = []
  for dataset in dict.fromkeys(c['dataset'] for c in cells):
    title = titles.get(dataset, dataset)
    mine = [r for r in rows if r['dataset'] == dataset]
    group = [c for c in cells if c['dataset'] == dataset]
    if not mine:
      if len(group) > 1:
        out.append(f'{title}: no run of {reference_label} to compare with.')
        out.append(_highest(group, title))
      continue
    n = sorted({r['n'] for r in mine} | {r['n_reference'] for r in mine})
    if n[-1] < 2:
      out.append(f'{title}: one seed per cell, so no interval and no test: differences '
                 'here can be noise. Rerun with --num_seeds=3 or more.')
      out.append(_highest(group, title))  # Named, with its lead marked untested.
      continue
    better = [r for r in mine if r['significant'] and r['difference'] > 0]
    worse = [r for r in mine if r['significant'] and r['difference'] < 0]
    for r, word in [(r, 'better') for r in better] + [(r, 'worse') for r in worse]:
      out.append(f'{r["variant"]} is {word} than {reference_label} on {title}: '
                 f'{interval(r)}, {_p(r["p_holm"])} (Holm-adjusted).')
    same = [r for r in mine if not r['significant']]
    if same:
      n_text = f'n={n[0]}' if len(n) == 1 else f'n={n[0]}-{n[-1]}'
      out.append(f'{_and([r["variant"] for r in same])}: no significant difference from '
                 f'{reference_label} on {title} at {n_text} (Holm-adjusted p >= {ALPHA}; '
                 'intervals in the table).')
    borderline = [r for r in same if r['ci95_low'] is not None
                  and (r['ci95_low'] > 0 or r['ci95_high'] < 0)]
    if borderline:
      out.append(_borderline(borderline, len(mine), title))
    out.append(_highest(group, title))
  return out or ['No finished runs in this folder yet.']


def _and(names):
  """['a', 'b', 'c'] -> 'a, b and c'."""
  return ', '.join(names[:-1]) + (' and ' if len(names) > 1 else '') + names[-1]


def _borderline(rows, m, title):
  """Why a table interval that excludes 0 is no finding: it is each comparison's own,
  and the difference does not survive Holm's correction for the dataset's m tests."""
  whose = _and([f'{r["variant"]} ({interval(r)})' for r in rows])
  adjusted = _and([_p(r['p_holm']) for r in rows])
  if len(rows) == 1:
    claim = f'interval of {whose} excludes 0 on its own, but the difference does not survive'
  else:
    claim = f'intervals of {whose} exclude 0 on their own, but neither difference survives'
  return (f'The 95% {claim} Holm\'s correction for the {m} comparisons on {title} '
          f'({adjusted} adjusted): more seeds would tell.')


def _highest(group, title):
  """The highest mean of a dataset, and whether its lead over the runner-up holds."""
  ranked = sorted(group, key=lambda c: -sum(c['values']) / len(c['values']))
  top = stats.summarize(ranked[0]['values'])
  ci = top['ci95']
  text = (f'Highest mean on {title}: {ranked[0]["variant"]}, {points(top["mean"], False)}%'
          + (f' [{points(ci[0], False)}, {points(ci[1], False)}]' if ci else '')
          + f' (n={top["n"]})')
  if len(ranked) < 2:
    return text + '.'
  w = stats.welch(ranked[0]['values'], ranked[1]['values'])
  ci = w['ci95'] or [None, None]
  lead = interval({'difference': w['difference'], 'ci95_low': ci[0], 'ci95_high': ci[1]})
  if w['p_value'] is None:
    return text + f'; its lead over {ranked[1]["variant"]} ({lead}) is untested.'
  verdict = 'holds' if w['p_value'] < ALPHA else 'is within the noise'
  return (text + f'; its lead over the runner-up {ranked[1]["variant"]} ({lead}, '
          f'{_p(w["p_value"])}, unadjusted) {verdict}.')
