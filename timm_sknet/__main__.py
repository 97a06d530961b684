"""``python -m timm_sknet``: the ``timm-sknet`` command."""
import sys

from .cli import main

sys.exit(main())
