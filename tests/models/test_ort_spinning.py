"""ONNX Runtime sessions built by optlab do not spin their intra-op threads unless asked: on a
shared machine spinning threads take the CPU their siblings need (README, "How figures are measured")."""
from optlab.models.runtimes import ort_session
from optlab.testing.graphs import constant_weight_mlp_onnx


def test_sessions_do_not_spin_unless_asked(tmp_path):
    path = constant_weight_mlp_onnx(tmp_path / "mlp.onnx")
    key = "session.intra_op.allow_spinning"
    assert ort_session(path, threads=2).get_session_options().get_session_config_entry(key) == "0"
    assert ort_session(path, threads=2, spinning=True).get_session_options().get_session_config_entry(key) == "1"
