"""One sweep end to end: base model -> tokens (once) -> baseline -> trials -> tables and reports.

`run_sweep` makes the oracle (which checks the arguments at once), then runs the sweep in this
process's role: alone (`run_locally`), as a distributed sweep's worker (`run_as_worker`) or its
chief (`serve_as_chief`), each in `tuners.roles`; preparing the inputs is `tuners.prepare`'s.

Example:
```python
rows = run_sweep(SweepConfig(space=SearchSpace(ranks=(1, 4), batch_sizes=(8,)), epochs=1))
```
"""

import time

from tuners.cluster import CHIEF
from tuners.prepare import make_sweep_oracle
from tuners.roles import run_as_worker, run_locally, serve_as_chief
from tuners.sweep_config import SweepConfig


def run_sweep(config: SweepConfig) -> list[dict]:
    """Run (or resume) the sweep described by `config`.

    With `config.cluster`, this process is the chief (serves the trials, writes the tables and
    reports) or a worker (runs trials the chief hands out).

    Args:
        config: the sweep.

    Returns:
        One row per trial (as `results.csv` holds them); none in a worker.

    Example: `run_sweep(SweepConfig(model="tiny", epochs=1))[0]["status"]` -> `"COMPLETED"`.
    """
    started = time.perf_counter()
    oracle = make_sweep_oracle(config)  # before the model loads: a bad strategy or target says so at once
    cluster = config.cluster
    if cluster is None:
        return run_locally(config, oracle, started)
    cluster.export()  # keras-tuner reads its part from the environment
    if cluster.role == CHIEF:
        return serve_as_chief(config, oracle, started)
    return run_as_worker(config, oracle)
