"""slimkit's Keras adapter (Keras 3 and tf_keras). Importing it loads no framework."""

from .adapter import KerasAdapter

__all__ = ["KerasAdapter"]
