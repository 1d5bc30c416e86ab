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
    test process keeps its own. A script imports its siblings (`harness`)
    from its own folder, which is first on `sys.path` as on the command
    line while it loads.
    """
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    search_path = [str(path.parent), *sys.path]
    with (
        mock.patch.dict(os.environ),
        mock.patch.object(sys, "path", search_path),
    ):
        spec.loader.exec_module(module)
    return module
