"""Bad inputs that used to pass silently, round 2: a user's ml-100k under --data_path ignored for
RecBole's copy, a flag or a yaml key given twice (the last kept), nproc < 1, a GPU that is not
there (a silent CPU run), nan/inf for a float key, and .item/.user files lacking ids of the
.inter file (RecBole dropped those interactions). Then (7-10) inputs that failed only after
training or as tracebacks: a split without a test set, an unwritable checkpoint_dir, out-of-range
seeds, sizes and CLLM4Rec settings, missing files; atomic files with NA-spelt ids, a column twice,
a float id, a Latin-1 byte, too few users; messages that misled; and (11) rows RecBole
drops, fills or cannot use (extra fields, missing floats, repeated .item ids, a user with every item). Each case failed on the code
before the fix; none trains a model (config building, argument parsing, at most a tiny dataset
loaded, the tiny backbone built)."""

import os
import sys

import numpy as np
import pytest
import torch
from test_reliability_inputs import cli_error, run_cli

import recbole_cllm4rec
from recbole_cllm4rec import validation
from recbole_cllm4rec.quick_start import build_config, config_files_for, parse_overrides
from recbole_cllm4rec.validation import AtomicFileError, ConfigValueError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
QUIET = {"state": "WARNING", "show_progress": False}


def write_dataset(root, name, n_users=20, per_user=6, n_items=15, item_ids=None, user_ids=None):
    """``<root>/data/<name>/<name>.inter`` (and ``.item`` / ``.user`` with the given ids);
    returns ``(data_path, interaction rows)``."""
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{i}") for u in range(n_users) for i in rng.choice(n_items, per_user, replace=False).tolist()]
    folder = root / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + [f"{u}\t{i}\t4\t{1000 + n}" for n, (u, i) in enumerate(rows)]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    if item_ids is not None:
        text = "item_id:token\ttitle:token_seq\n" + "".join(f"i{i}\tthing {i}\n" for i in item_ids)
        (folder / f"{name}.item").write_text(text)
    if user_ids is not None:
        (folder / f"{name}.user").write_text("user_id:token\tage:float\n" + "".join(f"u{u}\t30\n" for u in user_ids))
    return str(root / "data"), rows


# ------------------------------------------------------------------ 1. a user's own ml-100k
def test_explicit_data_path_is_used_for_ml100k(tmp_path, monkeypatch):
    from recbole.data import create_dataset

    monkeypatch.chdir(tmp_path)
    data_path, rows = write_dataset(tmp_path, "ml-100k")
    config = build_config("Pop", "ml-100k", config_dict={"data_path": data_path, **QUIET})
    assert config["data_path"] == os.path.join(data_path, "ml-100k")
    assert create_dataset(config).inter_num == len(rows)  # the user's 120 rows, not RecBole's 100,000

    # the same from a config file of the user's
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"data_path: {data_path}\n")
    config = build_config("Pop", "ml-100k", [str(mine)], dict(QUIET))
    assert config["data_path"] == os.path.join(data_path, "ml-100k")


def test_ml100k_without_data_path_is_still_recboles_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = build_config("Pop", "ml-100k", config_dict=dict(QUIET))  # data_path: only the shipped default
    assert os.path.normpath(config["data_path"]).endswith(os.path.join("dataset_example", "ml-100k"))


# ------------------------------------------------------------------ 2. a flag given twice
def test_override_given_twice_is_an_error_naming_both_values(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_overrides(["--epochs=3", "--learning_rate=0.1", "--epochs=5"])
    assert stop.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message == "error: --epochs is given twice ('3' and '5'): keep one of them"


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--model=BPR", "-m", "Pop"], ["--model", "'BPR'", "'Pop'"]),
        (["--dataset=a", "--dataset", "b"], ["--dataset", "'a'", "'b'"]),
        (["--nproc=2", "--npro=3"], ["--nproc", "2", "3"]),  # argparse's abbreviation is the same flag
    ],
)
def test_cli_flag_given_twice_is_an_error(argv, words, capsys):
    sys.path.insert(0, ROOT)
    try:
        import run_recbole
    finally:
        sys.path.remove(ROOT)
    assert run_recbole.main(argv) == 2  # returns before anything is imported or run
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: ") and "given twice" in message and "\n" not in message
    for word in words:
        assert word in message, message


