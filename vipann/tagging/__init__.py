"""Drop-in replacements for panns-inference's ``AudioTagging`` and ``SoundEventDetection``, with uncertainty.

* :mod:`~vipann.tagging.audio_tagging`: :class:`AudioTagging` (clip-level tags and embeddings).
* :mod:`~vipann.tagging.sed`: :class:`SoundEventDetection` (framewise tags, per-frame uncertainty).
* :mod:`~vipann.tagging.weights`: where their weights are found (``checkpoint_path``,
  ``~/panns_data``, the zoo), and :class:`CheckpointNotFoundError` when they are nowhere.
"""

from vipann.tagging.audio_tagging import AudioTagging
from vipann.tagging.sed import DEFAULT_SED_MODEL, SoundEventDetection
from vipann.tagging.weights import DEFAULT_MODEL, CheckpointNotFoundError, panns_data_dir

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_SED_MODEL",
    "AudioTagging",
    "CheckpointNotFoundError",
    "SoundEventDetection",
    "panns_data_dir",
]
