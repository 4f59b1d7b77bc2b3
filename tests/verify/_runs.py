"""Work functions for the runner's worker processes in tests (importable by spawned processes)."""

import time


def sleepy(inst) -> str:
    """Answers at once for instances named 'fast', overruns every timeout otherwise."""
    if "fast" in inst.vnnlib:
        return "holds"
    time.sleep(1000)
    return "holds"


def crashing(inst) -> str:
    import os

    if "crash" in inst.vnnlib:
        os._exit(3)
    return "violated"
