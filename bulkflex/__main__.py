import sys

from bulkflex.cli import main

sys.exit(main())
