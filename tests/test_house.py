"""The house rules, checked on the source with ast: the import graph of digits_jax has no
cycle and no module imports a digits_jax module inside a function (which would hide one),
and no module is over 450 lines nor any function over 60."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       'digits_jax')
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
# Entry points whose `--help` and `--dry_run` answer before JAX is imported: their
# main path may import the library inside a function (the graph must stay acyclic).
ENTRY_POINTS = ('main', 'predict')
# A worker process's entry: it sets JAX_PLATFORMS before it imports JAX (the sweep's drawing worker).
WORKER_ENTRIES = ('sweep_outputs',)


def modules():
  """{module name: parsed source} of every module of the package."""
  out = {}
  for name in sorted(os.listdir(PACKAGE)):
    if name.endswith('.py'):
      with open(os.path.join(PACKAGE, name), encoding='utf-8') as f:
        out[name[:-3]] = ast.parse(f.read(), name)
  return out


def imported(node, package_modules):
  """The digits_jax modules that one import statement imports."""
  if isinstance(node, ast.Import):
    names = [a.name for a in node.names]
  elif node.module == 'digits_jax':
    names = ['digits_jax.' + a.name for a in node.names]
  else:
    names = [node.module or '']
  return {n.split('.')[1] for n in names
          if n.startswith('digits_jax.') and n.split('.')[1] in package_modules}


def imports(tree, package_modules):
  """(every digits_jax module imported anywhere, those imported inside a function)."""
  everywhere, in_functions = set(), set()
  for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef,
                                                           ast.AsyncFunctionDef))]:
    for node in ast.walk(func):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        in_functions |= imported(node, package_modules)
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      everywhere |= imported(node, package_modules)
  return everywhere, in_functions


def find_cycle(graph):
  """One cycle of `graph` ({node: successors}) as a list of nodes, else None."""
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 'open':
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    state[node] = 'done'
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_find_cycle_finds_one():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': set()}) is None


def test_the_import_graph_has_no_cycle_even_through_function_level_imports():
  trees = modules()
  graph = {name: imports(tree, trees)[0] - {name} for name, tree in trees.items()}
  assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph))


def test_no_library_module_imports_digits_jax_inside_a_function():
  trees = modules()
  hidden = {name: sorted(imports(tree, trees)[1]) for name, tree in trees.items()
            if name not in ENTRY_POINTS + WORKER_ENTRIES}
  assert {k: v for k, v in hidden.items() if v} == {}


def test_modules_and_functions_are_small():
  too_long = []
  for name, tree in modules().items():
    with open(os.path.join(PACKAGE, name + '.py'), encoding='utf-8') as f:
      lines = len(f.read().splitlines())
    if lines > MAX_MODULE_LINES:
      too_long.append(f'{name}.py: {lines} lines')
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > MAX_FUNCTION_LINES:
          too_long.append(f'{name}.{node.name}: {length} lines')
  assert too_long == []


@pytest.mark.parametrize('entry', ENTRY_POINTS)
def test_entry_points_exist(entry):
  assert entry in modules()
