"""Every code block of README.md and docs/*.md runs as written, from a folder elsewhere.

Fenced `python` blocks run unless the line before says `<!-- snippet: skip (why) -->`;
fenced `bash` blocks run only where it says `<!-- snippet: run -->` (the cheap ones:
--help, --dry_run). Each runs in a fresh process from a temporary folder outside the
repository, as a reader who copied it would run it, with this checkout importable.
Other blocks (console output, plain ``` fences) are text.
"""

import dataclasses
import glob
import os
import re
import subprocess
import sys

import pytest

from helpers import REPO

MARK = re.compile(r'<!--\s*snippet:\s*(?P<what>run|skip)\s*(?:\((?P<why>[^)]*)\))?\s*-->')
FENCE = re.compile(r'^```\s*(?P<lang>[\w+-]*)\s*$')
RUNNERS = {'python': [sys.executable], 'bash': ['bash', '-euo', 'pipefail']}


@dataclasses.dataclass(frozen=True)
class Block:
  """One fenced code block: where it is, its language, its text and its mark."""
  path: str
  line: int
  lang: str
  code: str
  mark: str  # 'run', 'skip' or '' (none).

  @property
  def runs(self):
    """Python runs unless marked skip; bash only when marked run; nothing else runs."""
    return (self.lang == 'python' and self.mark != 'skip') or (
        self.lang == 'bash' and self.mark == 'run')

  def __str__(self):
    return f'{os.path.relpath(self.path, REPO)}:{self.line}'


def doc_files():
  """README.md and every docs/*.md, the files a reader copies commands from."""
  return [os.path.join(REPO, 'README.md')] + sorted(glob.glob(os.path.join(REPO, 'docs', '*.md')))


def parse(path):
  """(blocks, problems) of a markdown file: its fenced blocks; misplaced or bare marks."""
  with open(path, encoding='utf-8') as f:
    lines = f.read().splitlines()
  blocks, problems, mark, i = [], [], None, 0
  while i < len(lines):
    found, fence = MARK.fullmatch(lines[i].strip()), FENCE.match(lines[i])
    if found:
      if found['what'] == 'skip' and not (found['why'] or '').strip():
        problems.append(f'{os.path.relpath(path, REPO)}:{i + 1}: a skip must say why: '
                        '<!-- snippet: skip (reason) -->')
      mark = (found['what'], i)
    elif fence:
      end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == '```'), len(lines))
      what = mark[0] if mark and mark[1] == i - 1 else ''
      if mark and not what:
        problems.append(f'{os.path.relpath(path, REPO)}:{mark[1] + 1}: the snippet mark is '
                        'not on the line right before a ``` fence')
      blocks.append(Block(path, i + 1, fence['lang'], '\n'.join(lines[i + 1:end]) + '\n', what))
      mark, i = None, end
    i += 1
  if mark:
    problems.append(f'{os.path.relpath(path, REPO)}:{mark[1] + 1}: a snippet mark with no block')
  return blocks, problems


def all_blocks():
  return [b for path in doc_files() for b in parse(path)[0]]


def run_block(block, folder):
  """Runs `block` in `folder` as its reader would; returns the finished process."""
  script = os.path.join(folder, 'snippet.py' if block.lang == 'python' else 'snippet.sh')
  with open(script, 'w', encoding='utf-8') as f:
    f.write(block.code)
  env = {**os.environ, 'PYTHONPATH': REPO,
         'PATH': os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', '')}
  return subprocess.run(RUNNERS[block.lang] + [script], cwd=folder, env=env,
                        capture_output=True, text=True, timeout=600, check=False)


def test_marks_are_well_placed_and_skips_say_why():
  problems = [p for path in doc_files() for p in parse(path)[1]]
  assert not problems, '\n'.join(problems)


def test_the_parser_reads_marks_fences_and_languages(tmp_path):
  page = tmp_path / 'page.md'
  page.write_text('text\n```python\nprint(1)\n```\n<!-- snippet: skip (slow) -->\n'
                  '```python\nimport time\n```\n<!-- snippet: run -->\n```bash\necho hi\n```\n'
                  '```bash\nrm -rf /\n```\n```\n$ console\n```\n<!-- snippet: skip -->\n'
                  '\n```python\nx\n```\n')
  blocks, problems = parse(str(page))
  assert [(b.lang, b.mark, b.runs) for b in blocks] == [
      ('python', '', True), ('python', 'skip', False), ('bash', 'run', True),
      ('bash', '', False), ('', '', False), ('python', '', True)]
  assert blocks[2].code == 'echo hi\n' and blocks[0].line == 2
  assert len(problems) == 2  # The bare skip, and it is not right before its block.
  assert 'must say why' in problems[0] and 'not on the line right before' in problems[1]


def test_the_readme_train_state_snippet_is_run():
  readme = [b for b in all_blocks() if b.path.endswith('README.md')]
  assert any(b.runs and 'create_train_state' in b.code and 'load_split' in b.code
             for b in readme)
  assert any(b.runs and b.lang == 'bash' for b in readme)


@pytest.mark.slow
@pytest.mark.parametrize('block', [b for b in all_blocks() if b.runs], ids=str)
def test_snippet_runs_from_a_folder_outside_the_repository(block, tmp_path):
  proc = run_block(block, str(tmp_path))
  assert proc.returncode == 0, f'{block} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}'
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
