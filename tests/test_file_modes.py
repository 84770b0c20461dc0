"""Result files are readable as the umask allows, like files made by open()."""

import os
import stat

import pytest

from digits_jax import results


@pytest.mark.parametrize('mask', [0o022, 0o077, 0o002])
def test_atomic_files_follow_the_umask(tmp_path, mask):
  old = os.umask(mask)
  try:
    assert results.current_umask() == mask
    results.write_text(str(tmp_path / 'a.json'), '{}\n')
    with open(tmp_path / 'b.json', 'w') as f:  # What a plain open() makes.
      f.write('{}\n')
  finally:
    os.umask(old)
  mode = stat.S_IMODE(os.stat(tmp_path / 'a.json').st_mode)
  assert mode == stat.S_IMODE(os.stat(tmp_path / 'b.json').st_mode) == 0o666 & ~mask
  assert not [f for f in os.listdir(tmp_path) if f.startswith('.')]  # No temporary left.
