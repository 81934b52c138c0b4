"""The CUDA side of the sweep, standard library only (sweep.py calls `gpus` before any environment
exists, so that a host without a GPU is told so in a second, before any download).

- `gpus()`: the NVIDIA GPUs that `nvidia-smi` lists, or `NoGpu` with the reason;
- `ensure_runtime(venv)`: a throw-away virtual environment with the `onnxruntime-gpu` wheel and
  the NVIDIA CUDA and cuDNN wheels its CUDA provider loads (requirements.txt beside this file,
  exact pins; remade when that file changes), and from it the `libonnxruntime.so` MedInform loads
  and the folders that go on LD_LIBRARY_PATH so that the provider finds libcudart, libcublas,
  libcufft, libcurand and libcudnn.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
STAMP = "gpu-requirements.sha256"
NVIDIA_SMI_TIMEOUT_SECS = 30
# The CUDA provider sits beside libonnxruntime.so in the wheel; without it the wheel is a CPU one.
CUDA_PROVIDER = "libonnxruntime_providers_cuda.so"


class NoGpu(Exception):
    """No NVIDIA GPU can be used on this host."""


class RuntimeSetupError(Exception):
    """The onnxruntime-gpu environment could not be made or has no usable library."""


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    driver: str
    memory_mib: int

    def describe(self) -> str:
        return f"GPU {self.index}: {self.name}, {self.memory_mib:,} MiB, driver {self.driver}"


@dataclass(frozen=True)
class CudaRuntime:
    """What MedInform needs to run on CUDA: the library to load and the folders of the NVIDIA
    libraries the CUDA provider loads."""

    onnxruntime_library: Path
    library_dirs: list[Path]


def log(message: str) -> None:
    print(f"[gpu] {message}", file=sys.stderr, flush=True)


def gpus() -> list[Gpu]:
    """The GPUs `nvidia-smi` lists, in its order."""
    if shutil.which("nvidia-smi") is None:
        raise NoGpu("nvidia-smi is not on PATH: this host has no NVIDIA driver (so no usable NVIDIA GPU)")
    query = "--query-gpu=index,name,driver_version,memory.total"
    try:
        done = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=False,
            timeout=NVIDIA_SMI_TIMEOUT_SECS,
        )
    except subprocess.TimeoutExpired as error:
        raise NoGpu(f"nvidia-smi did not answer in {NVIDIA_SMI_TIMEOUT_SECS} s") from error
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise NoGpu(f"nvidia-smi failed (status {done.returncode}): {said[-1] if said else 'no output'}")
    found = [gpu for line in done.stdout.splitlines() if (gpu := parse_gpu(line))]
    if not found:
        raise NoGpu("nvidia-smi lists no GPU")
    return found


def parse_gpu(line: str) -> Gpu | None:
    """One `index, name, driver, memory` line of nvidia-smi's CSV; None if it is not one."""
    fields = [field.strip() for field in line.split(",")]
    if len(fields) != 4 or not fields[0].isdigit():
        return None
    index, name, driver, memory = fields
    return Gpu(int(index), name, driver, int(memory) if memory.isdigit() else 0)


def requirements_hash() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def ensure_runtime(venv: Path) -> CudaRuntime:
    """The CUDA runtime of `venv`, after making or remaking the environment if needed."""
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    wanted = requirements_hash()
    if not (python.exists() and stamp.exists() and stamp.read_text().strip() == wanted):
        log(f"creating {venv} from {REQUIREMENTS} (onnxruntime-gpu + CUDA/cuDNN wheels: a few GB, once)")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        if subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=False).returncode != 0:
            raise RuntimeSetupError(f"pip could not install {REQUIREMENTS} into {venv} (see pip's output above)")
        stamp.write_text(wanted + "\n")
    return runtime_in(venv)


def runtime_in(venv: Path) -> CudaRuntime:
    """The library and the NVIDIA library folders of an environment that has onnxruntime-gpu."""
    site_packages = sorted(venv.glob("lib/python3*/site-packages"))
    if not site_packages:
        raise RuntimeSetupError(f"{venv} has no site-packages")
    capi = site_packages[-1] / "onnxruntime" / "capi"
    libraries = sorted(capi.glob("libonnxruntime.so.*"))
    if not libraries:
        raise RuntimeSetupError(f"no libonnxruntime.so.* in {capi}")
    if not (capi / CUDA_PROVIDER).exists():
        raise RuntimeSetupError(f"{capi} has no {CUDA_PROVIDER}: this is not the onnxruntime-gpu wheel")
    nvidia = site_packages[-1] / "nvidia"
    library_dirs = sorted({path.parent for path in nvidia.glob("**/lib*.so*")})
    if not library_dirs:
        raise RuntimeSetupError(f"no NVIDIA libraries under {nvidia}: the [cuda,cudnn] wheels are missing")
    return CudaRuntime(libraries[-1], library_dirs)
