"""Pretend GPUs for the local Hadoop: YARN's own GPU plugin, fed by a stand-in ``nvidia-smi``.

Runs on the machine that starts the local Hadoop, while its configuration is written.
Each NodeManager gets a script of its own that answers ``nvidia-smi -x -q`` (what YARN's
GpuDiscoverer parses, every few seconds) and ``nvidia-smi --query-gpu=index,uuid
--format=csv,noheader`` (what zoo_ray's executors ask, see :mod:`zoo_ray.gpu_claims`).
YARN discovers, schedules and accounts the devices for real; only the devices are
pretend. NodeManagers share this one host, so their devices are numbered apart (the
second of two NodeManagers with 2 GPUs has 2 and 3), as devices on separate hosts are
told apart by their host.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..gpu_claims import GPU_RESOURCE, NVIDIA_SMI_ENV

__all__ = ["gpu_overrides", "write_nvidia_smi"]

_GPU_XML = """\
<gpu id="00000000:{index:02X}:00.0"><product_name>zoo_ray pretend GPU</product_name>\
<uuid>{uuid}</uuid><minor_number>{index}</minor_number>\
<fb_memory_usage><total>1024 MiB</total><used>0 MiB</used><free>1024 MiB</free>\
</fb_memory_usage><utilization><gpu_util>0 %</gpu_util></utilization>\
<temperature><gpu_temp>30 C</gpu_temp></temperature></gpu>"""

_SCRIPT = """\
#!/bin/sh
# A stand-in for nvidia-smi written by zoo_ray's local Hadoop: pretend devices {first}..{last}.
case "$*" in
  "-x -q") cat <<'EOF'
<?xml version="1.0" ?>
<nvidia_smi_log><driver_version>0.0</driver_version><attached_gpus>{count}</attached_gpus>
{gpus}
</nvidia_smi_log>
EOF
  ;;
  "--query-gpu=index,uuid --format=csv,noheader") cat <<'EOF'
{csv}
EOF
  ;;
  *) echo "pretend nvidia-smi: unsupported arguments: $*" >&2; exit 2 ;;
esac
"""


def _uuid(nodemanager: int, index: int) -> str:
    return f"GPU-00000000-0000-0000-{nodemanager:04d}-{index:012d}"


def write_nvidia_smi(bin_dir: Path, nodemanager: int, gpus: int) -> Path:
    """Write NodeManager ``nodemanager``'s pretend ``nvidia-smi`` with ``gpus`` devices.

    Returns
    -------
    pathlib.Path
        The executable script.
    """
    indices = range(nodemanager * gpus, (nodemanager + 1) * gpus)
    script = _SCRIPT.format(
        first=indices[0], last=indices[-1], count=gpus,
        gpus="\n".join(_GPU_XML.format(index=i, uuid=_uuid(nodemanager, i)) for i in indices),
        csv="\n".join(f"{i}, {_uuid(nodemanager, i)}" for i in indices),
    )
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "nvidia-smi"
    path.write_text(script)
    os.chmod(path, 0o755)
    return path


def gpu_overrides(nvidia_smi: Path, admin_env: str) -> dict[str, dict[str, str]]:
    """A NodeManager's keys for the GPU plugin, its discovery run by ``nvidia_smi``.

    ``admin_env`` is the cluster's ``yarn.nodemanager.admin-env``; the NodeManager's
    containers are told its ``nvidia_smi`` on top of it.
    """
    return {"yarn-site.xml": {
        "yarn.nodemanager.resource-plugins": GPU_RESOURCE,
        "yarn.nodemanager.resource-plugins.gpu.allowed-gpu-devices": "auto",
        "yarn.nodemanager.resource-plugins.gpu.path-to-discovery-executables": str(nvidia_smi),
        "yarn.nodemanager.admin-env": ",".join(filter(None, [
            admin_env, f"{NVIDIA_SMI_ENV}={nvidia_smi}"])),
    }}
