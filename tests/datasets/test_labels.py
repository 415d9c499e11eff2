from vipann.datasets.labels import get_labels
from vipann.datasets.synthetic import AUDIOSET_CLASSES


def test_shipped_synthetic_labels_match_the_generator():
    # the demo zoo's label file must follow the generator's class order
    assert get_labels("synthetic") == AUDIOSET_CLASSES
