import sys

from reprolab.cli import main

sys.exit(main())
