"""`python -m stableavatar.service serve --stdio | resume JOBDIR` (the same as `stableavatar serve|resume`)."""
import sys

from .cli_commands import main

sys.exit(main())
