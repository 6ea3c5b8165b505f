import sys

from lima_lite.cli import main

sys.exit(main())
