"""spark-submit entry point: MERGE the due onboarding ticks into delta/companies (`fleetgen onboard`).

spark-submit --properties-file spark-defaults.conf jobs/onboard_companies.py --config small
"""

from __future__ import annotations

import sys

from fleetgen_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["onboard", *sys.argv[1:]]))
