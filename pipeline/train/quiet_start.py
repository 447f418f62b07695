"""TensorFlow started without its C++ start-up notices, which a newcomer reads as errors.

On a machine without a GPU, importing TensorFlow writes straight to the process's stderr (below
Python, before its logging is set up) that oneDNN is on, that no CUDA driver was found, that
`cuInit` failed, and which CPU instructions it was not built for; later, INFO lines such as
"Memory patch applied" (dropped with TF_CPP_MIN_LOG_LEVEL=1). `start_quietly` imports it with
file descriptor 2 held, then writes back every line that is not one of those notices: a real
error still shows. On a machine with an NVIDIA device, CUDA's lines are kept (there they mean
something).
"""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

_NOTICES = [
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"cpu_feature_guard\.cc",
    r"^To enable the following instructions:",
    r"This TensorFlow binary is optimized to use available CPU instructions",
]
_CUDA_NOTICES = [
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"TF-TRT Warning: Could not find TensorRT",
    r"computation placer already registered",
]


def _has_gpu() -> bool:
    return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()


def is_notice(line: str, *, gpu: bool) -> bool:
    """Is `line` one of TensorFlow's start-up notices (not an error a user must see)?"""
    patterns = _NOTICES + ([] if gpu else _CUDA_NOTICES)
    return any(re.search(pattern, line) for pattern in patterns)


def start_quietly() -> None:
    """Import TensorFlow (when Keras runs on it) with its start-up notices left out."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow" or "tensorflow" in sys.modules:
        return
    # its C++ INFO lines come later too ("Memory patch applied" when a training starts): warnings
    # and errors still show; an operator's own setting wins
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    saved = os.dup(2)
    held: list[bytes] = []
    drain = threading.Thread(target=_drain, args=(read_end, held), daemon=True)
    drain.start()
    os.dup2(write_end, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA's probe (cuInit) runs here, not at import
    except ImportError:
        pass  # Keras says so itself, once it is asked for
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write_end)
        drain.join(timeout=10)
    gpu = _has_gpu()
    for line in b"".join(held).decode("utf-8", "replace").splitlines():
        if line.strip() and not is_notice(line, gpu=gpu):
            print(line, file=sys.stderr)


def _drain(read_end: int, held: list[bytes]) -> None:
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read(4096):
            held.append(chunk)
