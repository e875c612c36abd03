"""Errors raised by the converter."""


class ConversionError(Exception):
    """A model or argument the converter cannot turn into a bundle.

    The message names the offending layer, op, tensor or argument and says
    what was expected.
    """
