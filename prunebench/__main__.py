import sys

from prunebench.runner.cli import main

sys.exit(main())
