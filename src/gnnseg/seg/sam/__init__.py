"""Segment Anything as MedSAM: box-prompted segmentation (see docs/sam.md).

The usual entry points: :func:`gnnseg.seg.sam.shipped.load_model` (the packaged model or any SAM / MedSAM
checkpoint), :class:`gnnseg.seg.sam.predictor.SamPredictor` (numpy in, numpy out) and
:func:`gnnseg.seg.sam.model.build_sam` with :data:`gnnseg.seg.sam.model.SAM_CONFIGS`.
"""
