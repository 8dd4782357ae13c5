"""The backend service: a warm worker speaking JSON lines on stdio (see docs/protocol.md).

protocol.py  message building, parsing and validation (no torch)
jobdir.py    the job directory: request, lock, checkpoint paths, atomic writes (no torch)
logs.py      stderr + rotating file logging, per-job log files
runner.py    runs one job on an Engine: hooks -> events, per-step checkpoint, preview JPEG
oom.py       out-of-memory detection, memory release and the "what would fit" hint
worker.py    `serve --stdio`: reader thread, FIFO queue, cancel, shutdown
environment.py  device/dtype defaults, versions, GPU and weight search paths without an engine
resume.py    `resume JOBDIR` from the shell
cli_commands.py  argparse wiring for the two subcommands
"""
