"""Loading the repository's standalone scripts (examples, benchmarks)."""

import importlib.util
import os
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent


def load_script(relative_path):
    """Import `ROOT / relative_path` as a module, without running `main()`.

    Scripts set thread defaults in `os.environ` for their own process; the
    test process keeps its own. A script imports its siblings (`harness`,
    `quality_models`), at load and later, from its own folder, which is on
    `sys.path` as on the command line (and stays there).
    """
    path = ROOT / relative_path
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(os.environ):
        spec.loader.exec_module(module)
    return module
