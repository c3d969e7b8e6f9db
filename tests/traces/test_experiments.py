import pytest

from stepdecomp.traces.experiments import discover, parse_dir_name, read_experiment
from stepdecomp.hw.specs import UnknownModelError


@pytest.mark.parametrize("name, slug, tp, workload", [
    ("20260217-155451-llama-2-7b-tp1-codegen", "llama-2-7b", 1, "codegen"),
    ("20260217-203421-llama-2-70b-hf-tp4-codegen", "llama-2-70b-hf", 4, "codegen"),
    ("20260218-120914-mixtral-8x7b-v0-1-tp2-reasoning", "mixtral-8x7b-v0-1", 2, "reasoning"),
    ("20260301-000000-llama-2-7b-tp1-general-lite", "llama-2-7b", 1, "general-lite"),
    ("63-mistral-nemo-12b-tp1-codegen-1-1", "mistral-nemo-12b", 1, "codegen"),
    ("20260301-000000-foo-tp2-bar-tp8-reasoning-lite", "foo-tp2-bar", 8, "reasoning-lite"),
])
def test_dir_names_split_on_the_last_tp(name, slug, tp, workload):
    d = parse_dir_name(name)
    assert (d.model_slug, d.tp, d.workload) == (slug, tp, workload)


def test_dir_name_without_tp_is_rejected():
    with pytest.raises(ValueError, match="-tp<N>-"):
        parse_dir_name("20260101-000000-llama-2-7b-general")


def test_exp_config_is_the_authority(fixture_root):
    e = read_experiment(fixture_root / "20260101-010000-mixtral-8x7b-v0-1-tp2-codegen")
    assert (e.model, e.hf_id, e.tp, e.workload) == ("mixtral-8x7b-v0-1", "mistralai/Mixtral-8x7B-v0.1", 2, "codegen")
    assert e.max_num_batched_tokens == 2048
    assert e.trace_path.name == "traces.json.gz"


def test_slug_and_tp_from_directory_name_without_exp_config(fixture_root):
    e = read_experiment(fixture_root / "20260101-020000-llama-2-70b-hf-tp4-reasoning")
    assert (e.model, e.hf_id, e.tp) == ("llama-2-70b-hf", "meta-llama/Llama-2-70b-hf", 4)
    assert e.max_num_batched_tokens is None


def test_exp_config_tp_overrides_directory(tmp_path):
    d = tmp_path / "20260101-000000-llama-2-7b-tp1-general"
    d.mkdir()
    (d / "exp-config.yaml").write_text("model: meta-llama/Llama-2-7b-hf\ntensor_parallelism: 2\n")
    assert read_experiment(d).tp == 2


def test_unknown_slug_without_exp_config_names_the_slug(tmp_path):
    d = tmp_path / "20260101-000000-gpt-9-tp1-general"
    d.mkdir()
    with pytest.raises(UnknownModelError, match=r"unknown model slug 'gpt-9'.*slugs.yaml"):
        read_experiment(d)


def test_missing_and_empty_roots_say_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: expected a ground-truth root"):
        discover(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="holds no experiment with traces"):
        discover(tmp_path)


def test_directories_without_traces_are_skipped_and_listed(fixture_copy):
    (fixture_copy / "20260102-000000-llama-2-7b-tp1-roleplay").mkdir()
    (fixture_copy / "notes").mkdir()
    found = discover(fixture_copy)
    assert len(found.experiments) == 3
    assert sorted(found.skipped) == [("20260102-000000-llama-2-7b-tp1-roleplay", "no traces.json"),
                                     ("notes", "name does not contain -tp<N>-")]


def test_profile_json_is_read_with_the_yaml_parser(fixture_copy):
    from stepdecomp.traces.experiments import read_yaml
    p = fixture_copy / "20260101-000000-llama-2-7b-tp1-general" / "profile.yaml"
    p.write_text('{"load":{"type":"constant","stages":[{"rate":5,"duration":600}]},"x":null}')
    assert read_yaml(p) == {"load": {"type": "constant", "stages": [{"rate": 5, "duration": 600}]},
                            "x": None}
    assert read_experiment(p.parent).profile["load"]["stages"][0]["rate"] == 5


