import sys

from osbuilder.cli import main

sys.exit(main())
