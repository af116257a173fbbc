"""The error types of bad input. Torch-free, so the configuration layer can raise them
without importing torch.

Every :class:`InputError` message is one line that names the offending file or key and
the fix; the stage wrapper and the command line print it as ``diffusion-regimes: ...``
without a traceback.
"""

from __future__ import annotations


class InputError(RuntimeError):
    """Bad input (config, data file, checkpoint): the message is one line that
    names the problem and the fix."""


class ConfigError(InputError):
    """A bad configuration; the message is one line naming the key."""
