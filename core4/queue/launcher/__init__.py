"""Job processes: a warm launcher per Python environment forks (or, in
``spawn`` mode, starts) one process per job, which runs the job and
reports its outcome to its worker.

* :mod:`core4.queue.launcher.launcher`: the launchers, a worker's side
* :mod:`core4.queue.launcher.server`: the launcher process (``python -m
  core4.queue.launcher``)
* :mod:`core4.queue.launcher.child`: its children: a job process's start,
  the spare forked ahead and its prime
* :mod:`core4.queue.launcher.environments`: one launcher per environment
* :mod:`core4.queue.launcher.process`: what runs inside a job process
* :mod:`core4.queue.launcher.output`: a job's output into its capture file
* :mod:`core4.queue.launcher.runner`: run one claimed job
* :mod:`core4.queue.launcher.jobprocess`: a worker's view of a job process

This package imports nothing: the launcher process starts from here.
"""
