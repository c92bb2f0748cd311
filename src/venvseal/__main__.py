import sys

from venvseal.cli import main

sys.exit(main())
