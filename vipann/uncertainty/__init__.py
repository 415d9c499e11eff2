"""Decompositions of Monte-Carlo predictive uncertainty into aleatoric and epistemic parts.

Every function here takes Monte-Carlo probabilities of shape ``(S, B, C)``: ``S`` stochastic forward
passes (MC-dropout masks, Flipout weight samples, ensemble members), ``B`` clips and ``C`` classes. A
2-d ``(B, C)`` tensor is read as a single sample (``S = 1``), in which case the epistemic part is 0.

Two readings of the class axis are supported, chosen by ``multilabel``:

* ``multilabel=False`` (multi-class): each row ``probs[s, b]`` is one categorical distribution over
  the ``C`` classes (softmax outputs), so it must sum to 1.
* ``multilabel=True`` (multi-label, e.g. AudioSet): the ``C`` entries are independent Bernoulli
  probabilities (sigmoid outputs); per-class binary quantities are summed over the classes.

Large inputs are processed in chunks of clips, so the extra memory stays a small multiple of one chunk
(``chunk_size`` clips, by default about 4M elements) rather than several copies of the whole input.
"""

from vipann.uncertainty.decomposition import (
    Decomposition,
    binary_entropy,
    decompose,
    decompose_variance,
    entropy,
    validate_probs,
)

__all__ = [
    "Decomposition",
    "binary_entropy",
    "decompose",
    "decompose_variance",
    "entropy",
    "validate_probs",
]
