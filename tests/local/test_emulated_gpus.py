"""The emulated GPUs behind the emulated device plugin and MIG manager: devices, labels, configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpupool_operator.core import catalog
from gpupool_operator.local.deviceplugin import allocate_envs
from gpupool_operator.local.gpus import GPU_RESOURCE, Hardware
from gpupool_operator.local.migmanager import MigConfigError, layouts_for

MIG_PARTED = """\
version: v1
mig-configs:
  all-balanced:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
  half:
    - devices: [0]
      mig-enabled: true
      mig-devices: {"3g.40gb": 2}
    - devices: [1]
      mig-enabled: false
  impossible:
    - devices: all
      mig-enabled: true
      mig-devices: {"4g.40gb": 1, "3g.40gb": 2}
  unknown-profile:
    - devices: all
      mig-enabled: true
      mig-devices: {"5g.50gb": 1}
"""


def test_devices_follow_the_layout_with_nvidia_resource_names(tmp_path: Path) -> None:
    hw = Hardware.create("n1", "A100-80GB", [{"3g.40gb": 1, "1g.10gb": 2}, None])
    by = hw.by_resource()
    assert sorted(by) == [GPU_RESOURCE, "nvidia.com/mig-1g.10gb", "nvidia.com/mig-3g.40gb"]
    assert [d.id for d in by[GPU_RESOURCE]] == ["GPU-emulated-n1-1"]
    assert len(by["nvidia.com/mig-1g.10gb"]) == 2
    (three,) = by["nvidia.com/mig-3g.40gb"]
    assert (three.gpu, three.start) == (0, 4)  # placed at its last allowed start, as NVIDIA advises
    assert hw.layouts() == [{"3g.40gb": 1, "1g.10gb": 2}, {}]
    labels = hw.gfd_labels()
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert labels["nvidia.com/mig-1g.10gb.count"] == "2"
    assert labels["nvidia.com/mig-2g.20gb.count"] is None  # a stale profile label is removed
    hw.save(tmp_path / "gpus.json")
    assert Hardware.load(tmp_path / "gpus.json") == hw


def test_allocate_tells_the_container_its_shape() -> None:
    hw = Hardware.create("n1", "H100-80GB", [{"2g.20gb": 1}])
    envs = allocate_envs(hw, hw.by_resource()["nvidia.com/mig-2g.20gb"])
    assert envs["NVIDIA_VISIBLE_DEVICES"].startswith("MIG-emulated-n1-0-2g.20gb-")
    assert envs["GPUPOOL_EMULATED"] == "1"
    assert envs["GPUPOOL_EMULATED_PRODUCT"] == "H100-80GB"
    assert envs["GPUPOOL_EMULATED_MIG_PROFILE"] == "2g.20gb"


def test_an_impossible_layout_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="compute slices"):
        Hardware.create("n1", "A100-80GB", [{"4g.40gb": 1, "3g.40gb": 2}])


def test_mig_parted_configs_are_read_as_nvidia_writes_them() -> None:
    a100 = catalog.by_key("A100-80GB")
    assert layouts_for(MIG_PARTED, "all-balanced", 2, a100) == [{"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}] * 2
    assert layouts_for(MIG_PARTED, "half", 2, a100) == [{"3g.40gb": 2}, {}]
    assert layouts_for(MIG_PARTED, "all-disabled", 3, a100) == [{}, {}, {}]
    with pytest.raises(MigConfigError, match="'nope' is not in the ConfigMap"):
        layouts_for(MIG_PARTED, "nope", 2, a100)
    with pytest.raises(MigConfigError, match="compute slices"):
        layouts_for(MIG_PARTED, "impossible", 2, a100)
    with pytest.raises(MigConfigError, match=r"no MIG profile .5g\.50gb."):
        layouts_for(MIG_PARTED, "unknown-profile", 2, a100)
    with pytest.raises(MigConfigError, match="names GPU 1; the node has 1"):
        layouts_for(MIG_PARTED, "half", 1, a100)
