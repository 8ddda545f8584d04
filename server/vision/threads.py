"""How many threads one torch or OpenCV call may use (``OP_THREADS``).

Both libraries default to one thread per core for every call, which is what the server and the
CLI use unless the operator caps it (for example to leave cores to other services). One thread
per call does not buy a server throughput on 2 cores: bench/throughput.py measured 8 checks at
once within 4 % either way, while one check alone took 11–12 % longer.
"""

from __future__ import annotations

import cv2
import torch


def set_op_threads(threads: int) -> None:
    """Cap torch's and OpenCV's per-call threads (process-wide); 0 leaves their defaults."""
    if threads > 0:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
