"""Work functions for the runner's worker processes in tests (importable by spawned processes)."""

import os
import time


def sleepy(inst) -> str:
    """Answers at once for instances named 'fast', overruns every timeout otherwise."""
    if "fast" in inst.vnnlib:
        return "holds"
    time.sleep(1000)
    return "holds"


def crashing(inst) -> str:
    if "crash" in inst.vnnlib:
        os._exit(3)
    return "violated"


def timing_out(inst) -> str:
    """``timeout`` for an instance named ``late``, else the worker's process id as the verdict."""
    return "timeout" if "late" in inst.vnnlib else str(os.getpid())
