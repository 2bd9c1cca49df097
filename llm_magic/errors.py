"""Exceptions of the core (no IPython here). The magics turn the user-facing ones into ``UsageError``."""


class LLMMagicError(Exception):
    """Base class. Subclasses marked ``user_error`` are the user's to fix and show without a traceback."""

    user_error = False


class ConfigError(LLMMagicError, ValueError):
    """Bad settings, flags or model specs."""

    user_error = True


class ModelNotFound(LLMMagicError, FileNotFoundError):
    """No model configured, or its file does not exist."""

    user_error = True


class ModelLoadError(LLMMagicError, RuntimeError):
    """A model file exists but llama.cpp could not load it; the message says why."""

    user_error = True


class ModelTooLarge(ModelLoadError, MemoryError):
    """The model's memory estimate does not fit ``memory_budget`` or the RAM available: refused
    before loading (never a kernel killed by the OOM killer); the message says what would fit."""

    user_error = True


class PromptTooLong(LLMMagicError, ValueError):
    """The prompt does not fit in the model's context window."""

    user_error = True


class CacheClosed(LLMMagicError, RuntimeError):
    """The model cache was shut down (``cleanup_models()``) while waiting."""


class LoadTimeout(LLMMagicError, TimeoutError):
    """The deadline passed while the model was still loading (the load goes on in the background)."""
