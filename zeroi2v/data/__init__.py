"""Video data: decoding, frame sampling, clip transforms, annotation formats, the dataset, synthetic data."""

from zeroi2v.data.dataset import VideoDataset
from zeroi2v.data.decode import (DecordSource, FrameFolderSource, TensorSource, VideoDecodeError, VideoSource,
                                 open_video, write_video)
from zeroi2v.data.formats import FORMATS, Annotation, Sample, read_annotation, read_class_names
from zeroi2v.data.sampling import DenseSampler, UniformSampler
from zeroi2v.data.synthetic import (DEFAULT_CLASSES, REGISTRY, flip_label_map, make_clip, make_synthetic_images,
                                    make_synthetic_videos)
from zeroi2v.data.transforms import (CLIP_MEAN, CLIP_STD, SSV2_FLIP_LABEL_MAP, TestTransform, TrainTransform,
                                     denormalize, normalize)

__all__ = [
    "VideoDataset", "DecordSource", "FrameFolderSource", "TensorSource", "VideoDecodeError", "VideoSource",
    "open_video", "write_video", "FORMATS", "Annotation", "Sample", "read_annotation", "read_class_names",
    "DenseSampler", "UniformSampler", "DEFAULT_CLASSES", "REGISTRY", "flip_label_map", "make_clip",
    "make_synthetic_images", "make_synthetic_videos", "CLIP_MEAN", "CLIP_STD", "SSV2_FLIP_LABEL_MAP",
    "TestTransform", "TrainTransform", "denormalize", "normalize",
]
