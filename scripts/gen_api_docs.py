#!/usr/bin/env python3
"""gen_api_docs.py - writes docs/api.md, the API reference, from the doc
comments of include/diffuse.h: every DIFFUSE_API function and every public
type with the comment that precedes it. `--check` compares with the
committed file instead (the test command runs it, so the reference cannot
go stale), and `--symbols FILE` also checks that every symbol the library
exports (nm -D output) is documented.
Usage: scripts/gen_api_docs.py [--check] [--symbols NM_OUTPUT]
"""
import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "include", "diffuse.h")
OUT = os.path.join(ROOT, "docs", "api.md")

# A doc comment and the declaration right after it (which holds no comment of its own).
COMMENT_DECL = re.compile(r"/\*\*((?:(?!\*/).)*)\*/\s*((?:(?!/\*\*[^<])[^;])*;)", re.S)


def clean_comment(text):
    lines = [re.sub(r"^\s*\* ?", "", l) for l in text.strip("\n").splitlines()]
    return "\n".join(lines).strip()


def entries(src):
    """(kind, name, declaration, comment) for each documented declaration."""
    for m in COMMENT_DECL.finditer(src):
        comment, decl = clean_comment(m.group(1)), m.group(2).strip()
        fn = re.match(r"DIFFUSE_API\s+(.*?)\b(diffuse_\w+)\s*\(", decl, re.S)
        if fn:
            yield "function", fn.group(2), re.sub(r"\s+", " ", decl), comment
            continue
        ty = re.match(r"typedef\s+(?:struct|enum)?\s*(\w+)", decl)
        if ty:
            # for struct/enum typedefs the whole body follows; take up to the closing name
            start = m.start(2)
            body = src[start:]
            if decl.rstrip(";").endswith("{") or "{" in decl:
                end = body.find("}")
                close = body.find(";", end)
                full = body[:close + 1]
            else:
                full = decl
            fp = re.search(r"\(\s*\*\s*(\w+)\s*\)", full)  # function-pointer typedef
            name = [fp.group(1)] if fp and "{" not in full else re.findall(r"(\w+)\s*;\s*$", full.strip())
            yield "type", (name[0] if name else ty.group(1)), full.strip(), comment


def render(src):
    out = ["# libdiffuse API reference", "",
           "Generated from the doc comments of `include/diffuse.h` by `scripts/gen_api_docs.py`;",
           "the test command fails when this file and the header disagree. The header's",
           "opening comment states the ABI rules (versioning, struct_size, ownership, threads).", ""]
    items = list(entries(src))
    out += ["## Status codes", "", "| value | name | message |", "|---|---|---|"]
    for name, value, msg in re.findall(r'X\((DIFFUSE_\w+),\s*(\d+),\s*"([^"]*)"\)', src):
        out.append(f"| {value} | `{name}` | {msg} |")
    out.append("")
    for kind, title in (("function", "Functions"), ("type", "Types")):
        out += [f"## {title}", ""]
        for k, name, decl, comment in items:
            if k != kind:
                continue
            out += [f"### `{name}`", "", "```c", decl, "```", "", comment, ""]
    return "\n".join(out).rstrip() + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--symbols")
    a = ap.parse_args()
    src = open(HEADER, encoding="utf-8").read()
    doc = render(src)
    status = 0
    if a.check:
        if not os.path.exists(OUT) or open(OUT, encoding="utf-8").read() != doc:
            print("docs/api.md is stale: run scripts/gen_api_docs.py")
            status = 1
    else:
        with open(OUT, "w", encoding="utf-8") as f:
            f.write(doc)
    if a.symbols:
        documented = {name for kind, name, _, _ in entries(src) if kind == "function"}
        exported = {l.split()[-1] for l in open(a.symbols) if l.strip()}
        missing = sorted(exported - documented)
        if missing:
            print("exported but not documented: " + ", ".join(missing))
            status = 1
        else:
            print(f"all {len(exported)} exported functions are documented")
    if status == 0 and a.check:
        print("docs/api.md matches the header")
    return status


if __name__ == "__main__":
    sys.exit(main())
