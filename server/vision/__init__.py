"""Face detection, face crops, the detector registry, checkpoints and batched inference.

Importing this package loads no model and no torch; import the submodules you need.
"""
