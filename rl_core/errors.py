"""Exception types raised by rl_core.

Every error a user can trigger with bad input derives from :class:`RLCoreError`, so callers (the CLI,
the web app) can catch one type and show its message without a traceback.
"""

from __future__ import annotations


class RLCoreError(Exception):
    """Base class of every rl_core error that a user can cause and fix."""


# --- audio -----------------------------------------------------------------------------------------
class AudioError(RLCoreError):
    """A recording could not be used."""


class AudioFileNotFoundError(AudioError, FileNotFoundError):
    """The audio file does not exist."""


class UnsupportedAudioFormatError(AudioError):
    """The file extension is not an audio format rl_core reads."""


class AudioDecodeError(AudioError):
    """The file has an audio extension but its content cannot be decoded (truncated, not audio)."""


class TruncatedAudioError(AudioDecodeError):
    """The WAV header declares more audio than the file holds (copy interrupted, recorder lost power)."""


class EmptyAudioError(AudioError):
    """The file decodes but holds no samples (or is 0 bytes long)."""


class InvalidAudioValuesError(AudioError):
    """The samples contain NaN or infinite values."""


class InvalidAudioTensorError(AudioError, ValueError):
    """A tensor passed to a model has the wrong rank, dtype or length."""


class UnsupportedSampleRateError(AudioError):
    """The recording's sample rate is outside what rl_core analyses (a damaged or mislabelled header)."""


class LimitExceededError(RLCoreError):
    """An analysis would exceed a configured limit (duration, window count); the message names the setting."""


# --- models, configs and registry -----------------------------------------------------------------
class ConfigError(RLCoreError, ValueError):
    """A model spec, YAML file or keyword argument is invalid (unknown key, wrong type)."""


class UnknownModelError(RLCoreError, KeyError):
    """No model (or model class) is registered under that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# --- checkpoints -----------------------------------------------------------------------------------
class CheckpointError(RLCoreError):
    """A checkpoint could not be resolved, downloaded or applied."""


class CheckpointNotAvailableError(CheckpointError):
    """The checkpoint is not on this machine and cannot be downloaded (offline, 404, ...)."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint would execute code when unpickled; it was refused."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's parameter names or shapes do not match the model."""


class ChecksumMismatchError(CheckpointError):
    """A downloaded file's sha256 differs from the expected value."""


class MissingDependencyError(RLCoreError, ImportError):
    """An optional package needed for this operation is not installed."""


# --- evaluation --------------------------------------------------------------------------------------
class DatasetError(RLCoreError, ValueError):
    """A labelled dataset cannot be used as given (missing files, unknown labels, too few examples)."""
