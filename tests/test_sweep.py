"""The sweep on tiny data: three configs trained, a rerun skips them, an interrupted run
resumes from its checkpoint, and the comparison table holds each run's own numbers."""

import contextlib
import csv
import html
import io
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from digits_jax import comparison
from digits_jax import config_files
from digits_jax import figures
from digits_jax import preemption
from digits_jax import html_page
from digits_jax import sweep_figures
from digits_jax import sweep_outputs
from digits_jax import sweep_report
from digits_jax import outputs
from digits_jax import results as results_lib
from digits_jax import stats
from digits_jax import sweep
from digits_jax import train
from digits_jax import workdir as workdir_lib

import test_report  # pylint: disable=g-bad-import-order  (its page check script)
from helpers import BROWSER, chromium

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ('default', 'v1', 'v2')


def tiny_overrides(data_dir, num_epochs=2):
  """--override strings that shrink the lab's configs to the tiny data."""
  return [f'data_dir={data_dir}', 'verify_checksums=false', 'hidden_units=16',
          f'num_epochs={num_epochs}', 'num_show=4', 'num_misclassified_show=2',
          'progress_bar=false', 'tensorboard=false']


def quiet(fn, *args, **kwargs):
  """Calls fn, returning (its result, what it printed)."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    result = fn(*args, **kwargs)
  return result, out.getvalue()


@pytest.fixture(scope='module')
def swept(tiny_data, tmp_path_factory):
  """A sweep of three configs where v1 was interrupted after its first epoch."""
  sweep_dir = str(tmp_path_factory.mktemp('sweep'))
  v1_dir = os.path.join(sweep_dir, 'v1_mnist')
  # The interrupted run: one epoch finished and checkpointed, results.json not yet written.
  config = sweep.load_config('v1', 'mnist', tiny_overrides(tiny_data, num_epochs=2))
  config.num_epochs = 1
  quiet(train.train_and_evaluate, config, v1_dir)
  os.remove(os.path.join(v1_dir, 'results.json'))
  first_epoch = results_lib.read_history(v1_dir)
  status, log = quiet(sweep.run_sweep, CONFIGS, ['mnist'], sweep_dir, tiny_overrides(tiny_data))
  return {'dir': sweep_dir, 'status': status, 'log': log, 'v1_first_epoch': first_epoch,
          'data': tiny_data}


def workdir(swept, name):
  return os.path.join(swept['dir'], f'{name}_mnist')


def test_each_config_runs_in_its_own_workdir(swept):
  assert swept['status'] == {workdir(swept, 'default'): 'trained',
                             workdir(swept, 'v1'): 'resumed',
                             workdir(swept, 'v2'): 'trained'}
  for name in CONFIGS:
    res = results_lib.read_json(os.path.join(workdir(swept, name), 'results.json'))
    assert (res['name'], res['dataset'], res['num_epochs']) == (name, 'mnist', 2)
    assert len(results_lib.read_history(workdir(swept, name))) == 2


def cell_log(swept, name):
  return open(os.path.join(workdir(swept, name), 'log.txt'), encoding='utf-8').read()


def test_interrupted_run_resumes_from_its_checkpoint(swept):
  history = results_lib.read_history(workdir(swept, 'v1'))
  assert history[:1] == swept['v1_first_epoch']  # Same seconds too: epoch 1 was not redone.
  steps_per_epoch = -(-540 // 30)  # 600 images less 10% validation, batch 30.
  log = cell_log(swept, 'v1')
  assert f'Resumed from the checkpoint at step {steps_per_epoch} (epoch 1 done)' in log
  assert log.count('Resumed from the checkpoint') == 1 and 'Epoch 1/2' not in log
  assert log.startswith(f'[2/3] v1 mnist: resuming in {workdir(swept, "v1")}.')


def test_the_console_says_one_line_per_cell_and_a_table(swept):
  """Issue 22 item 9: each cell's run lines go to its log.txt; the console has one line per
  cell (progress, mean accuracy, seeds, seconds) and a closing table."""
  lines = swept['log'].splitlines()
  for k, (name, status) in enumerate([('default', 'trained'), ('v1', 'resumed'),
                                      ('v2', 'trained')], 1):
    acc = 100 * results_lib.read_json(os.path.join(workdir(swept, name), 'results.json'))[
        'test_accuracy']
    assert re.fullmatch(rf'\[{k}/3\] {name} mnist: {acc:.2f}% \(1 seed\), {status} in '
                        r'[\d.]+ s\.', lines[k - 1]), lines[k - 1]
    assert f'{name} mnist: training' not in swept['log']
    assert 'Epoch 2/2' in cell_log(swept, name) and 'Test:' in cell_log(swept, name)
  table = lines[lines.index(next(l for l in lines if l.startswith('cell '))):][:4]
  assert table[0].split() == ['cell', 'dataset', 'test', 'acc.', 'seeds', 'status', 'seconds']
  assert [r.split()[:2] + r.split()[3:5] for r in table[1:]] == [
      ['default', 'mnist', '1', 'trained'], ['v1', 'mnist', '1', 'resumed'],
      ['v2', 'mnist', '1', 'trained']]
  assert len(lines) < 12, lines


def test_comparison_table_holds_each_runs_results(swept):
  with open(os.path.join(swept['dir'], 'comparison.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0]) == comparison.COMPARISON_FIELDS
  assert [r['variant'] for r in rows] == list(CONFIGS)
  for row in rows:
    res = results_lib.read_json(os.path.join(workdir(swept, row['variant']), 'results.json'))
    assert row['dataset'] == res['dataset']
    assert row['model'] == res['model_description'] == {'v1': '16 x 16'}.get(row['variant'], '16')
    for field, key in (('params', 'num_params'), ('epochs', 'num_epochs'),
                       ('batch', 'batch_size'), ('misclassified', 'misclassified_count')):
      assert int(row[field]) == res[key], field
    for field in ('validation_split', 'best_val_accuracy', 'final_val_accuracy',
                  'test_accuracy', 'test_loss'):
      assert float(row[field]) == res[field], field
    assert float(row['train_seconds']) == res['timings']['train_seconds']
    # One seed per cell here: its own value, no interval.
    assert int(row['n']) == 1 and float(row['test_accuracy_mean']) == res['test_accuracy']
    assert row['test_accuracy_ci95_low'] == row['test_accuracy_ci95_high'] == ''
  md = open(os.path.join(swept['dir'], 'comparison.md')).read()
  assert '\n| default_mnist | default | mnist | 16 | 12,730 | 2 | 32 | 20% |' in md  # No empty differs.
  assert '\n| v1_mnist | v1 | mnist | 16 x 16 | 13,002 | 2 | 30 | 10% |' in md
  assert all(row['run'] == f'{row["variant"]}_mnist' and row['differs'] == '' for row in rows)


def test_sweep_report(swept):
  text = open(os.path.join(swept['dir'], html_page.REPORT), encoding='utf-8').read()
  assert tuple(re.findall(r'<h2>(.*?)</h2>', text)) == sweep_report.SWEEP_SECTIONS
  srcs = re.findall(r'<img [^>]*src="([^"]*)"', text)
  assert len(srcs) == 3 and all(s.startswith('data:image/png;base64,') for s in srcs)
  assert all(f'>{name}<' in text for name in CONFIGS)
  assert 'one seed per cell, so no interval and no test' in text
  with open(os.path.join(swept['dir'], 'significance.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  assert [(r['variant'], r['reference'], r['p_value']) for r in rows] == [
      ('v1', 'default', ''), ('v2', 'default', '')]


def test_every_runs_figures_and_report_are_written_when_the_sweep_returns(swept):
  for name in CONFIGS:
    for file in (*figures.FILES.values(), html_page.REPORT):
      assert os.path.getsize(os.path.join(workdir(swept, name), file)) > 0, (name, file)


def process_state(pid):
  """The one-letter state of process `pid` (/proc/PID/stat): 'T' when stopped."""
  with open(f'/proc/{pid}/stat', encoding='ascii') as f:
    return f.read().rsplit(')', 1)[1].split()[0]


def stopped_within(pid, stopped, seconds=5):
  """Whether process `pid` is (or is not, `stopped` False) stopped within `seconds`: a
  signal is delivered a moment after kill() returns."""
  deadline = time.monotonic() + seconds
  while (process_state(pid) == 'T') != stopped:
    if time.monotonic() > deadline:
      return False
    time.sleep(0.005)
  return True


@pytest.mark.slow  # A worker process imports JAX and matplotlib (seconds).
def test_the_worker_draws_cells_in_its_own_process_pauses_and_reports_failures(swept,
                                                                              tmp_path):
  """Issue 22 item 9: sweep_outputs.OutputWorker draws a handed cell's outputs in another
  process, from the files its run saved; `paused` stops that process (training takes every
  core); a cell it cannot draw is reported with its reason, the others are drawn."""
  cell = str(tmp_path / 'cell')
  shutil.copytree(workdir(swept, 'v2'), cell)
  drawn = [*figures.FILES.values(), html_page.REPORT]
  for name in drawn:
    os.remove(os.path.join(cell, name))
  empty = str(tmp_path / 'empty')
  os.mkdir(empty)
  sweep_dir = str(tmp_path / 'sweep')
  shutil.copytree(swept['dir'], sweep_dir)
  for name in sweep_report.SWEEP_FIGURES.values():
    if os.path.exists(os.path.join(sweep_dir, name)):
      os.remove(os.path.join(sweep_dir, name))
  worker = sweep_outputs.OutputWorker()
  broken = config_files.read_run_config(cell)
  broken.data_dir = str(tmp_path / 'nowhere')  # A warm-up that cannot read its data.
  worker.warm_up([config_files.read_run_config(cell), broken])
  for folder in (cell, empty):
    worker.write_outputs(None, folder, None)
  worker.start()
  while not worker._pid.value:  # pylint: disable=protected-access
    time.sleep(0.01)
  pid = worker._pid.value  # pylint: disable=protected-access
  assert pid != os.getpid()
  with worker.paused():
    assert stopped_within(pid, True)
  assert stopped_within(pid, False)
  worker.draw_sweep_figures(sweep_dir)
  failed = worker.close()
  assert worker.sweep_figures_drawn
  for key in ('means', 'curves'):
    assert os.path.getsize(os.path.join(sweep_dir, sweep_report.SWEEP_FIGURES[key])) > 0
  assert list(failed) == [empty] and 'config.json' in failed[empty]
  for name in drawn:
    assert os.path.getsize(os.path.join(cell, name)) > 0, name
  log = open(os.path.join(cell, 'log.txt'), encoding='utf-8').read().splitlines()
  assert log[-1].startswith('Drew, once the run had ended: ') and 'report.html' in log[-1]
  assert not worker._process.is_alive()  # pylint: disable=protected-access


class RecordingWorker(sweep_outputs.OutputWorker):
  """Stands for a started OutputWorker: records what the sweep hands it and when."""

  def __init__(self, events):  # pylint: disable=super-init-not-called  (no process)
    self.events = events
    self.sweep_figures_drawn = False

  def draw_sweep_figures(self, sweep_dir):
    self.events.append(('sweep figures',))
    self.sweep_figures_drawn = True

  def write_outputs(self, config, workdir, data, *, summary_writer=None, res=None):
    del workdir, data, summary_writer, res
    self.events.append(('taken', config.name))

  def paused(self):
    self.events.append(('paused',))
    return contextlib.nullcontext()

  def warm_up(self, configs):
    self.events.append(('warm', [c.dataset for c in configs]))

  def start(self):
    self.events.append(('handed',))

  def failures(self):
    return {}

  def close(self):
    self.events.append(('closed',))
    return {os.path.join(self.dir, 'v1_mnist'): 'ValueError: no room for the legend'}


def test_the_sweep_hands_each_cell_after_its_run_and_reports_drawing_failures(
    tmp_path, monkeypatch):
  """Each run's outputs go to the worker after the run returned (it released its
  workdir), the worker pauses while runs train, and a failure it reports marks that run
  failed while the others stand; the sweep's comparison and figures are made beside the
  worker's last drawings (by the worker), its page (linking the runs' pages) after every
  drawing."""
  events = []
  worker = RecordingWorker(events)
  worker.dir = str(tmp_path)

  def fake_train(config, workdir, write_outputs, while_training):
    with while_training():
      events.append(('trained', config.name))
    write_outputs(config, workdir, data=None, summary_writer=None, res=None)
    events.append(('returned', config.name))

  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  monkeypatch.setattr(sweep_report, 'write_sweep_report', lambda d, draw_figures: events.append(
      ('report', draw_figures)))
  with pytest.raises(sweep.SweepError, match='v1_mnist: failed: writing its outputs: '
                     'ValueError: no room for the legend') as error:
    quiet(sweep.run_sweep, CONFIGS, ['mnist'], str(tmp_path), [], output_worker=worker)
  assert 'default_mnist' not in str(error.value) and 'v2_mnist' not in str(error.value)
  for name in CONFIGS:
    k = events.index(('trained', name))
    assert events[k - 1:k + 4] == [('paused',), ('trained', name), ('taken', name),
                                   ('returned', name), ('handed',)]
  assert events[0] == ('warm', ['mnist'])  # Before the first cell.
  assert events[-3:] == [('sweep figures',), ('closed',), ('report', False)]


def test_a_stopped_sweep_still_draws_the_finished_runs_outputs(tmp_path, monkeypatch):
  events = []
  worker = RecordingWorker(events)
  worker.dir = str(tmp_path)

  def fake_train(config, workdir, write_outputs, while_training):
    del while_training
    if config.name == 'v1':
      raise preemption.StopRequested('SIGTERM received', signum=15)
    write_outputs(config, workdir, data=None, summary_writer=None, res=None)

  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  with pytest.raises(preemption.StopRequested):
    quiet(sweep.run_sweep, CONFIGS, ['mnist'], str(tmp_path), [], output_worker=worker)
  assert events == [('warm', ['mnist']), ('taken', 'default'), ('handed',), ('closed',)]


def test_rerun_skips_finished_runs(swept):
  mtimes = {n: os.stat(os.path.join(workdir(swept, n), 'results.json')).st_mtime_ns
            for n in CONFIGS}
  cmd = [sys.executable, '-m', 'digits_jax.sweep', f'--configs={",".join(CONFIGS)}',
         '--datasets=mnist', f'--sweep_dir={swept["dir"]}']
  cmd += [f'--override={o}' for o in tiny_overrides(swept['data'])]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                        check=False, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count('skipped.') == 3, proc.stdout
  assert '3 runs: 0 trained, 0 resumed, 3 skipped, 0 failed' in proc.stdout
  assert 'Epoch ' not in proc.stdout
  assert mtimes == {n: os.stat(os.path.join(workdir(swept, n), 'results.json')).st_mtime_ns
                    for n in CONFIGS}


def test_a_changed_setting_is_not_skipped(swept, tmp_path, monkeypatch):
  sweep_dir = str(tmp_path / 'copy')
  shutil.copytree(swept['dir'], sweep_dir)
  saved = os.path.join(sweep_dir, 'v2_mnist', 'config.json')
  results_lib.write_json(saved, {**results_lib.read_json(saved), 'test_indices': [4]})
  calls = []
  monkeypatch.setattr(train, 'train_and_evaluate', lambda c, w, **_: calls.append((c.name, w)))
  status, _ = quiet(sweep.run_sweep, CONFIGS, ['mnist'], sweep_dir,
                    tiny_overrides(swept['data']))
  assert calls == [('v2', os.path.join(sweep_dir, 'v2_mnist'))]
  assert sorted(status.values()) == ['resumed', 'skipped', 'skipped']


def test_bad_override_fails_before_any_training(tmp_path, monkeypatch):
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a: pytest.fail('trained'))
  with pytest.raises(sweep.SweepError, match='no field'):
    sweep.run_sweep(CONFIGS, ['mnist'], str(tmp_path), ['no_such_field=1'])
  with pytest.raises(sweep.SweepError, match='expected int'):
    sweep.run_sweep(CONFIGS, ['mnist'], str(tmp_path), ['num_epochs=1.5'])
  with pytest.raises(sweep.SweepError, match='unknown dataset'):
    sweep.run_sweep(CONFIGS, ['mnist'], str(tmp_path), ['v2:num_epochs=1'])
  with pytest.raises(sweep.SweepError, match='no file'):
    sweep.run_sweep(['v99'], ['mnist'], str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_overrides_take_the_fields_type():
  config = sweep.load_config('v6', 'fashion_mnist', [
      'num_epochs=3', 'learning_rate=1e-2', 'progress_bar=False', 'test_indices=(1, 2)',
      'kernel_init=lecun_normal', 'validation_split=0', 'mnist:batch_size=7',
      'fashion_mnist:hidden_units=20'])
  assert config.num_epochs == 3 and isinstance(config.num_epochs, int)
  assert config.learning_rate == 0.01 and config.validation_split == 0.0
  assert isinstance(config.validation_split, float)
  assert config.progress_bar is False and config.test_indices == (1, 2)
  assert config.kernel_init == 'lecun_normal'
  assert config.batch_size == 5 and config.hidden_units == 20  # mnist: override not applied.
  assert sweep.load_config('v1', 'mnist', ['test_indices=4']).test_indices == (4,)


@pytest.mark.slow
def test_a_failed_run_does_not_stop_the_others(tmp_path, monkeypatch, tiny_data):
  calls = []

  def fake_train(config, workdir, **_):
    calls.append(config.name)
    if config.name == 'v1':
      raise workdir_lib.WorkdirMismatchError(f'{workdir} holds a run of a different config')

  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  out = io.StringIO()
  with pytest.raises(sweep.SweepError, match='v1_mnist: failed: .* different config'), \
      contextlib.redirect_stdout(out):
    sweep.run_sweep(CONFIGS, ['mnist'], str(tmp_path), tiny_overrides(tiny_data))
  assert calls == list(CONFIGS)
  # Its one console line says why; its folder was never made, so its log stays beside it.
  log = tmp_path / 'v1_mnist.log.txt'
  assert re.search(rf'^\[2/3\] v1 mnist: FAILED in [\d.]+ s: .* different config '
                   rf'\(log: {re.escape(str(log))}\)$', out.getvalue(), re.M), out.getvalue()
  assert log.read_text().startswith(f'[2/3] v1 mnist: training in {tmp_path / "v1_mnist"}.')
  assert os.path.exists(tmp_path / html_page.REPORT)  # Written before the error is raised.


SEEDS = {'default': [0.90, 0.91, 0.92, 0.905], 'v1': [0.95, 0.96, 0.955, 0.965],
         'v2': [0.91, 0.90, 0.915, 0.92]}


@pytest.fixture(scope='module')
def multi_seed(swept, tmp_path_factory):
  """The swept folder with each results.json given four seeds (issue 13's fields)."""
  sweep_dir = str(tmp_path_factory.mktemp('seeds') / 'sweep')
  shutil.copytree(swept['dir'], sweep_dir)
  for name, values in SEEDS.items():
    path = os.path.join(sweep_dir, f'{name}_mnist', 'results.json')
    res = results_lib.read_json(path)
    res.update(test_accuracy=values[0], seeds=[0, 1, 2, 3],
               per_seed={'test_accuracy': values, 'test_loss': [0.3] * 4})
    results_lib.write_json(path, res)
  sweep_report.write_sweep_report(sweep_dir)
  return sweep_dir


@pytest.mark.slow
def test_comparison_table_holds_each_cells_seeds(multi_seed):
  with open(os.path.join(multi_seed, 'comparison.csv'), newline='') as f:
    rows = {r['variant']: r for r in csv.DictReader(f)}
  for name, values in SEEDS.items():
    res = results_lib.read_json(os.path.join(multi_seed, f'{name}_mnist', 'results.json'))
    row, s = rows[name], stats.summarize(values)
    assert int(row['n']) == 4
    for key in ('mean', 'std', 'min', 'max'):
      assert float(row[f'test_accuracy_{key}']) == pytest.approx(s[key]), key
    assert [float(row['test_accuracy_ci95_low']),
            float(row['test_accuracy_ci95_high'])] == pytest.approx(s['ci95'])
    assert float(row['test_accuracy']) == values[0]  # Seed 0's own, as in results.json.
    assert float(row['train_seconds_per_seed']) == pytest.approx(
        res['timings']['train_seconds'] / 4)


@pytest.mark.slow
def test_significance_and_conclusions_from_the_seeds(multi_seed):
  with open(os.path.join(multi_seed, 'significance.csv'), newline='') as f:
    rows = {r['variant']: r for r in csv.DictReader(f)}
  assert set(rows) == {'v1', 'v2'}
  for name in rows:
    w = stats.welch(SEEDS[name], SEEDS['default'])
    assert float(rows[name]['difference']) == pytest.approx(w['difference'])
    assert float(rows[name]['p_value']) == pytest.approx(w['p_value'])
    assert [float(rows[name]['ci95_low']), float(rows[name]['ci95_high'])] == pytest.approx(
        w['ci95'])
  holm = stats.holm([float(rows['v1']['p_value']), float(rows['v2']['p_value'])])
  assert [float(rows['v1']['p_holm']), float(rows['v2']['p_holm'])] == pytest.approx(holm)
  assert rows['v1']['significant'] == 'True' and rows['v2']['significant'] == 'False'
  text = html.unescape(open(os.path.join(multi_seed, html_page.REPORT), encoding='utf-8').read())
  assert 'v1 is better than the default config on MNIST: +4.87 pt [' in text
  assert 'p<0.001 (Holm-adjusted)' in text
  assert 'v2: no significant difference from the default config on MNIST at n=4' in text
  assert re.findall(r'<h2>(.*?)</h2>', text) == list(sweep_report.SWEEP_SECTIONS)


@pytest.mark.slow
def test_vary_sweep_plots_the_effect(tiny_data, tmp_path):
  sweep_dir = str(tmp_path / 'width')
  status, log = quiet(sweep.run_sweep, (), ['mnist'], sweep_dir,
                      tiny_overrides(tiny_data, num_epochs=1),
                      vary=sweep.parse_vary(['hidden_units=8,16']))
  cells = [os.path.join(sweep_dir, f'hidden_units-{h}_mnist') for h in (8, 16)]
  assert status == {c: 'trained' for c in cells}
  assert [results_lib.read_json(os.path.join(c, 'results.json'))['model_description']
          for c in cells] == ['8', '16']
  # The tiny overrides set the base's hidden_units to 16: that cell is the reference.
  assert results_lib.read_json(os.path.join(sweep_dir, 'sweep.json')) == {
      'reference': 'hidden_units=16', 'vary': {'hidden_units': ['8', '16']}}
  with open(os.path.join(sweep_dir, 'significance.csv'), newline='') as f:
    assert [(r['variant'], r['reference']) for r in csv.DictReader(f)] == [
        ('hidden_units=8', 'hidden_units=16')]
  text = open(os.path.join(sweep_dir, html_page.REPORT), encoding='utf-8').read()
  sections = list(sweep_report.SWEEP_SECTIONS)
  sections.insert(sections.index('Significance') + 1, sweep_report.VARY_SECTION)
  assert re.findall(r'<h2>(.*?)</h2>', text) == sections
  assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', text)) == 4
  assert 'the base (hidden_units=16)' in text
  assert re.search(r'\[sweep\] wall time [\d.]+ s for [\d.]+ s of training and [\d.]+ s of '
                   r'compiling in the runs trained here \(wall / training: [\d.]+x\)\.', log)


@pytest.mark.parametrize('vary,message', [
    (['hidden_units'], 'expected FIELD=V1,V2'), (['no_field=1,2'], 'no field'),
    (['hidden_units=1', 'hidden_units=2'], 'given twice'), (['hidden_units=1.5'], 'expected int')])
def test_bad_vary_fails_before_training(tmp_path, monkeypatch, vary, message):
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a: pytest.fail('trained'))
  with pytest.raises(sweep.SweepError, match=message):
    sweep.run_sweep((), ['mnist'], str(tmp_path), vary=sweep.parse_vary(vary))
  assert os.listdir(tmp_path) == []


