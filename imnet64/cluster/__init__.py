"""Where a process runs.

The one reader of the environment, Horovod, launchers, preemption, Slurm scripts, machine facts.
"""
