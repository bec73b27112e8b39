"""The Segment Anything architecture: encoders (ViT, TinyViT), prompt encoder, two-way transformer, mask decoder and
:class:`~gnnseg.seg.sam.modeling.sam.Sam`, which composes them. Nothing here knows about predictors or training."""
