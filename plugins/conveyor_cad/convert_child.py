"""Child process of one conversion: read the pickled request on stdin, write the pickled outcome."""

from __future__ import annotations

import pickle
import sys
import traceback
from pathlib import Path

from conveyor_cad.records import ConversionError, Stage


def main() -> int:
    """Run the converter once; its exceptions become a ``ConversionError`` outcome."""
    request = pickle.loads(sys.stdin.buffer.read())
    result_path = Path(request["result"])
    try:
        out = request["converter"].convert(Path(request["source"]), Path(request["out_dir"]), request["options"])
        outcome: tuple[str, object] = ("ok", out)
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
        tb = traceback.format_exc(limit=6)
        sys.stdout.write(tb)
        outcome = ("error", ConversionError("conversion_failed", f"{type(exc).__name__}: {exc}"[:500], Stage.READ))
    sys.stdout.flush()
    with open(result_path, "wb") as fh:
        pickle.dump(outcome, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
