"""Errors a user can cause. Each carries one clear sentence naming the input and the fix.

The CLI prints ``str(err)`` without a traceback; Dagster steps fail with the same message.
"""


class StoryPipelineError(Exception):
    """Base class for errors caused by user input (files, paths, configuration)."""


class CorpusError(StoryPipelineError):
    """The clip corpus (folder, manifest, video file) is unusable as a whole."""


class IndexError_(StoryPipelineError):
    """The clip index is missing or unusable."""


class ConfigError(StoryPipelineError):
    """A configuration value is invalid."""


class InvalidInput(StoryPipelineError, ValueError):
    """An argument a user passed (a query, a limit, a filter) is out of range."""


class WriteError(StoryPipelineError, OSError):
    """An output file cannot be written where it was asked for (its folder is a file, not writable...)."""


class NotReady(StoryPipelineError):
    """A stage's input has not been produced yet (an upstream asset of the same shot or story has not run)."""
