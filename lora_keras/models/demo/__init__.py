"""The offline demo: a generated parallel corpus of invented languages (`corpus`) and the small T5
base trained on seven of them, shipped as a keras-hub preset in `preset/` (`base`; rebuilt by
`scripts/build_demo_base.py`, and built once and cached for any other `DemoConfig`)."""
