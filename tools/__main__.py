import sys

from trident.tools.cli import main

sys.exit(main())