def test_yaml_errors_name_file_line_and_column(tmp_path):
    from stepdecomp.traces.experiments import ConfigError, read_yaml
    p = tmp_path / "exp-config.yaml"
    p.write_text("model: a/b\n  tensor_parallelism: 2\n")
    with pytest.raises(ConfigError, match=r"exp-config.yaml line 2, column 21: not valid YAML: "
                                          r"mapping values are not allowed here"):
        read_yaml(p)


def test_integer_settings_accept_only_exact_integers(tmp_path):
    d = tmp_path / "20260101-000000-llama-2-7b-tp1-general"
    d.mkdir()
    (d / "exp-config.yaml").write_text("model: meta-llama/Llama-2-7b-hf\ntensor_parallelism: 2.0\n"
                                       "max_num_batched_tokens: '4096'\n")
    e = read_experiment(d)
    assert (e.tp, e.max_num_batched_tokens) == (2, 4096)
    (d / "exp-config.yaml").write_text("model: meta-llama/Llama-2-7b-hf\ntensor_parallelism: 2.5\n")
    from stepdecomp.traces.experiments import ConfigError
    with pytest.raises(ConfigError, match="line 2: tensor_parallelism must be an integer from 1 to 1,024, got 2.5$"):
        read_experiment(d)


def test_hardware_and_token_bounds_hold_for_the_data():
    """MAX_GPU_HBM_BYTES is above every GPU in data/hardware and MIN_KV_BYTES_PER_TOKEN below
    every model in data/models (K and V of every layer at 1 byte per value, fp8), so the
    token bound tp · MAX_TOKENS_PER_GPU never refuses a configuration those could run."""
    import json
    from stepdecomp.traces import experiments
    from stepdecomp.core.paths import HARDWARE_DIR, MODELS_DIR
    from stepdecomp.hw.specs import load_model_spec
    gib = [json.loads(p.read_text())["hbm_gib"] for p in HARDWARE_DIR.glob("*.json")]
    assert gib and max(gib) * 2**30 < experiments.MAX_GPU_HBM_BYTES
    hf_ids = sorted({str(p.parent.relative_to(MODELS_DIR)) for p in MODELS_DIR.glob("*/*/config.json")})
    kv_fp8 = [2 * s.num_layers * s.kv_dim for s in map(load_model_spec, hf_ids)]
    assert len(kv_fp8) >= 5 and min(kv_fp8) >= 64 * experiments.MIN_KV_BYTES_PER_TOKEN
    assert experiments.MAX_TOKENS_PER_GPU == 2**30
    assert experiments.MAX_TP * experiments.MAX_TOKENS_PER_GPU < 2**63 // 2**20   # int64-safe


def test_strict_yaml_keeps_merge_keys_and_a_few_aliases(tmp_path):
    from stepdecomp.traces.experiments import read_yaml
    p = tmp_path / "profile.yaml"
    p.write_text("base: &b {rate: 5}\nstage1:\n  <<: *b\n  rate: 6\nstage2: *b\n")
    assert read_yaml(p) == {"base": {"rate": 5}, "stage1": {"rate": 6}, "stage2": {"rate": 5}}


def test_dir_name_digits_are_ascii_only():
    with pytest.raises(ValueError, match="-tp<N>-"):
        parse_dir_name("20260101-000000-llama-2-7b-tp٣-general")
    assert parse_dir_name("20260101-000000-tp1-general").model_slug == ""
    assert parse_dir_name("7-tp1-general").model_slug == ""


def test_a_root_whose_experiments_are_all_skipped_says_why(fixture_copy):
    import shutil
    import warnings
    from stepdecomp.traces.experiments import ConfigWarning
    for d in list(fixture_copy.iterdir()):
        if d.name != "20260101-000000-llama-2-7b-tp1-general":
            shutil.rmtree(d)
    (fixture_copy / "20260101-000000-llama-2-7b-tp1-general" / "exp-config.yaml").write_text(
        "model: meta-llama/Llama-2-7b-hf\ntensor_parallelism: 0\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        with pytest.raises(FileNotFoundError, match=r"holds no experiment with traces: expected "
                           r".*; 1 directory skipped, the first: 20260101-000000-llama-2-7b-tp1-"
                           r"general \(exp-config.yaml line 2: tensor_parallelism must be an "
                           r"integer from 1 to 1,024, got 0\)$"):
            discover(fixture_copy)
