"""The backend service: a warm worker speaking JSON lines on stdio (see docs/protocol.md).

jobdir.py    the job directory: request, lock, checkpoint paths, atomic writes (no torch)
logs.py      stderr + rotating file logging, per-job log files
runner.py    runs one job on an Engine: hooks -> events, per-step checkpoint, preview JPEG
worker.py    `serve --stdio`: reader thread, FIFO queue, cancel, shutdown
resume.py    `resume JOBDIR` from the shell
cli_commands.py  argparse wiring for the two subcommands
"""
