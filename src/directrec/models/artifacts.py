"""Model artefacts on disk: `config.json` (model name, typed config, sizes, meta),
`ids.json` (raw ids by index) and `weights.safetensors` (numpy arrays). Written into a
temporary directory and renamed, so a half-written model never appears; nothing is
pickled, so loading a directory someone hands you runs no code from it."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

FORMAT_VERSION = 2
ID_KEYS = ("user_ids", "item_ids")  # raw ids by index, kept in ids.json beside the config


def csr_to_state(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    m = m.tocsr()
    return {
        f"{prefix}.indptr": m.indptr.astype(np.int64),
        f"{prefix}.indices": m.indices.astype(np.int64),
        f"{prefix}.data": m.data.astype(np.float32),
        f"{prefix}.shape": np.array(m.shape, dtype=np.int64),
    }


def csr_spec(prefix: str, rows: int | None) -> dict[str, tuple]:
    """What `csr_to_state` writes, for `check_state` (a matrix of `rows` rows)."""
    return {
        f"{prefix}.indptr": ((rows + 1 if rows is not None else None,), ("int64",)),
        f"{prefix}.indices": ((None,), ("int64",)),
        f"{prefix}.data": ((None,), ("float32",)),
        f"{prefix}.shape": ((2,), ("int64",)),
    }


def csr_from_state(
    prefix: str, state: dict[str, np.ndarray], shape: tuple[int | None, int | None]
) -> sp.csr_matrix:
    """The sparse matrix `csr_to_state` wrote (its dtypes checked with `csr_spec`), checked
    against the `shape` the model's config implies (None: any size) and for a consistent
    structure before any of it is used."""
    got = tuple(int(x) for x in state[f"{prefix}.shape"])
    if any(want is not None and want != g for want, g in zip(shape, got, strict=True)):
        raise ValueError(
            f"weights.safetensors: {prefix}.shape is {got}, the config implies {_dims(shape)}"
        )
    indptr, indices = state[f"{prefix}.indptr"], state[f"{prefix}.indices"]
    data = state[f"{prefix}.data"]
    nnz = len(data)
    if (
        len(indptr) != got[0] + 1
        or indptr[0] != 0
        or indptr[-1] != nnz
        or len(indices) != nnz
        or np.any(np.diff(indptr) < 0)
    ):
        raise ValueError(
            f"weights.safetensors: {prefix}.indptr, {prefix}.indices and {prefix}.data do not "
            f"describe a {got} matrix"
        )
    if nnz and (indices.min() < 0 or indices.max() >= got[1]):
        raise ValueError(f"weights.safetensors: {prefix}.indices fall outside {got[1]} columns")
    return sp.csr_matrix((data, indices, indptr), shape=got)


Shape = tuple[int | None, ...]


def _dims(shape: Shape) -> str:
    return "(" + ", ".join("any" if d is None else str(d) for d in shape) + ")"


def check_state(
    state: dict[str, np.ndarray],
    spec: dict[str, tuple[Shape, tuple[str, ...]]],
    model: str = "",
) -> None:
    """Loading is strict: `state` must hold exactly the tensors of `spec`, each with its
    shape (None: any size along that axis) and one of its dtypes (what the model saves:
    float32 weights, int64 indices, float16 where a model keeps half precision). A
    tampered or mismatched file fails here with a ValueError naming the tensor, instead of
    loading and then failing (or scoring garbage) on every request. `model` says whose
    config implies the shapes (e.g. "ease with n_items=1682")."""
    whose = f", {model} expects" if model else ", expected"
    missing = sorted(spec.keys() - state.keys())
    if missing:
        raise ValueError(f"weights.safetensors: missing tensor(s) {', '.join(missing[:5])}")
    extra = sorted(state.keys() - spec.keys())
    if extra:
        raise ValueError(f"weights.safetensors: unexpected tensor(s) {', '.join(extra[:5])}")
    for name, (shape, dtypes) in spec.items():
        a = state[name]
        if a.dtype.name not in dtypes:
            raise ValueError(
                f"weights.safetensors: {name} is {a.dtype.name}{whose} {' or '.join(dtypes)}"
            )
        if a.ndim != len(shape) or any(
            d is not None and d != g for d, g in zip(shape, a.shape, strict=True)
        ):
            raise ValueError(
                f"weights.safetensors: {name} has shape {tuple(a.shape)}{whose} {_dims(shape)}"
            )


def check_ids(ids: Any, where: str = "ids.json") -> None:
    """Raw ids must be a list of unique scalars (strings or integers) per key: a list or
    a mapping among them would be served as its text ("['50']"), and a repeated id makes
    the index → id map ambiguous."""
    if not isinstance(ids, dict):
        raise ValueError(f"{where}: expected an object with user_ids / item_ids lists")
    for key in ID_KEYS:
        if key not in ids:
            continue
        values = ids[key]
        if not isinstance(values, list):
            raise ValueError(f"{where}: {key} must be a list, not {type(values).__name__}")
        for n, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, str | int):
                raise ValueError(
                    f"{where}: {key}[{n}] is {json.dumps(v)[:40]}; ids are strings or integers"
                )
        seen: set[str] = set()
        for n, v in enumerate(values):
            if str(v) in seen:  # 50 and "50" are one id once served as text
                raise ValueError(f"{where}: {key}[{n}] repeats the id {str(v)!r}")
            seen.add(str(v))


def write_dir(
    path: str | Path,
    header: dict[str, Any],
    meta: dict[str, Any],
    tensors: dict[str, np.ndarray],
    extra: dict[str, str] | None = None,
) -> Path:
    """Write a model directory atomically: build it beside `path`, then rename. `extra`:
    more JSON files by name, written inside the same rename (e.g. the pipeline's stages)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(
            {k: np.ascontiguousarray(v) for k, v in tensors.items()},
            str(tmp / "weights.safetensors"),
        )
        config = {
            "format_version": FORMAT_VERSION,
            **header,
            "meta": {k: v for k, v in meta.items() if k not in ID_KEYS},
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=1, default=jsonable))
        ids = {k: meta[k] for k in ID_KEYS if k in meta}
        (tmp / "ids.json").write_text(json.dumps(ids, default=jsonable))
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# config.json's fields and the JSON types each must have (a hand-edited or foreign file
# fails here, naming the file and field, not deep inside a model's loader).
CONFIG_FIELDS: dict[str, type] = {
    "model": str,
    "format_version": int,
    "config": dict,
    "n_users": int,
    "n_items": int,
    "meta": dict,
}


