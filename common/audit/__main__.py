"""``python -m common.audit ...``: see ``common.audit.cli``."""

import logging
import sys

from common.audit.cli import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(sys.argv[1:])
