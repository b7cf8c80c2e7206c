#!/usr/bin/env python3
"""Fails when a source file #includes a project header from a layer above its own.

The stack (docs/ARCHITECTURE.md): server -> runtime -> {adapters -> formats, kernels -> formats}.
Each folder lists the project folders its files may include; tests/, tools/ and loadtest/ sit
outside the stack and may include anything. Usage: check_layering.py [REPO_ROOT]
"""
import pathlib
import re
import sys

# folder -> project folders its sources may include (itself included).
ALLOWED = {
    "formats": {"formats"},
    "kernels": {"kernels", "formats"},
    "adapters": {"adapters", "formats"},
    "runtime": {"runtime", "kernels/plan", "adapters", "formats"},
    "server": {"server", "runtime", "adapters", "formats", "proto"},
    "cli": {"cli", "server", "runtime", "adapters", "formats", "proto"},
}
# Finer rules inside a folder: runtime's model and engine reach one device's kernels only through
# runtime/backend/ (they see the device-neutral kernels/plan/ types), the tokenizer needs
# nothing of the engine, and the device-neutral plan headers include no device's kernels.
SUBFOLDER_ALLOWED = {
    "runtime/backend": {"runtime", "kernels", "adapters", "formats"},
    "runtime/tokenizer": {"runtime/tokenizer", "formats"},
    "kernels/plan": {"kernels/plan", "formats"},
}
SOURCE_SUFFIXES = {".h", ".cc", ".cu", ".cuh", ".inc"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def layer_of(relative: pathlib.PurePosixPath) -> str:
    text = relative.as_posix()
    for sub in sorted(SUBFOLDER_ALLOWED, key=len, reverse=True):
        if text.startswith(sub + "/"):
            return sub
    return relative.parts[0]


def allowed_for(layer: str):
    return SUBFOLDER_ALLOWED.get(layer) or ALLOWED.get(layer)


def violations(root: pathlib.Path):
    for path in sorted(root.rglob("*")):
        if path.suffix not in SOURCE_SUFFIXES or not path.is_file():
            continue
        relative = pathlib.PurePosixPath(path.relative_to(root).as_posix())
        if relative.parts[0] in {".git", "build", "build-asan", "build-cpu", ".venv", ".cache"}:
            continue
        layer = layer_of(relative)
        allowed = allowed_for(layer)
        if allowed is None:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            match = INCLUDE.match(line)
            if not match:
                continue
            target = pathlib.PurePosixPath(match.group(1))
            if len(target.parts) < 2 or not (root / target).exists() and target.parts[0] != "proto":
                continue  # a relative or system-style include, not a project path
            target_text = target.as_posix()
            if any(target_text == a or target_text.startswith(a + "/") for a in allowed):
                continue
            yield f"{relative}:{number}: {layer}/ may not include {target_text} " \
                  f"(allowed: {', '.join(sorted(allowed))})"


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    found = list(violations(root))
    for message in found:
        print(message, file=sys.stderr)
    if found:
        print(f"check_layering: {len(found)} upward include(s)", file=sys.stderr)
        return 1
    print("check_layering: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
