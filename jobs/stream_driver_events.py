"""spark-submit entry point: generate the closed intervals into delta/driver_events (`fleetgen events`).

spark-submit --properties-file spark-defaults.conf jobs/stream_driver_events.py --config small
"""

from __future__ import annotations

import sys

from fleetgen_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["events", *sys.argv[1:]]))
