"""A run's config.json as the truth about it: the settings it was made with, bound to a --test or --resume that
names it, and the fingerprints of the feature files it read."""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from configs.files import CONFIG_NAME
from configs.train import TrainConfig
from utils.data.features import FeatureFiles
from utils.errors import DUCHError
from utils.fingerprints import check_unchanged, fingerprints
from utils.io import read_json

# settings that name the run folder: they must agree with config.json whether typed or not
RUN_IDENTITY = ("dataset", "bit", "preset", "method", "encoder", "text_encoder")


def input_fingerprints(cfg: TrainConfig, paths: FeatureFiles) -> dict:
    """Fingerprints (size, mtime, sha256) of the feature files a run reads (utils/fingerprints.py)."""
    keys = [k for k in FEATURE_FILE_KEYS if not (cfg.original_quirks and k == "caption_aug")]
    return fingerprints({k: getattr(paths, k) for k in keys})


def check_inputs_unchanged(saved: dict, flag: str) -> None:
    """The feature files a run was trained on must be the same files, byte for byte, for --test and --resume."""
    check_unchanged(saved.get("inputs") or {}, f"{flag} of the run made at {saved.get('time')}",
                    "its results would not be the run's; retrain with --overwrite, "
                    "or restore the files it was trained on")


def read_run_config(run_dir: Path, flag: str) -> dict:
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        raise DUCHError(f"{flag}: {run_dir} has no {CONFIG_NAME}, the record of how the run was trained, so it cannot "
                        "be bound to its data")
    saved = read_json(path, "run configuration")
    if not isinstance(saved, dict):
        raise DUCHError(f"{path} is not a run configuration (a JSON object)")
    return saved


def _settings_of(saved: dict) -> TrainConfig:
    """The TrainConfig saved in a config.json record."""
    from configs.train import check_values

    values = {f.name: saved[f.name] for f in fields(TrainConfig) if f.name in saved}
    for key in ("contrastive_weights", "discriminator_betas"):
        if key in values:
            if not isinstance(values[key], list):
                raise DUCHError(f"{CONFIG_NAME}: {key} must be a list of numbers, got {values[key]!r}")
            values[key] = tuple(values[key])
    run = TrainConfig(**values)
    try:
        check_values(run)  # a hand-edited config.json: a string where a number belongs is named, not a traceback
    except DUCHError as err:
        raise DUCHError(f"the run's {CONFIG_NAME} holds a value that cannot be right: {err}") from None
    return run


def _norm(value):
    return json.loads(json.dumps(value))


def _same_setting(key: str, typed, saved) -> bool:
    if key in ("data_dir", "img_aug_emb") and typed is not None and saved is not None:  # one folder, two spellings
        return str(typed) == str(saved) or Path(typed).resolve() == Path(saved).resolve()
    return _norm(typed) == _norm(saved)


def _flag(key: str, value) -> str:
    if isinstance(value, bool):
        return f"--{key.replace('_', '-')}" if value else f"no --{key.replace('_', '-')}"
    if isinstance(value, (list, tuple)):
        value = " ".join(map(str, value))
    return f"--{key.replace('_', '-')} {value}"


def bind_to_run(cfg: TrainConfig, typed: set[str], saved: dict, run_dir: Path, mode: str) -> TrainConfig:
    """The run's saved settings, with this call's device and out-dir.

    A typed flag that differs from the saved setting is refused (``mode`` "test" or "resume"); a resumed
    run may only raise ``--epochs``. The settings that name the folder (dataset, bit, preset) must agree
    whether typed or not.
    """
    run = _settings_of(saved)
    flag_name = f"--{mode}"
    conflicts = []
    for key in sorted((set(typed) | set(RUN_IDENTITY)) - {"tag"}):
        if not hasattr(run, key):
            continue
        mine, theirs = getattr(cfg, key), getattr(run, key)
        if _same_setting(key, mine, theirs):
            continue
        if mode == "resume" and key == "epochs":
            if mine > theirs:
                continue
            conflicts.append(f"--epochs {mine}: the run is set to {theirs} epochs and --resume can only raise that "
                             f"(to evaluate an earlier model use --test --checkpoint last)")
            continue
        conflicts.append(f"{_flag(key, mine)} contradicts the run's {_flag(key, theirs)}")
    if conflicts:
        action = "evaluates" if mode == "test" else "continues"
        raise DUCHError(
            f"{flag_name} {action} the run in {run_dir} with the settings of its {CONFIG_NAME}: "
            f"{'; '.join(conflicts)}. "
            f"Drop the flag to use the run's setting, or train a new run with another --tag"
        )
    run.device, run.out_dir = cfg.device, cfg.out_dir
    if mode == "resume" and "epochs" in typed:
        run.epochs = cfg.epochs
    return run


FEATURE_FILE_KEYS = ("image", "image_aug", "caption", "caption_aug")


def check_same_files(saved: dict, now: dict, flag: str) -> None:
    """The feature files a bound run resolves to must be the ones it was trained on (the JSON may have
    gained augmented captions since: its labels and raw captions are the same)."""
    changed = [k for k in FEATURE_FILE_KEYS
               if k in saved and k in now and Path(saved[k]).resolve() != Path(now[k]).resolve()]
    if changed:
        detail = "; ".join(f"{k}: {saved[k]} -> {now[k]}" for k in changed)
        raise DUCHError(f"{flag}: the run's feature files now resolve to other files ({detail}); run it from the "
                        "folder it was trained in")