def sweep_cli(*args):
  return subprocess.run([sys.executable, '-m', 'digits_jax.sweep', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})


def test_report_only_and_flag_errors(swept, tmp_path):
  sweep_dir = str(tmp_path / 'copy')
  shutil.copytree(swept['dir'], sweep_dir)
  os.remove(os.path.join(sweep_dir, html_page.REPORT))
  proc = sweep_cli(f'--sweep_dir={sweep_dir}', '--report_only')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Epoch' not in proc.stdout and os.path.exists(os.path.join(sweep_dir, html_page.REPORT))
  proc = sweep_cli(f'--sweep_dir={tmp_path / "empty"}', '--report_only')
  assert proc.returncode == 1 and '--report_only: no finished runs under' in proc.stderr
  proc = sweep_cli('--configs=v1', '--vary=hidden_units=8,16', f'--sweep_dir={tmp_path}')
  assert proc.returncode == 1 and 'leave out --configs' in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason='needs Chromium (apt-get install chromium)')
def test_sweep_report_renders_in_a_browser(multi_seed, tmp_path):
  """Every figure (the mean +- interval one included) loads; the significance table is there."""
  text = open(os.path.join(multi_seed, html_page.REPORT), encoding='utf-8').read()
  checked = tmp_path / 'checked.html'
  checked.write_text(text.replace('</body>', test_report.CHECK_SCRIPT), encoding='utf-8')
  proc = chromium('--dump-dom', '--virtual-time-budget=5000', f'file://{checked}',
                               user_data_dir=tmp_path / 'profile')
  body = re.search(r'<body([^>]*)>', proc.stdout)
  assert body, proc.stderr[-2000:]
  attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
  assert attrs.get('images-ok') == 'true' and attrs['images'] == '3', attrs
  assert tuple(attrs['headings'].split('|')) == sweep_report.SWEEP_SECTIONS
  assert '<th>Holm p</th>' in proc.stdout and '<th>95% interval</th>' in proc.stdout


