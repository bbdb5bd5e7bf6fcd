"""``python -m dobj dev ...``: the same as the ``dobj`` command (dobj.cli)."""
import sys

from .cli import main

sys.exit(main())
