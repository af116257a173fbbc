"""diffusion-regimes: measure the speciation and collapse regimes of diffusion models.

See docs/design.md of the repository for the physics, the file contract between stages and
which module owns which concept.
"""

__version__ = "0.1.0"
