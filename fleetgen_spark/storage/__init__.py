"""The data directory: every path and small file of one, local or remote; its lock or lease; its logs and history."""
