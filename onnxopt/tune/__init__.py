"""``onnxopt tune``: the fastest, smallest or leanest model within a fidelity budget.

Read in this order:

* ``space``     — the search space, built from every registered pass's ``search_space()`` hook
                  (``onnxopt.pass_api.SearchSpec``), with the presets as starting points;
* ``objective`` — fidelity metrics, budgets, the noise-aware choice of the best, the Pareto front;
* ``strategy``  — presets, then sensitivity-guided refinement, then a surrogate-ranked evolution;
  ``surrogate`` — the ridge model that ranks untried configurations;
* ``trial``     — one trial, a pure job: optimize, measure fidelity, size, latency;
* ``isolation`` — a job in a child process with a timeout and a memory limit; failures become records;
* ``executors`` — local, process pool, and (``ray_executor``) Ray: one interface for fan-out work;
* ``cache``     — trials cached by a hash of (model, DATA, configuration, settings, version);
* ``hosts``     — the hardware a trial ran on, and one timing at a time per host;
* ``search``    — ``tune(...)``: the loop that ties them together; ``results`` — the JSON report;
* ``batch``     — ``onnxopt batch``: optimize many models through the same executors.

``onnxopt.tune(...)`` (re-exported at the top of the package) is the Python API.
"""

from __future__ import annotations

from onnxopt.tune.search import TuneResult, tune

__all__ = ["TuneResult", "tune"]
