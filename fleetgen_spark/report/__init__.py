"""The report of a data directory (`fleetgen report`): read its tables, check them, draw and write them."""
