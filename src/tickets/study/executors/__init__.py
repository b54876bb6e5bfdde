"""Distributed study executors: ``tickets run STUDY.yaml --executor ray|slurm``.

``base.py`` holds what they share (the job function every worker calls, resources per job family, the scheduling
loop with progress and ETA); ``ray.py`` runs each job as a Ray task, ``slurm.py`` as a Slurm job through
submitit. Both are registered in ``tickets.study.execute.EXECUTORS`` and import their engine only when chosen.
"""
