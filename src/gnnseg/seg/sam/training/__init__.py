"""Teaching a model: prompt samples from labelled images and volumes, the five-modality corpus, whole-image sets
resized once, fine-tuning, distillation and decoder tuning."""
