"""diffusion-regimes: measure the speciation and collapse regimes of diffusion models.

See DESIGN.md of the project for the physics and the file contract between stages.
"""

__version__ = "0.1.0"