@pytest.mark.parametrize('vary', [['data_dir=/a,/b'], ['name=../../../x,..'],
                                  ['data_dir=<script>/x,a\\b']])
def test_vary_values_never_become_paths(tmp_path, vary):
  """Issue 21 item 8: each cell is one safe folder directly inside the sweep folder."""
  runs, _ = sweep.vary_plan(os.path.join(REPO, 'configs', 'default.py'), ['mnist'],
                            str(tmp_path), sweep.parse_vary(vary))
  assert len(runs) == 3  # The two values and the base's own.
  for workdir, _ in runs:
    assert os.path.dirname(workdir) == str(tmp_path) and not os.path.basename(
        workdir).startswith('.') and workdir_lib.path_problem(workdir) is None


def test_unknown_dataset_is_refused_before_any_cell(tmp_path, monkeypatch):
  """Issue 21 item 7: as --configs=nope is."""
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a, **k: pytest.fail('trained'))
  with pytest.raises(sweep.SweepError, match=r"--datasets: unknown 'cifar'; use one or more "
                     'of mnist, fashion_mnist'):
    sweep.run_sweep(('default',), ['mnist', 'cifar'], str(tmp_path))
  with pytest.raises(sweep.SweepError, match="--datasets: unknown 'cifar'"):
    sweep.run_sweep((), ['cifar'], str(tmp_path), vary={'hidden_units': ['8']})
  assert os.listdir(tmp_path) == []


