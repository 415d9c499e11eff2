"""The papers and credits a model card cites, per architecture family and method (data for :mod:`vipann.zoo.cards`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vipann.models.families import family_of
from vipann.models.pann import ARCHITECTURES

__all__ = ["METHOD_CITATIONS", "citations", "credits"]

_CITATIONS = {
    "panns": """@article{kong2020panns,
  title   = {{PANNs}: Large-Scale Pretrained Audio Neural Networks for Audio Pattern Recognition},
  author  = {Kong, Qiuqiang and Cao, Yin and Iqbal, Turab and Wang, Yuxuan and Wang, Wenwu and Plumbley, Mark D.},
  journal = {IEEE/ACM Transactions on Audio, Speech, and Language Processing},
  volume  = {28}, pages = {2880--2894}, year = {2020}
}""",
    "vipann": """@article{fischer2024vipann,
  title   = {{VI-PANN}: Harnessing Transfer Learning and Uncertainty-Aware Variational Inference for
             Improved Generalization in Audio Pattern Recognition},
  author  = {Fischer, John and Orescanin, Marko and Eckstrand, Eric},
  journal = {arXiv preprint}, year = {2024}
}""",
    "flipout": """@inproceedings{wen2018flipout,
  title     = {Flipout: Efficient Pseudo-Independent Weight Perturbations on Mini-Batches},
  author    = {Wen, Yeming and Vicol, Paul and Ba, Jimmy and Tran, Dustin and Grosse, Roger},
  booktitle = {International Conference on Learning Representations (ICLR)}, year = {2018}
}""",
    "moped": """@inproceedings{krishnan2020moped,
  title     = {Specifying Weight Priors in {B}ayesian Deep Neural Networks with Empirical {B}ayes},
  author    = {Krishnan, Ranganath and Subedar, Mahesh and Tickoo, Omesh},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence}, year = {2020}
}""",
    "efficientat": """@inproceedings{schmid2023efficient,
  title     = {Efficient Large-Scale Audio Tagging Via Transformer-to-{CNN} Knowledge Distillation},
  author    = {Schmid, Florian and Koutini, Khaled and Widmer, Gerhard},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)}, year = {2023}
}""",
    "dymn": """@article{schmid2024dynamic,
  title   = {Dynamic Convolutional Neural Networks as Efficient Pre-Trained Audio Models},
  author  = {Schmid, Florian and Koutini, Khaled and Widmer, Gerhard},
  journal = {IEEE/ACM Transactions on Audio, Speech, and Language Processing}, volume = {32}, year = {2024}
}""",
    "mobilenetv3": """@inproceedings{howard2019mobilenetv3,
  title     = {Searching for {MobileNetV3}},
  author    = {Howard, Andrew and Sandler, Mark and Chu, Grace and Chen, Liang-Chieh and Chen, Bo
               and Tan, Mingxing and Wang, Weijun and Zhu, Yukun and Pang, Ruoming and Vasudevan, Vijay
               and Le, Quoc V. and Adam, Hartwig},
  booktitle = {IEEE/CVF International Conference on Computer Vision (ICCV)}, year = {2019}
}""",
    "mcdropout": """@inproceedings{gal2016dropout,
  title     = {Dropout as a {B}ayesian Approximation: Representing Model Uncertainty in Deep Learning},
  author    = {Gal, Yarin and Ghahramani, Zoubin},
  booktitle = {International Conference on Machine Learning (ICML)}, year = {2016}
}""",
}
METHOD_CITATIONS = {
    "det": ("panns", "vipann"),
    "drop": ("panns", "vipann", "mcdropout"),
    "flip": ("panns", "vipann", "flipout", "moped"),
    "detflip": ("panns", "vipann", "flipout", "moped"),
}


_CREDITS = {
    "pann": "The architecture and the original weights are PANNs' (Kong et al. 2020; MIT licence, "
    "https://github.com/qiuqiangkong/audioset_tagging_cnn).",
    "efficientat": "The architecture, the front end and the original weights are EfficientAT's (Florian Schmid, "
    "Khaled Koutini and Gerhard Widmer; MIT licence, https://github.com/fschmid56/EfficientAT), built on "
    "MobileNetV3 (Howard et al. 2019). vipann re-implements the network and reproduces the original code's "
    "outputs within float32 rounding; please cite the EfficientAT papers below.",
}


def citations(meta: Mapping[str, Any]) -> str:
    """The BibTeX entries of a card: the family's papers first, then vipann's and the method's."""
    keys = list(METHOD_CITATIONS[meta["method"]])
    if family_of(meta["arch"]).name == "efficientat":
        dynamic = meta["arch"].startswith("dymn")
        keys = ["efficientat", *(["dymn"] if dynamic else []), "mobilenetv3", *(k for k in keys if k != "panns")]
    return "\n".join(_CITATIONS[c] for c in keys)


def credits(meta: Mapping[str, Any]) -> str:
    """Who the architecture, front end and weights of a card's model come from."""
    family = family_of(meta["arch"])
    if family.name == "pann" and ARCHITECTURES[meta["arch"]].original_class is None:
        return "A vipann network (no PANNs counterpart); the front end and the layout follow PANNs (Kong et al. 2020)."
    return _CREDITS[family.name]
