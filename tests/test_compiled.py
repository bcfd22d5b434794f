"""Which build of the hot path a test run exercises.

`make test` runs the whole suite on the development install (plain Python), then the hot-path tests again on the
compiled build in .venv-fast (mypyc, docs/performance.md "The compiled build") with LIVEPULSE_EXPECT_COMPILED=1. This
test makes either run fail when it is not testing what it claims: a compiled module left in the source tree would
silently shadow the source being edited, and a compiled run that imported the source tree would test nothing compiled.
"""

import os

import streams
from streams import processor
from streams.domain import event, presence, windows
from streams.ingest import decode

HOT_MODULES = (event, presence, windows, decode, processor)


def test_the_hot_path_is_the_build_this_run_expects():
    expect_compiled = os.environ.get("LIVEPULSE_EXPECT_COMPILED") == "1"
    files = {m.__name__: m.__file__ for m in HOT_MODULES}
    compiled = {name for name, path in files.items() if not path.endswith(".py")}
    if expect_compiled:
        assert compiled == set(files), f"expected every hot module compiled: {files}"
        assert streams.hot_path() == "compiled"
    else:
        assert not compiled, f"compiled modules shadow the source tree: {files} (make clean, or delete them)"
        assert streams.hot_path() == "interpreted"
