"Checks on the installed package and the project's own metadata, outside any notebook."
import ast
from configparser import ConfigParser
from pathlib import Path
import importlib
import json
import re

import imas_lab

ROOT = Path(__file__).resolve().parents[1]


def settings():
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini'); return cfg['DEFAULT']


def test_version_matches_settings():
    assert imas_lab.__version__ == settings()['version']


def test_torch_pair_is_pinned_and_importable():
    reqs = settings()['requirements'].split()
    assert 'torch==2.14.0' in reqs and 'torchvision==0.29.2' in reqs
    import torch, torchvision
    assert torch.__version__.startswith('2.14.0') and torchvision.__version__.startswith('0.29.2')
    torchvision.ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)  # the op a mismatched pair fails to register


def test_clean_keeps_parameters_tag():
    "papermill finds its parameters cell by tag: nbdev_clean must be told to keep it."
    assert 'tags' in settings()['allowed_cell_metadata_keys'].split()


def test_readme_names_install_and_test_commands():
    lines = (ROOT / 'README.md').read_text().splitlines()
    assert 'pip install -e ".[dev]"' in lines
    assert 'OMP_NUM_THREADS=1 nbdev_test && pytest tests' in lines


def test_every_module_comes_from_a_notebook():
    "Each imas_lab/*.py but __init__ and _modidx is generated from a notebook in nbs/."
    for py in (ROOT / 'imas_lab').glob('*.py'):
        if py.name in ('__init__.py', '_modidx.py'): continue
        head = py.read_text().split('\n')[:4]
        src = next(l for l in head if 'File to edit:' in l).split('File to edit: ')[1].rstrip('.').strip()
        assert (py.parent / src).resolve().exists(), f'{py.name} names {src}, which does not exist'


# The spec outside the repository, which a clone does not have (split so that a grep for them finds only real citations).
DEAD_CITATIONS = ('../' 'shared', 'METHOD' '.md')


def user_docs():
    "The package's modules and every document a user reads."
    yield from (ROOT / 'imas_lab').glob('*.py')
    yield from (ROOT / p for p in ('README.md', 'data/README.md', 'bench/README.md'))
    yield from (ROOT / 'nbs').glob('*.ipynb')


def test_no_citation_outside_the_repository():
    "The method is cited as nbs/00_method.ipynb, never as a file outside the repository."
    found = [f'{p.relative_to(ROOT)}: {s}' for p in user_docs() for s in DEAD_CITATIONS if s in p.read_text()]
    assert not found, found


def method_table_names() -> list[str]:
    "The backticked `module.name` references of 00_method's tables whose module is one of imas_lab's."
    nb = json.loads((ROOT / 'nbs' / '00_method.ipynb').read_text())
    modules = {p.stem for p in (ROOT / 'imas_lab').glob('*.py') if not p.stem.startswith('_')}
    rows = [l for c in nb['cells'] if c['cell_type'] == 'markdown' for l in ''.join(c['source']).splitlines()
            if l.startswith('|')]
    refs = re.findall(r'`([a-z_]+)\.([A-Za-z_][\w.]*)`', '\n'.join(rows))
    return [f'{m}.{name}' for m, name in refs if m in modules]


def test_method_notebook_names_real_functions():
    "Every function 00_method's per-step table names exists in the package."
    names = method_table_names()
    assert len(names) >= 20, names
    missing = []
    for name in names:
        obj = importlib.import_module(f'imas_lab.{name.split(".")[0]}')
        for attr in name.split('.')[1:]: obj = getattr(obj, attr, None)
        if obj is None: missing.append(name)
    assert not missing, f'00_method names {missing}, which imas_lab lacks'


def test_method_notebook_names_what_training_calls():
    "The hardness and augmentation functions iMAS's views call are the ones 00_method names."
    from imas_lab import augment, hardness, step
    called = {f'{m.__name__.split(".")[-1]}.{n}' for m in (hardness, augment) for n in step.imas_views.__code__.co_names
              if callable(getattr(m, n, None)) and getattr(m, n).__module__ == m.__name__}
    assert {'hardness.hardness_from_labels', 'augment.adaptive_mix'} <= called, called
    assert called <= set(method_table_names()), called - set(method_table_names())


# The import graph of the package: no circle, and each notebook's module imports only modules of earlier notebooks.
# `python tests/test_package.py` prints both reports.

PACKAGE = 'imas_lab'


def module_imports(root=ROOT / PACKAGE) -> dict:
    "`{module: {imported module, ...}}` over the package's modules, imports inside functions included."
    mods = {p.stem for p in root.glob('*.py') if p.name not in ('__init__.py', '_modidx.py')}
    graph = {}
    for m in sorted(mods):
        found = set()
        for node in ast.walk(ast.parse((root / f'{m}.py').read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level == 0 and not base.startswith(PACKAGE): continue
                base = base.removeprefix(PACKAGE).lstrip('.')
                found |= {base.split('.')[0]} if base else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name.split('.')[1] for a in node.names if a.name.startswith(PACKAGE + '.')}
        graph[m] = (found & mods) - {m}
    return graph


def import_circles(graph=None) -> list:
    "The sets of modules that import each other, directly or through others (strongly connected, two or more)."
    graph = graph or module_imports()
    index, low, stack, circles = {}, {}, [], []
    def visit(v):  # Tarjan's algorithm
        index[v] = low[v] = len(index); stack.append(v)
        for w in graph[v]:
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in stack: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = set()
            while not scc or v not in scc: scc.add(stack.pop())
            if len(scc) > 1: circles.append(scc)
    for v in graph:
        if v not in index: visit(v)
    return circles


def notebook_of(module: str) -> str:
    "The notebook a module is exported from (its `File to edit:` line)."
    head = (ROOT / PACKAGE / f'{module}.py').read_text().split('\n')[:4]
    return Path(next(l for l in head if 'File to edit:' in l).split('File to edit: ')[1].rstrip('.').strip()).name


def later_imports(graph=None) -> list:
    "`(module, its notebook, imported module, its notebook)` for each import of a module whose notebook sorts later."
    graph = graph or module_imports()
    return [(m, notebook_of(m), d, notebook_of(d)) for m in sorted(graph) for d in sorted(graph[m])
            if notebook_of(d) > notebook_of(m)]


def test_no_import_circle():
    circles = import_circles()
    assert not circles, f'modules that import each other: {circles}'


def test_import_circles_are_found():
    test = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
    assert import_circles(test) == [{'a', 'b', 'c'}] and import_circles({'a': set(), 'b': {'a'}}) == []
    graph = module_imports()
    assert 'profiling' in graph['bench'] and 'bench' not in graph['profiling']  # one direction only


def test_notebooks_import_only_earlier_ones():
    "Each notebook's module imports only modules of notebooks whose file names sort before its own."
    later = later_imports()
    assert not later, 'imports of later notebooks:\n' + '\n'.join(f'{m} ({a}) imports {d} ({b})' for m, a, d, b in later)


if __name__ == '__main__':
    print('import circles:', import_circles() or 'none')
    print('imports of later notebooks:', *(f'{m} ({a}) -> {d} ({b})' for m, a, d, b in later_imports()) or ['none'],
          sep='\n  ')
