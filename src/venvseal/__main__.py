import sys

from venvseal.cli.main import main

sys.exit(main())
