"""The long-running service: REST in front of the pause/resume state machine over the two queries."""
