"""Train the example net data-parallel: the rows of every batch are shared out over processes.

    mpiexec -n 2 python -m mpi4py examples/train_distributed.py
    mpiexec -n 3 python -m mpi4py examples/train_distributed.py --synthetic 2000 --json

This is examples/train.py, with its flags, data, split, model, seed and batches, run with
``distributed=True``: its BatchNorm1d layers become SyncBatchNorm, the model is wrapped in
DistributedDataParallel, and each process takes its share of the rows of every batch (shares
differ by a row when the batch does not divide evenly). After each backward every process
holds the whole batch's gradient, so the reported test RMSE is that of ``python
examples/train.py`` with the same flags, whatever the number of processes, to rounding (with
the defaults, 54.94233927078513 on 1, 2 and 3 processes here). Process 0 prints the results.
``python -m mpi4py`` makes an error on one process end the whole job.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train.py, beside this file

import train  # noqa: E402  (examples/train.py)

if __name__ == "__main__":
    sys.exit(train.main(distributed=True))