def read_config(path: str | Path) -> dict[str, Any]:
    """A model directory's config.json, checked to be a JSON object with every field of
    the current format; ValueError naming the file and the first bad field."""
    file = Path(path) / "config.json"
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{file}: not a directrec model ({e})") from e
    if not isinstance(config, dict):
        raise ValueError(f"{file}: must hold a JSON object, not a {type(config).__name__}")
    if "format_version" in config and config["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{file}: format version {config['format_version']} is not {FORMAT_VERSION} "
            "(models saved before models stopped holding user histories): train it again"
        )
    for name, kind in CONFIG_FIELDS.items():
        if name not in config:
            raise ValueError(f"{file}: field {name!r} is missing")
        value = config[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{file}: field {name!r} must be a JSON {_JSON_NAMES[kind]}")
    return config


_JSON_NAMES = {str: "string", int: "integer", dict: "object"}


def read_dir(path: str | Path, model_name: str) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """(config.json, meta incl. ids, tensors) of a model directory holding `model_name`."""
    path = Path(path)
    config = read_config(path)
    if config["model"] != model_name:
        raise ValueError(f"{path}: holds a {config['model']!r} model, not {model_name!r}")
    meta = dict(config["meta"])
    if (path / "ids.json").exists():
        try:
            ids = json.loads((path / "ids.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}/ids.json: cannot be read ({e})") from e
        check_ids(ids, f"{path}/ids.json")
        meta.update({k: ids[k] for k in ID_KEYS if k in ids})
    try:
        tensors = load_file(str(path / "weights.safetensors"))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path}/weights.safetensors: cannot be read ({e})") from e
    return config, meta, tensors


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """A config dataclass from saved values (a setting renamed since read under its new
    name, `renamed`; unknown keys from other versions dropped; a setting added since takes
    the value saved configs ran with: `saved_before`)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = renamed(cls, values)
    return cls(**{**saved_before(cls), **{k: v for k, v in values.items() if k in fields}})


def renamed(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """Saved settings with the names a config class has renamed since (its `RENAMED`, old
    name → new) under their new names."""
    names = getattr(cls, "RENAMED", {})
    return {names.get(k, k): v for k, v in values.items()}


def saved_before(cls: type) -> dict[str, Any]:
    """The settings a config class gained after configs were saved, with the value those
    configs ran with where it is not the default (the class's `ADDED_SINCE`)."""
    return dict(getattr(cls, "ADDED_SINCE", {}))


def jsonable(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")
