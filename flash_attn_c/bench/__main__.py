"""``python -m flash_attn_c.bench``: see :mod:`flash_attn_c.bench.cli`."""
import sys

from .cli import main

sys.exit(main())
