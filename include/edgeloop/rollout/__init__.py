"""Roll a model version out to edge groups in waves, gate each wave on device feedback, roll back on failure."""
