"""The shot farm: many shots on a Ray cluster (docs/scale.md). One Ray actor per GPU (or per N GPUs, or per N
CPU slots) keeps the models loaded and takes shots from the queue; a shot whose actor dies is retried by Ray on a
restarted actor and resumes from its job folder's checkpoint; a shot with bad input fails alone.

shots.py (SHOTS.json, no ray), runner_actor.py and manager.py (the Ray actors), client.py (the driver side:
connect, submit, follow, cancel), cli.py (`stableavatar farm ...`). Only runner_actor, manager and client import
ray, and only the farm commands import them: the rest of the backend runs without ray installed.
"""
