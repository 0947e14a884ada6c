"""The offline demo: a generated parallel corpus of invented languages (`corpus`) and the
small T5 base trained on it once and cached as a keras-hub preset (`base`)."""
