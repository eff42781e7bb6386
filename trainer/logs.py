"""One logging setup for every entry point: timestamps, rank-0 only, third-party noise turned down."""

from __future__ import annotations

import logging
import os
import warnings

# Library chatter that says nothing actionable to a seqrec user (deprecations inside torchrec/torchdata, and the
# pipeline's notice that a lookup whose input the model builds itself is not pipelined, which is by design).
_QUIET = ("torchrec", "torch.distributed", "torch.fx", "fbgemm_gpu", "torchx.runner", "MethodLogger")


class _DropKernelChatter(logging.Filter):
    """FBGEMM logs every table's constructor arguments through the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and str(record.msg).startswith("[TBE="))


def setup_logging(verbose: bool = False) -> None:
    """Configure the root logger (forcefully: torchrec installs handlers at import); non-zero ranks log warnings."""
    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if verbose else logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True
    )
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_DropKernelChatter())
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.ERROR)
        for category in (UserWarning, FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
