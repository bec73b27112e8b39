"""Region-based training with sigmoid outputs and the ignore label: targets, loss against nnU-Net v2's own
``DC_and_BCE_loss`` / ``DC_and_CE_loss``, and a tiny region dataset planned, trained and predicted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnseg.seg.io import MedicalImage, write_raw_dataset
from gnnseg.seg.io.dataset_labels import DatasetLabels
from gnnseg.seg.unet.label_targets import loss_mask, pseudo_dice_counts, region_targets
from gnnseg.seg.unet.loss import DiceCrossEntropyLoss, RegionDiceBCELoss, training_loss
from tests.seg.torchvision_schemas import make_torchvision_importable

REGIONS = [(1, 2, 3), (2, 3), 3]
LABELS = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}


def _nnunet_losses():
    pytest.importorskip("nnunetv2", reason="nnunetv2 (the oracle) is not installed")
    if not make_torchvision_importable():
        pytest.skip("torchvision is not installed (nnunetv2 imports it)")
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    return DC_and_BCE_loss, DC_and_CE_loss, MemoryEfficientSoftDiceLoss


def _batch(seed: int, ignore: int | None = None):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 6, 7, 5, generator=generator) * 2
    labels = torch.randint(0, 4 if ignore is None else 5, (2, 1, 6, 7, 5), generator=generator)
    return logits, labels


def test_region_targets_and_loss_mask():
    labels = torch.tensor([[[0, 1, 2, 3, 4]]])
    np.testing.assert_array_equal(region_targets(labels, REGIONS)[0].numpy(),
                                  [[0, 1, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 0]])
    np.testing.assert_array_equal(loss_mask(labels, 4)[0, 0].numpy(), [1, 1, 1, 1, 0])
    assert loss_mask(labels, None) is None


@pytest.mark.parametrize("batch_dice", [True, False])
def test_region_loss_equals_nnunet_dc_and_bce(batch_dice):
    DC_and_BCE_loss, _, MemoryEfficientSoftDiceLoss = _nnunet_losses()
    logits, labels = _batch(0)
    oracle = DC_and_BCE_loss({}, {"batch_dice": batch_dice, "do_bg": True, "smooth": 1e-5, "ddp": False},
                             use_ignore_label=False, dice_class=MemoryEfficientSoftDiceLoss)
    expected = oracle(logits, region_targets(labels, REGIONS).bool())
    ours = RegionDiceBCELoss(REGIONS, batch_dice=batch_dice)(logits, labels)
    # nnU-Net adds -Dice, gnnseg 1 - Dice: the same loss shifted by one
    assert ours.item() == pytest.approx(expected.item() + 1.0, abs=1e-6)
    logits.requires_grad_(True)
    ours_grad = torch.autograd.grad(RegionDiceBCELoss(REGIONS, batch_dice=batch_dice)(logits, labels), logits)[0]
    expected_grad = torch.autograd.grad(oracle(logits, region_targets(labels, REGIONS).bool()), logits)[0]
    torch.testing.assert_close(ours_grad, expected_grad)


def test_ignore_label_is_masked_out_of_both_terms_as_nnunet():
    DC_and_BCE_loss, _, MemoryEfficientSoftDiceLoss = _nnunet_losses()
    logits, labels = _batch(1, ignore=4)
    assert (labels == 4).any()
    oracle = DC_and_BCE_loss({}, {"batch_dice": True, "do_bg": True, "smooth": 1e-5, "ddp": False},
                             use_ignore_label=True, dice_class=MemoryEfficientSoftDiceLoss)
    with_ignore_channel = torch.cat([region_targets(labels, REGIONS), (labels == 4).float()], 1).bool()
    expected = oracle(logits, with_ignore_channel)
    ours = RegionDiceBCELoss(REGIONS, ignore_label=4)(logits, labels)
    assert ours.item() == pytest.approx(expected.item() + 1.0, abs=1e-6)
    # what the ignored voxels hold makes no difference
    changed = logits.clone()
    changed[(labels == 4).expand_as(logits)] = 100.0
    assert RegionDiceBCELoss(REGIONS, ignore_label=4)(changed, labels).item() == pytest.approx(ours.item(), abs=1e-6)
    unmasked = RegionDiceBCELoss(REGIONS)(logits, labels).item()
    assert abs(unmasked - ours.item()) > 1e-3


def test_softmax_loss_with_an_ignore_label_equals_nnunet_dc_and_ce():
    _, DC_and_CE_loss, MemoryEfficientSoftDiceLoss = _nnunet_losses()
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 6, 7, generator=generator)
    labels = torch.randint(0, 5, (2, 1, 6, 7), generator=generator)
    oracle = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                            weight_dice=1, ignore_label=4, dice_class=MemoryEfficientSoftDiceLoss)
    expected = oracle(logits, labels.clone())
    ours = DiceCrossEntropyLoss(ignore_label=4)(logits, labels)
    assert ours.item() == pytest.approx(expected.item() + 1.0, abs=1e-5)


def test_training_loss_and_pseudo_dice_follow_the_labels():
    regions = DatasetLabels.from_json({**LABELS, "ignore": 4}, [1, 2, 3])
    assert isinstance(training_loss(regions).loss, RegionDiceBCELoss)
    assert isinstance(training_loss(DatasetLabels.from_json({"background": 0, "a": 1})).loss, DiceCrossEntropyLoss)
    labels = torch.tensor([[[[0, 1, 2, 3, 4, 3]]]])
    logits = torch.tensor([[[[-1, 1, 1, 1, 1, -1]], [[-1, -1, 1, 1, 1, 1]], [[-1, -1, -1, 1, 1, 1]]]]).float()
    counts = pseudo_dice_counts(logits, labels, regions)          # the ignored fifth voxel counts nowhere
    np.testing.assert_array_equal(counts, [[3, 3, 2], [0, 0, 0], [1, 0, 0]])


def _region_dataset(root):
    rng = np.random.default_rng(0)
    cases = []
    for k in range(3):
        label = np.zeros((24, 24), np.uint8)
        y, x = rng.integers(2, 10, 2)
        label[y:y + 12, x:x + 12] = 1
        label[y + 3:y + 9, x + 3:x + 9] = 2
        label[y + 5:y + 7, x + 5:x + 7] = 3
        label[0, :] = 4                                      # an ignored row
        image = (rng.normal(40, 5, label.shape) + 50 * np.minimum(label, 3)).clip(1, 255).astype(np.uint8)
        cases.append((f"r{k}", [MedicalImage(image, (1.0, 1.0))], MedicalImage(label, (1.0, 1.0))))
    return write_raw_dataset(root, channel_names=["grey"], labels={**LABELS, "ignore": 4}, file_ending=".png",
                             training=cases, extra={"regions_class_order": [1, 2, 3]})


def test_a_region_dataset_plans_trains_and_predicts_in_regions_class_order(tmp_path):
    from gnnseg.seg.unet.case_preprocessing import preprocess_dataset
    from gnnseg.seg.unet.fingerprint import extract_fingerprint
    from gnnseg.seg.unet.planner import plan_experiment
    from gnnseg.seg.unet.predict import predict_case
    from gnnseg.seg.unet.train import TrainConfig, build_network, load_trained_network, train_fold

    dataset = _region_dataset(tmp_path / "raw")
    plans = plan_experiment(extract_fingerprint(dataset), device="cpu", memory_gb=1, base_features=8)
    assert plans.labels == {**LABELS, "ignore": 4} and plans.regions_class_order == (1, 2, 3)
    assert plans.label_model.num_outputs == 3
    preprocess_dataset(dataset, plans, "2d", tmp_path / "pre")
    network = build_network(plans, "2d", deep_supervision=False)
    assert network(torch.zeros(1, 1, *plans.configuration("2d").patch_size)).shape[1] == 3
    summary = train_fold(tmp_path / "pre", plans, "2d", "all", tmp_path / "run",
                         TrainConfig(epochs=1, iterations_per_epoch=2, validation_iterations=1, batch_size=2),
                         raw_dataset=dataset, show_progress=False)
    assert set(summary["validation"]["mean_dice"]) == {"whole", "core", "enhancing"}
    trained, _, _ = load_trained_network(next((tmp_path / "run").glob("checkpoint_latest.pth")))
    case = dataset.load_case("r0")
    labels, probabilities = predict_case(trained, case.stacked(), case.spacing, plans, "2d")
    assert probabilities.shape == (3, 24, 24) and labels.shape == (24, 24)
    np.testing.assert_array_equal(labels, plans.label_model.paint_regions(probabilities, np.zeros((24, 24))))

    class Constant(torch.nn.Module):
        """Logits +5, +5, -5 for the three regions: whole and core predicted, enhancing not."""

        def forward(self, x):
            values = torch.tensor([5.0, 5.0, -5.0]).view(1, 3, *([1] * (x.dim() - 2)))
            return values.expand(x.shape[0], 3, *x.shape[2:]).clone()

    labels, probabilities = predict_case(Constant(), case.stacked(), case.spacing, plans, "2d")
    assert (labels == 2).all()                                  # core (painted second) over whole
    assert probabilities[2].max() < 0.01 and probabilities[0].min() > 0.99

    # the torch-free recipe of U-Net exports maps the same logits to the same labels and probabilities
    from gnnseg.seg.unet.case_recipes import GnnsegCases

    recipe = GnnsegCases(plans, "2d", ".png")
    assert (recipe.num_outputs, recipe.label_values) == (3, [0, 1, 2, 3])
    data, geometry = recipe.preprocess(case.stacked(), case.spacing)
    logits = np.broadcast_to(np.array([5.0, 5.0, -5.0], np.float32).reshape(3, 1, 1, 1),
                             (3, *data.shape[1:])).copy()
    recipe_labels, recipe_probabilities = recipe.outputs(logits, geometry, True)
    np.testing.assert_array_equal(recipe_labels, labels)
    np.testing.assert_allclose(recipe_probabilities, probabilities, atol=1e-6)
