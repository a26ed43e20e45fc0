"""Child process of one conversion: run the converter once and write the pickled outcome.

Started either as ``python -m conveyor_cad.convert_child`` (request pickled on stdin) or
forked from the warm fork server (``isolation.run_converter``).
"""

from __future__ import annotations

import pickle
import sys
import traceback
from pathlib import Path
from typing import Any

from conveyor_cad.records import ConversionError, Stage


def execute(converter: Any, source: Path, out_dir: Path, options: Any, result_path: Path) -> None:
    """Run the converter; every exception becomes a ``ConversionError`` outcome in ``result_path``."""
    try:
        outcome: tuple[str, object] = ("ok", converter.convert(source, out_dir, options))
    except ConversionError as exc:
        outcome = ("error", exc)
    except ImportError as exc:
        # a library the converter imports without ``require``: still name the fix
        outcome = ("error", ConversionError("missing_dependency", f"{exc.name or exc} is not installed; install "
                                            "the converter's dependencies (first-party: pip install "
                                            "'conveyor-jobs[cad]')", Stage.READ))
    except MemoryError:
        outcome = ("error", ConversionError("conversion_failed", "the converter ran out of memory "
                                            "(raise CONVEYOR_CAD_MEMORY_MB if the file is legitimately large)",
                                            Stage.READ))
    except RecursionError:
        outcome = ("error", ConversionError("conversion_failed", "the input nests too deeply to read", Stage.READ))
    except Exception as exc:
        sys.stdout.write(traceback.format_exc(limit=6))
        outcome = ("error", ConversionError("conversion_failed", f"{type(exc).__name__}: {exc}"[:500], Stage.READ))
    sys.stdout.flush()
    sys.stderr.flush()
    with open(result_path, "wb") as fh:
        pickle.dump(outcome, fh)


def main() -> int:
    """Read the pickled request on stdin and execute it."""
    r = pickle.loads(sys.stdin.buffer.read())
    execute(r["converter"], Path(r["source"]), Path(r["out_dir"]), r["options"], Path(r["result"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
