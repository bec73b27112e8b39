"""gnnseg in napari (the ``napari`` extra): a dock widget over the service's predictor and session model, and readers
for NIfTI, DICOM series folders and challenge ``.npz`` cases through :mod:`gnnseg.seg.io`.

``napari.yaml`` is the npe2 manifest; :mod:`.widget` the dock widget, :mod:`.image_objects` the objects of one image
(no Qt), :mod:`.layer_inputs` layers read as images, boxes and clicks, :mod:`.readers` the readers. Importing this
package imports neither napari nor Qt.
"""
