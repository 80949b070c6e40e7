"""`python -m flows.services up|down|status` (the infra/local/*.sh wrappers)."""

import sys

from flows.services import services_main

if __name__ == "__main__":
    sys.exit(services_main())
