import sys

from presencex.cli import main

sys.exit(main())
