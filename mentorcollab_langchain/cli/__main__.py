"""``python -m mentorcollab_langchain.cli ...`` is ``mentorcollab ...``."""

import sys

from mentorcollab_langchain.cli import main

sys.exit(main())
