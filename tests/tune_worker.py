"""A tuning run in its own process, for the tests that share an Optuna study between processes and
interrupt a run with SIGINT: ``python tune_worker.py STORAGE STUDY MAX_TRIALS LOG [SLEEP]``.

The model is the PyTorch MLP twin with fixed random weights; the metric is top-1 agreement with the
float model on 128 random inputs. It prints one JSON line: the trials this process ran, the best
trial's number and metric, and whether it was interrupted.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    storage, study, max_trials, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    sleep = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    import signal

    # Ctrl-C as on a terminal: a process started in the background by a non-interactive shell inherits
    # SIGINT ignored, and Python then installs no KeyboardInterrupt handler (the test's SIGINT would be lost)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import numpy as np
    import torch

    import slimkit
    from twins import sample_input, twin_pair

    torch.set_num_threads(1)
    model = twin_pair("mlp", seed=3, frameworks=("torch",))["torch"]
    x = sample_input("mlp", "torch", n=128, seed=5)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    recipe = {"version": 1, "seed": 0, "fine_tune": None,
              "stages": [{"quantize": {"method": "static", "activations": {"samples": 32}}}],
              "tune": {"strategy": "optuna", "tolerance": {"relative": 0.0}, "max_trials": max_trials,
                       "sampler": "random", "space": {"calibration": ["minmax", "percentile"]},
                       "log": log}}
    if storage != "-":
        recipe["tune"].update(storage=storage, study=study)
    if sleep:  # slow trials down so that a signal lands in the middle of the run
        from slimkit.tune import trial

        run = trial.TrialRunner.run

        def slow(self, *args, **kwargs):
            time.sleep(sleep)
            return run(self, *args, **kwargs)

        trial.TrialRunner.run = slow
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = slimkit.compress(model, recipe, calib_data=x, eval_data=(x, y.astype(np.int64)), verbose=True)
    tuning = result.report.tuning
    from slimkit.tune.trial import worker_name

    mine = [t.number for t in tuning.trials if t.worker == worker_name()]
    print(json.dumps({"trials": [t.number for t in tuning.trials], "workers": sorted({t.worker for t in tuning.trials}),
                      "best": tuning.best, "metric": tuning.best_trial.metric, "interrupted": tuning.interrupted,
                      "mine": mine}), flush=True)


if __name__ == "__main__":
    main()
