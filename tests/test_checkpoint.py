"""dispatch.checkpoint: espnet2's training files are written atomically, without patching torch.save itself."""
import pytest
import torch

from dispatch.checkpoint import atomic_torch_save


class Unpicklable:
    def __reduce__(self):
        raise KeyboardInterrupt  # killed in the middle of torch.save


def test_espnet2_trainer_saves_atomically_and_torch_save_is_left_alone(tmp_path):
    import espnet2.main_funcs.average_nbest_models as averaging
    import espnet2.train.trainer as trainer

    target = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 1}, target)
    original = torch.save
    with atomic_torch_save():
        assert torch.save is original  # other callers write as before
        with pytest.raises(KeyboardInterrupt):
            trainer.torch.save({"epoch": 2, "bad": Unpicklable()}, target)  # as espnet2's trainer calls it
        assert torch.load(target) == {"epoch": 1} and sorted(tmp_path.iterdir()) == [target]
        averaging.torch.save({"epoch": 3}, target)
        assert torch.load(target) == {"epoch": 3}
        assert trainer.torch.no_grad is torch.no_grad and trainer.torch.Tensor is torch.Tensor
    assert trainer.torch is torch and averaging.torch is torch
