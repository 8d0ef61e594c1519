import torch

from trainer.augment import colour, cutout, diff_augment, translate


def test_translation_shifts_each_image_whole_by_at_most_an_eighth():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 64, 64)
    out = translate(x)
    for img, shifted in zip(x, out):
        matches = [(dy, dx) for dy in range(-8, 9) for dx in range(-8, 9)
                   if torch.equal(shifted[:, max(dy, 0):64 + min(dy, 0), max(dx, 0):64 + min(dx, 0)],
                                  img[:, max(-dy, 0):64 + min(-dy, 0), max(-dx, 0):64 + min(-dx, 0)])]
        assert len(matches) == 1, matches
        dy, dx = matches[0]
        assert shifted[:, :max(dy, 0)].eq(0).all() and shifted[:, 64 + min(dy, 0):].eq(0).all()  # zeros come in
    assert len({tuple(o[0, 30:34, 30:34].flatten().tolist()) for o in out}) > 8  # shifts differ between images


def test_cutout_zeroes_one_square_of_half_the_side_at_most():
    torch.manual_seed(1)
    out = cutout(torch.ones(32, 3, 64, 64))
    for img in out:
        rows, cols = img[0].eq(0).nonzero(as_tuple=True)
        assert len(rows) > 0 and img.eq(0).all(0).equal(img[0].eq(0))  # every channel alike
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert h <= 32 and w <= 32 and len(rows) == h * w  # a rectangle, clipped at the border


def test_colour_changes_brightness_saturation_and_contrast_per_image():
    torch.manual_seed(2)
    x = torch.rand(1, 3, 8, 8).expand(8, 3, 8, 8) * 2 - 1
    out = colour(x)
    assert len({round(o.mean().item(), 4) for o in out}) == 8


def test_the_augmentation_is_differentiable_and_keeps_the_shape():
    x = torch.rand(4, 3, 64, 64, requires_grad=True)
    y = diff_augment(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_with_augment_the_discriminator_sees_only_augmented_images(tmp_path):
    from trainer.config import TrainConfig
    from trainer.tasks import make_task

    real = torch.rand(4, 3, 64, 64) * 2 - 1
    for augment in (False, True):
        task = make_task(TrainConfig(model="gan", data=tmp_path, preset="tiny", augment=augment), torch.device("cpu"))
        seen = []
        run_D = task.run_D
        task.run_D = lambda x: (seen.append(x.detach().clone()), run_D(x))[1]
        task.train_step(real)
        assert len(seen) == 3  # D step: real and fake; G step: fake
        assert torch.equal(seen[0], real) is not augment
        assert torch.equal(seen[1], seen[2]) is not augment  # the G step draws its own augmentation
