"""environment(): the machine beside every figure, described without importing torch."""
import subprocess
import sys

from optlab.instruments.environment import SPEED_FLAGS, Environment, environment, physical_cores


def test_environment_describes_cpu_and_versions():
    env = environment()
    assert env.cpu_model and env.cores == physical_cores() >= 1 and env.logical_cores >= env.cores
    assert all(flag in SPEED_FLAGS for flag in env.cpu_flags.split())
    assert env.torch_version and env.onnxruntime_version and env.device == "cpu" and env.gpu_name is None
    assert Environment.from_dict(env.to_dict()) == env


def test_describing_never_imports_torch():
    code = ("import sys; from optlab.instruments.environment import environment; environment('cuda'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