# ------------------------------------------------------------------ 3. a yaml key given twice
def test_yaml_key_given_twice_names_file_key_and_lines(tmp_path):
    mine = tmp_path / "my.yaml"
    mine.write_text("epochs: 3\nlearning_rate: 0.01\nepochs: 5\n")
    with pytest.raises(ConfigValueError) as err:
        config_files_for("Pop", "ml-100k", [str(mine)])
    assert str(err.value) == (
        f"config file '{mine}' sets 'epochs' twice (line 1 and line 3): yaml would keep the last silently; "
        f"delete one of them"
    )
    assert isinstance(err.value, recbole_cllm4rec.USER_ERRORS)


def test_yaml_key_given_twice_in_a_nested_mapping(tmp_path):
    mine = tmp_path / "my.yaml"
    mine.write_text("eval_args:\n  order: RO\n  mode: full\n  order: TO\n")
    with pytest.raises(ConfigValueError, match=r"sets 'order' twice \(line 2 and line 4\)"):
        build_config("Pop", "ml-100k", [str(mine)])


def test_yaml_without_repeats_loads_as_recbole_reads_it(tmp_path):
    import yaml
    from recbole.config.configurator import Config

    mine = tmp_path / "my.yaml"
    mine.write_text('base: &b {a: 1, b: 2}\nother:\n  <<: *b\n  a: 3\nlr: 1e-3\nlist: [1, 1]\niv: "[0,60]"\n')
    read = validation.load_yaml_file(str(mine))
    assert read == yaml.load(mine.read_text(), Loader=Config._build_yaml_loader(None))  # noqa: S506
    assert read["lr"] == 0.001 and read["iv"] == "[0,60]"
    for folder, _, files in os.walk(os.path.realpath(os.path.join(ROOT, "properties"))):  # nor a shipped file
        for name in files:
            if name.endswith(".yaml"):
                validation.load_yaml_file(os.path.join(folder, name))


# ------------------------------------------------------------------ 4. nproc, gpu_id, device
@pytest.mark.parametrize("nproc", [0, -1])
def test_nproc_below_one_is_an_error(nproc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigValueError, match=rf"nproc={nproc} must be an integer >= 1"):
        recbole_cllm4rec.run("Pop", "ml-100k", config_dict=dict(QUIET), nproc=nproc)
    assert not (tmp_path / "saved").exists()  # refused before anything ran


def test_world_size_below_nproc_is_an_error():
    with pytest.raises(ConfigValueError, match="world_size=1 must be -1"):
        validation.check_launch(nproc=2, world_size=1)
    validation.check_launch(nproc=2, world_size=-1)
    validation.check_launch(nproc=2, world_size=4)


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine where torch.cuda.is_available() is False; RecBole's CUDA_VISIBLE_DEVICES put back."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("settings", [{"gpu_id": 5}, {"gpu_id": "0,1"}, {"device": "cuda"}])
def test_gpu_asked_for_without_cuda_is_an_error(settings, no_cuda, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigValueError) as err:
        build_config("Pop", "ml-100k", config_dict={**settings, **QUIET})
    message = str(err.value)
    assert "there is no such GPU" in message and "run on CPU with --use_gpu=False" in message, message


