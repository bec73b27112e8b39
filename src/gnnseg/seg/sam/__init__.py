"""Segment Anything as MedSAM: box-prompted segmentation (see docs/sam.md).

The usual entry points: :func:`gnnseg.seg.sam.shipped.load_model` (the packaged model or any SAM / MedSAM
checkpoint), :class:`gnnseg.seg.sam.inference.predictor.SamPredictor` (numpy in, numpy out) and
:func:`gnnseg.seg.sam.modeling.sam.build_sam` with :data:`gnnseg.seg.sam.modeling.sam.SAM_CONFIGS`.
"""