def test_a_bad_vary_value_names_vary():
  """Issue 21 item 6: not --override."""
  with pytest.raises(sweep.SweepError, match=r"^--vary 'hidden_units=a': expected int"):
    sweep.vary_plan(os.path.join(REPO, 'configs', 'default.py'), ['mnist'], 'S',
                    sweep.parse_vary(['hidden_units=a,b']))
  with pytest.raises(sweep.SweepError, match=r"no field 'hiden_units'\. Did you mean "
                     '"hidden_units"'):
    sweep.load_config('default', 'mnist', ['hiden_units=3'])


@pytest.mark.slow  # Two processes that import jax.
def test_help_exits_0_and_a_bad_flag_is_one_line(tmp_path):
  proc = sweep_cli('--help')
  assert proc.returncode == 0 and '--vary' in proc.stdout and 'Runs many' in proc.stdout
  proc = sweep_cli('--num_seeds=x', f'--sweep_dir={tmp_path}')
  assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
      "error: flag --num_seeds=x: invalid literal for int() with base 10: 'x'. See --help for "
      'the flags and their values.']


@pytest.mark.slow  # Three tiny cells trained.
def test_vary_without_the_base_value_adds_the_base_as_reference(tiny_data, tmp_path):
  """Issue 22 item 8: the base's own value joins as the named reference; the parameter
  plot of runs that all share one count is left out; comparison.md has the varied column."""
  sweep_dir = str(tmp_path / 'lr')
  status, _ = quiet(sweep.run_sweep, (), ['mnist'], sweep_dir,
                    tiny_overrides(tiny_data, num_epochs=1) + ['tensorboard=true'],
                    vary=sweep.parse_vary(['learning_rate=0.01,0.1']))
  assert [os.path.basename(w) for w in status] == [
      'learning_rate-0.001_mnist', 'learning_rate-0.01_mnist', 'learning_rate-0.1_mnist']
  assert results_lib.read_json(os.path.join(sweep_dir, 'sweep.json'))['reference'] == (
      'learning_rate=0.001')
  with open(os.path.join(sweep_dir, 'significance.csv'), newline='') as f:
    assert [(r['variant'], r['reference']) for r in csv.DictReader(f)] == [
        ('learning_rate=0.01', 'learning_rate=0.001'),
        ('learning_rate=0.1', 'learning_rate=0.001')]
  with open(os.path.join(sweep_dir, 'comparison.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0]) == comparison.comparison_fields(['learning_rate'])
  assert [r['learning_rate'] for r in rows] == ['0.001', '0.01', '0.1']
  md = open(os.path.join(sweep_dir, 'comparison.md'), encoding='utf-8').read()
  header = md.splitlines()[2].split(' | ')
  assert header[:3] == ['| run', 'variant', 'learning_rate'] and 'differs' not in header
  text = html.unescape(open(os.path.join(sweep_dir, html_page.REPORT), encoding='utf-8').read())
  assert 'the base (learning_rate=0.001)' in text
  assert 'Every run of a dataset has the same parameter count (' in text
  assert 'Train seconds are not plotted' in text and '<th>learning_rate</th>' in text
  assert not os.path.exists(os.path.join(sweep_dir, sweep_report.SWEEP_FIGURES['params']))
  assert os.path.exists(os.path.join(sweep_dir, sweep_report.SWEEP_FIGURES['vary']))
  for workdir in status:  # Drawn by the sweep's worker process (sweep_outputs.py).
    for name in ('report.html', 'curves.png', 'confusion.png', 'recognized.png', 'log.txt'):
      assert os.path.getsize(os.path.join(workdir, name)) > 0, (workdir, name)
    assert len(os.listdir(os.path.join(workdir, 'tensorboard'))) == 1
    assert f'{os.path.basename(workdir)}/report.html' in text  # The table links it.


def test_vary_plan_adds_the_base_cell_only_where_missing(tmp_path):
  """The base's own values join (first) only when the grid lacks them; then it is named."""
  base = os.path.join(REPO, 'configs', 'default.py')
  runs, reference = sweep.vary_plan(base, ['mnist'], str(tmp_path),
                                    sweep.parse_vary(['hidden_units=32,64']))
  assert [c.name for _, c in runs] == ['hidden_units=128', 'hidden_units=32', 'hidden_units=64']
  assert reference == 'hidden_units=128'
  runs, reference = sweep.vary_plan(base, ['mnist'], str(tmp_path),
                                    sweep.parse_vary(['hidden_units=64,128']))
  assert [c.name for _, c in runs] == ['hidden_units=64', 'hidden_units=128']
  assert reference == 'hidden_units=128'


def test_params_plot_only_where_counts_vary():
  rows = [{'dataset': 'mnist', 'params': 10}, {'dataset': 'mnist', 'params': 10}]
  assert not sweep_figures.params_vary(rows)
  assert sweep_figures.params_vary(rows + [{'dataset': 'mnist', 'params': 12}])
  assert not sweep_figures.params_vary(rows + [{'dataset': 'fashion_mnist', 'params': 12}])


def test_help_answers_without_loading_jax():
  """Issue 22 item 9: `sweep --help` (and a bad flag) in well under a second, exit 0: the
  heavy modules load lazily, on first use."""
  code = ('import runpy, sys\nsys.argv = ["sweep", "--help"]\ntry:\n'
          '  runpy.run_module("digits_jax.sweep", run_name="__main__")\n'
          'except SystemExit as e:\n'
          '  print("EXIT", e.code, "jaxlib" in sys.modules, "matplotlib" in sys.modules)\n')
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                        text=True, timeout=60, check=False)
  assert proc.stdout.strip().splitlines()[-1] == 'EXIT 0 False False', proc.stderr[-2000:]
  assert '--vary' in proc.stdout
