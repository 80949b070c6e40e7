"""`python -m flows.ops.services up|down|status` (the infra/local/*.sh wrappers)."""

import sys

from flows.ops.services import services_main

if __name__ == "__main__":
    sys.exit(services_main())
