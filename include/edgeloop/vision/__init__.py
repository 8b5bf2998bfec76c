"""Images from smart cameras: procedural frames, image features for drift, a small classifier that runs on pixels."""
