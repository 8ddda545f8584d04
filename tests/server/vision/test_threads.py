import cv2
import pytest
import torch

from server.vision.threads import set_op_threads


@pytest.fixture
def restore_threads():
    torch_before, cv_before = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(torch_before)
    cv2.setNumThreads(cv_before)


def test_a_cap_reaches_both_torch_and_opencv(restore_threads):
    set_op_threads(1)
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)


def test_zero_leaves_the_libraries_alone(restore_threads):
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    set_op_threads(0)
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)
