"""`python -m optlab.cli ...` runs the `optlab` command."""
import sys

from optlab.cli.main import main

sys.exit(main())
