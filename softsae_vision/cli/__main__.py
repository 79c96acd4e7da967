import sys

from softsae_vision.cli import main

sys.exit(main())
