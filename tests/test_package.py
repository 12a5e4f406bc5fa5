"Checks on the installed package and the project's own metadata, outside any notebook."
from configparser import ConfigParser
from pathlib import Path
import json

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
    assert 'nbdev_test && pytest tests' in lines


def test_every_module_comes_from_a_notebook():
    "Each imas_lab/*.py but __init__ and _modidx is generated from a notebook in nbs/."
    for py in (ROOT / 'imas_lab').glob('*.py'):
        if py.name in ('__init__.py', '_modidx.py'): continue
        head = py.read_text().split('\n')[:4]
        src = next(l for l in head if 'File to edit:' in l).split('File to edit: ')[1].rstrip('.').strip()
        assert (py.parent / src).resolve().exists(), f'{py.name} names {src}, which does not exist'
