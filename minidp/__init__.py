"""minidp: minimal diffusion models for visual perception.

One concept per module; see DESIGN.md in the shared design folder and README.md for the map.
Modules import only torch, numpy and each other (matplotlib only in viz.py, yaml only in config.py).
"""

__version__ = "0.1.0"
