"""Grading a learner's table against the answer key the generator knows (`fleetgen grade`, `fleetgen exercises`)."""