@pytest.mark.parametrize("settings", [{}, {"gpu_id": ""}, {"gpu_id": 5, "use_gpu": False}, {"device": "cpu"}])
def test_cpu_runs_still_pass_without_cuda(settings, no_cuda, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = build_config("Pop", "ml-100k", config_dict={**settings, **QUIET})
    assert config["device"].type == "cpu"


def test_gpu_id_beyond_the_gpus_cuda_sees_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # CUDA lists GPU 0 and stops at 5
    with pytest.raises(ConfigValueError, match="gpu_id=0,5: there is no GPU 5 on this machine"):
        build_config("Pop", "ml-100k", config_dict={"gpu_id": "0,5", **QUIET})
    with pytest.raises(ConfigValueError, match="device=cpu is not read"):  # RecBole would use the GPU
        build_config("Pop", "ml-100k", config_dict={"device": "cpu", **QUIET})


# ------------------------------------------------------------------ 5. nan / inf for a float key
NON_FINITE = [
    ("BPR", {"learning_rate": float("inf")}),  # '.inf' on the command line (yaml)
    ("BPR", {"learning_rate": "inf"}),  # 'inf' stays a string that float() reads
    ("BPR", {"learning_rate": "nan"}),
    ("BPR", {"weight_decay": "1e999"}),
    ("BPR", {"weight_decay": float("nan")}),
    ("CKE", {"reg_weights": [0.01, float("nan")]}),  # (list of float)
    ("CLLM4Rec", {"masked_target_weight": float("inf")}),
]


@pytest.mark.parametrize("model,settings", NON_FINITE, ids=[str(s) for _, s in NON_FINITE])
def test_non_finite_float_is_an_error(model, settings):
    key = next(iter(settings))
    with pytest.raises(ConfigValueError, match=rf"^{key}=.* is not a finite number"):
        validation.check_values(model, settings)


def test_non_finite_from_the_command_line_and_in_a_split():
    overrides = parse_overrides(["--learning_rate=.inf"])
    with pytest.raises(ConfigValueError, match="learning_rate=inf is not a finite number"):
        validation.check_values("BPR", overrides)
    with pytest.raises(ConfigValueError, match="3 non-negative ratios"):
        validation.check_values("BPR", {"eval_args": {"split": {"RS": [float("inf"), 0.1, 0.1]}}})
    validation.check_values("BPR", {"learning_rate": "1e-3", "weight_decay": 0.0})  # finite: fine


# ------------------------------------------------------------------ 6. .item / .user lacking ids
def _load(tmp_path, name, load_col, **extra):
    from recbole.data import create_dataset

    data_path = str(tmp_path / "data")
    settings = {"data_path": data_path, "load_col": load_col, **QUIET, **extra}
    return create_dataset(build_config("Pop", name, config_dict=settings))


INTER = ["user_id", "item_id", "rating", "timestamp"]


def test_item_file_lacking_ids_of_the_inter_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, rows = write_dataset(tmp_path, "feat", item_ids=range(10))  # i10..i14 have no row
    lost = sum(int(i[1:]) >= 10 for _, i in rows)
    with pytest.raises(AtomicFileError) as err:
        _load(tmp_path, "feat", {"inter": INTER, "item": ["item_id", "title"]})
    message = str(err.value)
    assert message.startswith("feat.item has no row for 5 item id(s) of feat.inter (e.g. ")
    assert f"used by {lost} of {len(rows)} interactions that RecBole would drop silently" in message
    assert os.path.join(str(tmp_path / "data" / "feat"), "feat.item") in message and "load_col" in message
    # the fixes the message names: without the .item file every interaction stays
    assert _load(tmp_path, "feat", {"inter": INTER}).inter_num == len(rows)


def test_user_file_lacking_ids_of_the_inter_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, rows = write_dataset(tmp_path, "feat", user_ids=range(1, 20))  # u0 has no row
    with pytest.raises(AtomicFileError, match=r"feat.user has no row for 1 user id\(s\) .*\(e.g. u0\), used by 6 of"):
        _load(tmp_path, "feat", {"inter": INTER, "user": ["user_id", "age"]})


def test_complete_feature_files_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, rows = write_dataset(tmp_path, "feat", item_ids=range(15), user_ids=range(20))
    load_col = {"inter": INTER, "item": ["item_id", "title"], "user": ["user_id", "age"]}
    assert _load(tmp_path, "feat", load_col).inter_num == len(rows)


# ------------------------------------------------------------------ 7. through the CLI, before training

SAMPLE = ["--dataset=amazon-sample", f"--data_path={os.path.join(ROOT, 'dataset')}", "--state=WARNING"]
SAMPLE_DICT = {"data_path": os.path.join(ROOT, "dataset"), **QUIET}


@pytest.mark.parametrize("split", ["{RS: [0.9,0.1,0.0]}", "{LS: valid_only}"])
def test_cli_split_without_a_test_set_is_refused_before_training(tmp_path, split):
    message = cli_error(tmp_path, "--model=Pop", *SAMPLE, f"--eval_args={{split: {split}}}")
    assert "leaves the test set empty" in message and "{RS: [0.8, 0.1, 0.1]}" in message, message


def test_split_without_a_validation_set_still_builds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # RecBole trains without validation then, and tests
    build_config("Pop", "ml-100k", config_dict={"eval_args": {"split": {"RS": [0.9, 0.0, 0.1]}}, **QUIET})


def test_cli_checkpoint_dir_that_is_a_file_is_refused_before_training(tmp_path):
    (tmp_path / "ckpt").write_text("a file where the checkpoint folder should be")
    proc = run_cli(tmp_path, "--model=Pop", *SAMPLE, "--epochs=1", checkpoint_dir=tmp_path / "ckpt")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output, output[-3000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: checkpoint_dir '{tmp_path / 'ckpt'}' cannot be written"), message
    assert "File exists" in message and "choose another path" in message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_checkpoint_dir_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(recbole_cllm4rec.ConfigFileError, match=r"checkpoint_dir '.*ro' cannot be written"):
            recbole_cllm4rec.run("Pop", "amazon-sample", config_dict={"checkpoint_dir": str(folder), **SAMPLE_DICT})
    finally:
        folder.chmod(0o700)


def test_missing_checkpoint_dir_is_made_and_left_empty(tmp_path):
    from recbole_cllm4rec.quick_start import check_writable

    folder = tmp_path / "new" / "ckpt"
    check_writable(str(folder), "checkpoint_dir", folder=True)
    assert folder.is_dir() and not os.listdir(folder)


# ------------------------------------------------------------------ 8. ranges, files, the backbone's depth
TINY = ["--model=CLLM4Rec", "--llm_path=tiny-random", "--autocast=fp32"]
OUT_OF_RANGE = [
    # (id, arguments, words the one-line message must hold)
    ("seed_below_0", ["--model=Pop", "--seed=-1"], ["seed=-1 is out of range", "<= 4294967295"]),
    ("seed_above_2_32", ["--model=Pop", "--seed=4294967296"], ["seed=4294967296 is out of range"]),
    ("huge_embedding_size", ["--model=BPR", "--embedding_size=1000000000"], ["embedding_size", "<= 65536"]),
    ("negative_lora_rank", [*TINY, "--lora_rank=-2"], ["lora_rank=-2 is out of range", ">= 0"]),
    ("missing_pretrained_file", [*TINY, "--pretrained_file=/nope.pth"], ["pretrained_file '/nope.pth' does not exist"]),
    ("missing_resume_file", ["--model=BPR", "--resume_file=/nope.pth"], ["resume_file '/nope.pth' does not exist"]),
    # known once the backbone is loaded: the model's build, before any training
    ("readout_layers_above_depth", [*TINY, "--readout_layers=999"], ["readout_layers: 999", "2 layers"]),
]


@pytest.mark.parametrize("case", OUT_OF_RANGE, ids=[c[0] for c in OUT_OF_RANGE])
def test_cli_out_of_range_values_are_one_line_errors(tmp_path, case):
    _, args, words = case
    message = cli_error(tmp_path, *args, *SAMPLE)
    for word in words:
        assert word in message, message


def test_cllm4rec_setting_errors_at_model_build_are_user_errors():
    from recbole_cllm4rec.model.cllm4rec import CLLM4Rec

    defaults = validation.load_yaml_file(os.path.join(ROOT, "properties", "model", "CLLM4Rec.yaml"))
    CLLM4Rec._check_config(defaults)  # a Config built without the runner: the yaml's own rules
    for key, value in [("mask_ratio", 1.5), ("lora_targets", "q_proj"), ("readout", "first")]:
        with pytest.raises(ConfigValueError, match=key) as err:
            CLLM4Rec._check_config({**defaults, key: value})
        assert isinstance(err.value, recbole_cllm4rec.USER_ERRORS) and isinstance(err.value, ValueError)
    with pytest.raises(ConfigValueError, match="lora_targets, which is empty"):
        CLLM4Rec._check_config({**defaults, "lora_rank": 4, "lora_targets": []})


def test_boundary_values_pass():
    validation.check_values("BPR", {"seed": 0, "embedding_size": 65536})
    validation.check_values("BPR", {"seed": 2**32 - 1})
    validation.check_values("CLLM4Rec", {"lora_rank": 0, "pretrained_file": None})


# ------------------------------------------------------------------ 9. atomic files as a whole
NA_SPELLINGS = ["NA", "null", "None", "nan", "N/A"]


def write_files(tmp_path, name, files):
    """``<tmp>/data/<name>/<name>.<ext>`` for each ``{ext: text or bytes}``; returns the CLI arguments."""
    folder = tmp_path / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    for ext, text in files.items():
        path = folder / f"{name}.{ext}"
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    load = "{inter: [user_id, item_id, rating, timestamp]}"
    return [f"--dataset={name}", f"--data_path={tmp_path / 'data'}", "--state=WARNING", f"--load_col={load}"]


def inter_text(rows=None, header=HEADER):
    """An atomic .inter file's text: 20 users with 6 interactions each among 15 items by default."""
    rows = rows or [(f"u{u}", f"i{(u * 7 + k) % 15}") for u in range(20) for k in range(6)]
    return header + "\n" + "".join(f"{u}\t{i}\t4\t{1000 + n}\n" for n, (u, i) in enumerate(rows))


def test_na_spelt_ids_are_kept_as_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [(f"u{u}", f"i{(u * 7 + k) % 15}") for u in range(20) for k in range(6)]
    rows = [
        (NA_SPELLINGS[n % 5] if n < 10 else u, NA_SPELLINGS[n % 5] if 10 <= n < 20 else i)
        for n, (u, i) in enumerate(rows)
    ]
    rows.append(("", "i1"))  # an empty id is still a missing value: RecBole drops the row and says which line
    write_files(tmp_path, "na", {"inter": inter_text(rows)})
    dataset = _load(tmp_path, "na", {"inter": INTER})
    assert dataset.inter_num == len(rows) - 1  # pandas' default made all 20 NA-spelt rows missing: dropped
    for field in ("user_id", "item_id"):
        assert set(NA_SPELLINGS) <= set(dataset.field2id_token[field])


ATOMIC_CASES = [
    # (id, files, words the one-line message must hold)
    (
        "column_twice",
        {"inter": inter_text(header="user_id:token\titem_id:token\tuser_id:token\ttimestamp:float")},
        ["bad.inter", "names column 'user_id' twice (columns 1 and 3)"],
    ),
    (
        "id_declared_float",
        {
            "inter": inter_text([(str(u), f"i{i}") for u in range(20) for i in range(6)]).replace(
                "user_id:token", "user_id:float"
            )
        },
        ["'user_id:float'", "bad.inter", "id fields must be :token"],
    ),
    (
        "latin1_byte",
        {"inter": inter_text().encode() + "caf\u00e9\ti1\t4\t5\n".encode("latin-1")},
        ["bad.inter line 122 is not utf-8 text", "save the file as UTF-8", "--encoding"],
    ),
    (
        "one_user",
        {"inter": inter_text([("u0", f"i{i}") for i in range(9)])},
        ["dataset 'bad' has 1 user(s) and 9 item(s) in 9 interactions", "at least 2 users"],
    ),
]


@pytest.mark.parametrize("case", ATOMIC_CASES, ids=[c[0] for c in ATOMIC_CASES])
def test_cli_bad_atomic_files_are_one_line_errors(tmp_path, case):
    _, files, words = case
    message = cli_error(tmp_path, "--model=Pop", *write_files(tmp_path, "bad", files))
    for word in words:
        assert word in message, message


def test_cli_filters_that_leave_nothing_are_one_line_errors(tmp_path):
    message = cli_error(tmp_path, "--model=Pop", *SAMPLE, "--user_inter_num_interval=[50,inf)")
    assert message.startswith("error: dataset 'amazon-sample' has 0 user(s) and 0 item(s) left after RecBole's filters")
    assert "(user_inter_num_interval=[50,inf)), which kept 0 of its 320 interactions" in message
    assert message.endswith("at least 2 users and 2 items to train and rank: loosen those filters"), message


def test_latin1_file_loads_with_its_encoding(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, "latin", {"inter": inter_text().encode() + "caf\u00e9\ti1\t4\t5\n".encode("latin-1")})
    dataset = _load(tmp_path, "latin", {"inter": INTER}, encoding="latin-1")
    assert "caf\u00e9" in dataset.field2id_token["user_id"]


def test_cli_latin1_yaml_names_the_file(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_bytes("# r\u00e9glages\nepochs: 1\n".encode("latin-1"))
    message = cli_error(tmp_path, "--model=Pop", *SAMPLE, f"--config_files={mine}")
    assert f"{mine} line 1 is not utf-8 text" in message and "save the file as UTF-8" in message, message


# ------------------------------------------------------------------ 10. messages that misled
def test_cli_item_file_lacking_most_items_says_so(tmp_path):
    items = "item_id:token\ttitle:token_seq\n" + "".join(f"i{i}\tthing {i}\n" for i in range(4))
    args = write_files(tmp_path, "bad", {"inter": inter_text(), "item": items})
    load = "{inter: [user_id, item_id, rating, timestamp], item: [item_id, title]}"
    message = cli_error(tmp_path, "--model=Pop", *args[:-1], f"--load_col={load}", "--topk=[5,10]")
    assert "bad.item has no row for 11 item id(s) of bad.inter" in message and "topk" not in message, message


def test_empty_yaml_file_is_no_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ("", "# nothing set yet\n"):
        mine = tmp_path / "empty.yaml"
        mine.write_text(text)
        assert build_config("Pop", "ml-100k", [str(mine)], dict(QUIET))["epochs"] == 300  # RecBole's default


def test_non_ascii_dataset_name_is_a_folder_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, "donn\u00e9es", {"inter": inter_text()})
    assert _load(tmp_path, "donn\u00e9es", {"inter": INTER}).inter_num == 120


def test_cli_overlong_dataset_name_is_one_line(tmp_path):
    message = cli_error(tmp_path, "--model=Pop", "--dataset=" + "a" * 5000)
    assert "bytes long" in message and "keep it to 100" in message and len(message) < 300, message


def test_interval_strings_recbole_accepts_pass(tmp_path, monkeypatch):
    from recbole.data import create_dataset

    monkeypatch.chdir(tmp_path)
    rows = [(f"u{u}", f"i{k}") for u in range(20) for k in range(3 + u % 4)]  # 3 to 6 items a user
    write_files(tmp_path, "iv", {"inter": inter_text(rows)})
    settings = {"data_path": str(tmp_path / "data"), "load_col": {"inter": INTER}, **QUIET}
    mine = tmp_path / "iv.yaml"
    mine.write_text('user_inter_num_interval: "[0,4]"\n')  # a string in yaml, as RecBole reads it
    kept = sum(n for n in (3 + u % 4 for u in range(20)) if n <= 4)
    assert create_dataset(build_config("Pop", "iv", [str(mine)], settings)).inter_num == kept
    overrides = parse_overrides(["--user_inter_num_interval=[0,4]"])  # a list on the command line
    assert create_dataset(build_config("Pop", "iv", config_dict={**settings, **overrides})).inter_num == kept


# ------------------------------------------------------------------ 11. rows RecBole changes or cannot use
def test_cli_row_with_more_fields_than_the_header_is_an_error(tmp_path):
    text = inter_text().splitlines()
    text[5] += "\tan extra\tvalue"  # a tab inside a value: pandas kept the header's columns, silently
    message = cli_error(tmp_path, "--model=Pop", *write_files(tmp_path, "bad", {"inter": "\n".join(text) + "\n"}))
    assert message.startswith("error: bad.inter line 6 has 6 fields, its header 4:"), message
    assert "must not contain the field separator (a tab)" in message, message


def test_cli_user_who_interacted_with_every_item_is_refused_before_sampling(tmp_path):
    rows = [(f"u{u}", f"i{(u * 7 + k) % 15}") for u in range(20) for k in range(6)]
    rows += [("u0", f"i{i}") for i in range(15)]
    message = cli_error(tmp_path, "--model=BPR", *write_files(tmp_path, "bad", {"inter": inter_text(rows)}))
    assert message.startswith("error: 1 user(s) of dataset 'bad' (e.g. u0) interacted with every one of its 15 items")
    assert "negative sampler has no item to draw" in message and "user_inter_num_interval" in message, message


def test_values_recbole_fills_or_drops_are_counted_in_warnings(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    text = inter_text().splitlines()
    text[6] = text[6].replace("\t4\t", "\t\t")
    text[8] = text[8].replace("\t4\t", "\tnan\t")
    items = "item_id:token\ttitle:token_seq\n" + "".join(f"i{i}\tthing {i}\n" for i in range(15))
    items += "i3\tanother thing\ni4\tthing 4\n"  # one differing copy, one identical
    write_files(tmp_path, "filled", {"inter": "\n".join(text) + "\n", "item": items})
    with caplog.at_level("WARNING"):
        dataset = _load(tmp_path, "filled", {"inter": INTER, "item": ["item_id", "title"]})
    warnings = caplog.text
    assert "filled.inter: 2 of 120 values of 'rating:float' are empty or NA (first at line 7)" in warnings
    assert "filled.item: 2 id(s) of item_id have more than one row (e.g. i3, i4)" in warnings
    assert "drops the other 2, 1 of which differ from it" in warnings
    assert dataset.item_num == 16  # what RecBole does is unchanged: 15 items and padding


def test_clean_files_load_without_those_warnings(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    items = "item_id:token\ttitle:token_seq\n" + "".join(f"i{i}\tthing {i}\n" for i in range(15))
    write_files(tmp_path, "clean", {"inter": inter_text(), "item": items})
    with caplog.at_level("WARNING"):
        _load(tmp_path, "clean", {"inter": INTER, "item": ["item_id", "title"]})
    assert "empty or NA" not in caplog.text and "more than one row" not in caplog.text
