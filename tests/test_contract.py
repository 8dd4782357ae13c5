"""The contract between the add-on and the backend (backend/stableavatar/contract.py): strict values, message
parsing and framing, the one file both sides load, and the things derived from it (CLI flags, the panel's
properties, docs/protocol.md)."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from stableavatar import compat, contract, contract_doc

from conftest import REPO, run_cli


@pytest.mark.parametrize("line, fragment", [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"id": "x"}', "missing field 'op'"),
    (b'{"op": "frobnicate"}', "unknown op 'frobnicate'"),
    (b'{"op": "submit"}', "missing field 'job_dir'"),
    (b'{"op": "submit", "job_dir": ""}', "must be a non-empty string"),
    (b'{"op": "submit", "job_dir": "/x", "params": [1]}', "'params' must be an object"),
    (b'{"op": "cancel"}', "missing field 'id'"),
    (b'{"op": "status", "protocol": 2}', "unsupported protocol version"),
    (b'\xff\xfe{}', "not UTF-8"),
])
def test_parse_request_rejects(line, fragment):
    with pytest.raises(contract.ContractError) as info:
        contract.parse_request(line)
    assert fragment in info.value.message
    assert info.value.category == "bad_request"


def test_errors_name_the_job_only_when_they_decide_its_fate():
    with pytest.raises(contract.ContractError) as info:
        contract.parse_request(b'{"op": "explode", "id": "job-1"}')
    assert info.value.id is None and info.value.ref == "job-1"
    with pytest.raises(contract.ContractError) as info:
        contract.parse_request(b'{"op": "submit", "id": "job-2", "job_dir": 5}')
    assert info.value.id == "job-2"


def test_parse_request_accepts_and_ignores_unknown_fields():
    cmd = contract.parse_request(b'{"protocol": 1, "op": "submit", "job_dir": "/j", "image": "a", "audio": "b", "x": 1}')
    assert cmd["op"] == "submit" and cmd["x"] == 1
    assert contract.parse_request(b'{"op": "status"}')["op"] == "status"  # "protocol" may be omitted by clients


def test_encode_is_one_line_with_protocol_and_no_nan():
    line = contract.encode(contract.event("progress", eta_s=float("inf"), note="a\nb"))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    msg = json.loads(line)
    assert msg == {"protocol": 1, "type": "progress", "eta_s": None, "note": "a\nb"}
    err = contract.error_event("bad_input", "two\nlines")
    assert err["message"] == "two lines" and err["id"] is None and err["traceback"] is None


def test_read_line_drains_oversize_line_and_continues():
    limit = 100
    big = b"x" * 250
    stream = io.BufferedReader(io.BytesIO(b'{"op":"status"}\n' + big + b"\n" + b"y" * limit + b"\nlast"))
    assert contract.read_line(stream, limit) == b'{"op":"status"}'
    too_long = contract.read_line(stream, limit)
    assert isinstance(too_long, contract.LineTooLong) and too_long.size == 251
    assert contract.read_line(stream, limit) == b"y" * limit  # exactly the limit is fine
    assert contract.read_line(stream, limit) == b"last"  # EOF without newline
    assert contract.read_line(stream, limit) is None




@pytest.mark.parametrize("values, fragment", [
    ({"allow_silent": "false"}, "allow_silent must be a boolean"),   # JSON strings are not booleans
    ({"save_latents": 1}, "save_latents must be a boolean"),
    ({"width": True}, "width must be an integer"),                  # nor booleans numbers
    ({"steps": 2.5}, "steps must be an integer"),
    ({"text_scale": "3"}, "text_scale must be a number"),
    ({"prompt": 5}, "prompt must be text"),
    ({"width": 4096}, "out of range"),
    ({"width": 2048, "height": 2048}, "megapixels"),
    ({"seed": -2}, "out of range"),
    ({"guidance": "cfg"}, "must be one of official, audio-native"),
    ({"nope": 1}, "unknown generation parameter"),
])
def test_generation_params_are_strict(values, fragment):
    with pytest.raises(contract.ContractError, match=fragment):
        contract.GenerationParams.from_dict(values)


def test_generation_params_canonical_values_and_random_seed():
    p = contract.GenerationParams.from_dict({"width": 64.0, "text_scale": 3, "seed": None})
    assert p.width == 64 and type(p.width) is int and type(p.text_scale) is float and p.seed == 42
    random = contract.GenerationParams.from_dict({"seed": contract.RANDOM_SEED})
    drawn = {random.with_seed().seed for _ in range(20)}
    assert len(drawn) > 1 and all(0 <= s <= contract.SEED_MAX for s in drawn)
    assert p.with_seed() is p  # a concrete seed stays


def test_the_addon_loads_this_very_package():
    sys.path.insert(0, str(REPO))
    from blender_addon import contract as addon_contract
    from blender_addon.contract import values as addon_values

    backend_dir = Path(contract.__file__).parent
    assert Path(addon_contract.__file__).parent == backend_dir  # not a copy: the backend's own files
    assert Path(addon_values.__file__) == backend_dir / "values.py"
    assert addon_contract.PARAMS.keys() == contract.PARAMS.keys()
    assert addon_contract.capabilities() == contract.capabilities()
    for f in backend_dir.glob("*.py"):  # standard library and the package itself only
        for line in f.read_text().splitlines():
            if line.startswith(("import ", "from ")) and not line.startswith(("from .", "from __future__")):
                assert line.split()[1].split(".")[0] in sys.stdlib_module_names, (f.name, line)


def test_modes_named_by_the_contract_exist_in_the_backend():
    assert {compat.get(name).name for name in contract.COMPAT_MODES} == set(contract.COMPAT_MODES)
    from stableavatar import guidance
    assert tuple(guidance.MODES) == contract.GUIDANCE_MODES
    from stableavatar import memory
    assert set(memory.APPROX_MODES_BY_SPEED) == set(contract.MEMORY_MODES)


def test_every_parameter_and_engine_setting_has_its_cli_flag():
    out = run_cli("generate", "--help").stdout
    for spec in [*contract.PARAMS.values(), *contract.ENGINE_SETTINGS.values()]:
        assert spec.flag in out, spec.flag
    assert "--no-allow-silent" in out  # booleans take --x / --no-x
    serve = run_cli("serve", "--help").stdout
    for spec in contract.ENGINE_SETTINGS.values():
        assert spec.flag in serve, spec.flag


def test_cli_refuses_a_bad_value_with_the_contracts_message(tmp_path):
    res = run_cli("generate", "--image", "x.png", "--audio", "y.wav", "--out", tmp_path / "o", "--width", "65")
    assert res.returncode == 2 and "error: width 65 is not a multiple of 16" in res.stderr and "hint:" in res.stderr


def test_protocol_doc_is_generated_from_the_contract():
    doc = REPO / "docs" / "protocol.md"
    assert contract_doc.main(["--check", str(doc)]) == 0, "run: python -m stableavatar.contract_doc docs/protocol.md"
    text = doc.read_text()
    for name in [*contract.PARAMS, *contract.REQUESTS, *contract.EVENTS, *contract.CATEGORIES]:
        assert f"`{name}`" in text, name


def test_stale_doc_is_detected(tmp_path):
    stale = tmp_path / "p.md"
    stale.write_text(f"# x\n{contract_doc.BEGIN}\nold table\n{contract_doc.END}\nafter\n")
    assert contract_doc.main(["--check", str(stale)]) == 1
    assert contract_doc.main([str(stale)]) == 0 and contract_doc.main(["--check", str(stale)]) == 0
    assert stale.read_text().endswith("after\n") and "`submit`" in stale.read_text()


def test_requests_built_by_a_client_are_checked_before_sending():
    assert contract.request("cancel", id="j")["op"] == "cancel"
    with pytest.raises(contract.ContractError, match="missing field 'id'"):
        contract.request("cancel")
    with pytest.raises(contract.ContractError, match="unknown op"):
        contract.request("explode")


def test_parse_event_checks_types():
    ok = contract.parse_event(contract.encode(contract.event("cancelled", id="j", resumable=True, reason="cancel")))
    assert ok["type"] == "cancelled"
    with pytest.raises(contract.ContractError, match="resumable"):
        contract.parse_event(json.dumps({"protocol": 1, "type": "cancelled", "id": "j", "resumable": "yes",
                                         "reason": "cancel"}))
    with pytest.raises(contract.ContractError, match="unknown type"):
        contract.parse_event(b'{"protocol": 1, "type": "teleport"}')


def test_a_parameter_declared_in_the_contract_reaches_the_sampler(tmp_path, tiny_tree, media_dir):
    """`shift` is declared only in contract/values.py and used only in sampler.py: it must arrive from the CLI."""
    import soundfile as sf
    wave, sr = sf.read(media_dir / "case-2-speech.wav", dtype="int16")
    sf.write(tmp_path / "voice.wav", wave[:sr], sr)
    out = {}
    for shift in ("5", "2"):
        res = run_cli("generate", "--checkpoints", tiny_tree, "--image", media_dir / "case-1-reference.png",
                      "--audio", tmp_path / "voice.wav", "--out", tmp_path / shift, "--width", "32",
                      "--height", "32", "--steps", "2", "--shift", shift, "--save-latents", "--device", "cpu")
        assert res.returncode == 0, res.stderr[-2000:]
        assert json.loads((tmp_path / shift / "manifest.json").read_text())["params"]["shift"] == float(shift)
        out[shift] = (tmp_path / shift / "latents.safetensors").read_bytes()
    assert out["5"] != out["2"]
