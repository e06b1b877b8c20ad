"""The ctypes declarations against the C library and its header: struct
sizes as the library reports them, every field's offset as a C compiler
lays it out, every exported function declared, every enum value mirrored,
and the library search and version check."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FAST, header_path

import diffuse
from diffuse import _lib, enums


def _header_text() -> str:
    path = header_path()
    if not path.exists():
        pytest.skip(f"header not found at {path} (set DIFFUSE_INCLUDE)")
    return path.read_text()


# -- sizes the library itself reports ------------------------------------------


@pytest.mark.parametrize("name", sorted(_lib.PARAMS_STRUCTS))
def test_params_struct_size_matches_init(name: str) -> None:
    struct = _lib.PARAMS_STRUCTS[name]
    init = getattr(_lib.lib(), name + "_init")
    # room for a larger library struct, as new_params() leaves
    buf = (ctypes.c_uint8 * (ctypes.sizeof(struct) + 1024))()
    init(ctypes.cast(buf, ctypes.POINTER(struct)))
    written = struct.from_buffer(buf).struct_size
    assert written == ctypes.sizeof(struct), f"{name}: library {written} bytes, binding {ctypes.sizeof(struct)}"


def test_model_info_size_matches_library(model: diffuse.Model) -> None:
    # get_info writes min(our struct_size, its sizeof) into struct_size.
    struct = _lib.diffuse_model_info
    buf = (ctypes.c_uint8 * (ctypes.sizeof(struct) + 256))()
    info = struct.from_buffer(buf)
    info.struct_size = len(buf)
    handle = model._acquire()
    try:
        assert _lib.lib().diffuse_model_get_info(handle, ctypes.byref(info)) == 0
    finally:
        model._release()
    assert info.struct_size == ctypes.sizeof(struct)


def test_progress_struct_size_matches_library(ctx: diffuse.Context) -> None:
    sizes = []

    def record(p: object) -> int:
        sizes.append(p.contents.struct_size)  # type: ignore[attr-defined]
        return 0

    ctx._on_progress = record  # type: ignore[method-assign]
    ctx.generate("x", **FAST)
    assert sizes and set(sizes) == {ctypes.sizeof(_lib.diffuse_progress)}


# -- layouts as a C compiler sees the header ----------------------------------


def _c_layout_program() -> str:
    lines = []
    for name, struct in _lib.ALL_STRUCTS.items():
        lines.append(f'    printf("{name} %zu\\n", sizeof({name}));')
        for field, _ in struct._fields_:
            lines.append(
                f'    printf("{name}.{field} %zu,%zu\\n", offsetof({name}, {field}), sizeof((({name} *)0)->{field}));'
            )
    enums_c = [
        "diffuse_status",
        "diffuse_stage",
        "diffuse_sampler",
        "diffuse_pixel_format",
        "diffuse_device",
        "diffuse_weight_type",
        "diffuse_operation",
    ]
    for e in enums_c:
        lines.append(f'    printf("{e} %zu\\n", sizeof({e}));')
    body = "\n".join(lines)
    return f"#include <stddef.h>\n#include <stdio.h>\n#include <diffuse.h>\nint main(void) {{\n{body}\n    return 0;\n}}\n"


def test_struct_layouts_match_header(tmp_path: Path) -> None:
    header = header_path()
    _header_text()
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to read the header's layouts")
    src = tmp_path / "layout.c"
    src.write_text(_c_layout_program())
    exe = tmp_path / "layout"
    subprocess.run([cc, "-std=c11", "-I", str(header.parent), str(src), "-o", str(exe)], check=True)
    c_says = dict(line.rsplit(" ", 1) for line in subprocess.check_output([str(exe)], text=True).splitlines())
    mismatches = []
    for name, struct in _lib.ALL_STRUCTS.items():
        if int(c_says[name]) != ctypes.sizeof(struct):
            mismatches.append(f"sizeof({name}): C {c_says[name]}, ctypes {ctypes.sizeof(struct)}")
        for field, _ in struct._fields_:
            c_off, c_size = (int(x) for x in c_says[f"{name}.{field}"].split(","))
            ours = getattr(struct, field)
            if (c_off, c_size) != (ours.offset, ours.size):
                mismatches.append(
                    f"{name}.{field}: C offset {c_off} size {c_size}, ctypes offset {ours.offset} size {ours.size}"
                )
    for key, value in c_says.items():
        if "." not in key and key not in _lib.ALL_STRUCTS and int(value) != ctypes.sizeof(_lib.c_enum):
            mismatches.append(f"sizeof({key}) is {value}, the binding uses {ctypes.sizeof(_lib.c_enum)}")
    assert not mismatches, "\n".join(mismatches)


def test_every_header_struct_is_mirrored() -> None:
    text = _header_text()
    in_header = set(re.findall(r"typedef struct (diffuse_\w+) \{", text))
    assert in_header == set(_lib.ALL_STRUCTS)


def test_every_exported_function_is_declared() -> None:
    text = _header_text()
    in_header = set(re.findall(r"DIFFUSE_API[^;{]*?\b(diffuse_\w+)\s*\(", text))
    assert in_header == set(_lib.FUNCTIONS)


_ENUM_PREFIXES = {
    "DIFFUSE_LOG_": enums.LogLevel,
    "DIFFUSE_STAGE_": enums.Stage,
    "DIFFUSE_WEIGHTS_": enums.WeightType,
    "DIFFUSE_FAMILY_": enums.Family,
    "DIFFUSE_DEVICE_": enums.Device,
    "DIFFUSE_PRECISION_": enums.Precision,
    "DIFFUSE_PIXEL_": enums.PixelFormat,
    "DIFFUSE_ORIGIN_": enums.RowOrigin,
    "DIFFUSE_COLOR_": enums.ColorSpace,
    "DIFFUSE_SAMPLER_": enums.Sampler,
    "DIFFUSE_JOB_": enums.JobState,
    "DIFFUSE_OP_": enums.Operation,
}


def test_enums_match_header() -> None:
    text = _header_text()
    for prefix, kind in _ENUM_PREFIXES.items():
        c = {m[len(prefix):]: int(v) for m, v in re.findall(rf"\b({prefix}\w+) = (\d+)", text)}
        assert c == {m.name: m.value for m in kind}, kind.__name__
    statuses = {n: int(v) for n, v in re.findall(r"X\((DIFFUSE_\w+), (\d+),", text)}
    ours = {re.sub(r"^DIFFUSE_(ERR_)?", "", n): v for n, v in statuses.items()}
    assert ours == {m.name: m.value for m in diffuse.Status}
    for status in diffuse.Status:
        assert diffuse.status_string(status) != "unknown status"


# -- finding the library, and its version ------------------------------------------


def test_version_major_matches() -> None:
    major, minor, patch = diffuse.version_info()
    assert major == diffuse.EXPECTED_MAJOR
    assert diffuse.version() == f"{major}.{minor}.{patch}"


def test_loaded_the_library_asked_for() -> None:
    asked = os.environ.get("DIFFUSE_LIBRARY")
    if not asked:
        pytest.skip("DIFFUSE_LIBRARY not set")
    assert os.path.realpath(diffuse.library_path()) == os.path.realpath(asked)


def test_diffuse_library_may_name_a_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DIFFUSE_LIBRARY", str(tmp_path))
    assert _lib.candidates() == [(str(tmp_path / "libdiffuse.so.0"), True)]
    monkeypatch.delenv("DIFFUSE_LIBRARY")
    places = [p for p, explicit in _lib.candidates()]
    assert places[0] == "libdiffuse.so.0"


def _import_in_subprocess(env_library: str | None, tmp_path: Path) -> subprocess.CompletedProcess:
    code = textwrap.dedent(
        """
        import diffuse
        try:
            diffuse.version()
        except diffuse.LibraryNotFoundError as e:
            print("NOTFOUND"); print(e)
        except diffuse.LibraryVersionError as e:
            print("VERSION"); print(e)
        else:
            print("LOADED", diffuse.library_path())
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DIFFUSE_LIBRARY", "LD_LIBRARY_PATH")}
    if env_library is not None:
        env["DIFFUSE_LIBRARY"] = env_library
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True)


def test_missing_library_lists_every_place_tried(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere" / "libdiffuse.so.0")
    out = _import_in_subprocess(missing, tmp_path).stdout
    assert out.startswith("NOTFOUND") and missing in out and "DIFFUSE_LIBRARY" in out

    out = _import_in_subprocess(None, tmp_path).stdout
    if out.startswith("LOADED"):
        pytest.skip(f"libdiffuse is installed system-wide ({out.split()[1]})")
    assert out.startswith("NOTFOUND") and "libdiffuse.so.0:" in out


def test_wrong_major_is_refused(tmp_path: Path) -> None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to build a fake library")
    src = tmp_path / "fake.c"
    src.write_text("unsigned diffuse_version(void) { return (%d + 1) * 10000; }\n" % diffuse.EXPECTED_MAJOR)
    so = tmp_path / "libdiffuse.so.0"
    subprocess.run([cc, "-shared", "-fPIC", str(src), "-o", str(so)], check=True)
    out = _import_in_subprocess(str(so), tmp_path).stdout
    assert out.startswith("VERSION") and str(so) in out
