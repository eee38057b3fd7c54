"""The container's entry point: check the mounts a command needs, then run ``create-heatmaps``.

Mounts (see README "Container"): ``/output`` (written; the working directory) for every run;
``/slides`` (read) unless ``--demo``; ``/weights`` (MIL checkpoints, encoder weights, read) unless
``--demo`` or ``--scores`` (a re-render runs no model); ``/cache`` (HF_HOME, hub downloads)
optional, with a note when absent. A missing one is reported in one line naming the mount and the
``-v`` flag that adds it (exit status 2); ``--help`` / ``-h`` / ``--version`` and
``WSI_HEATMAPS_SKIP_MOUNT_CHECK=1`` skip the check. A mount is a path in ``/proc/self/mountinfo``
(a bind mount on the same file system is not told apart by ``os.path.ismount``).

Test hooks: ``WSI_HEATMAPS_MOUNTINFO`` (another mountinfo file), ``WSI_HEATMAPS_COMMAND`` (another
program than ``create-heatmaps``).
"""
from __future__ import annotations

import os
import sys

#: mount -> (what it holds, the -v flag that adds it)
MOUNTS = {
    "/output": ("where heatmaps and raw results are written", '-v "$PWD/output:/output"'),
    "/slides": ("the slides (and feature files) to read", '-v /path/to/slides:/slides:ro'),
    "/weights": ("MIL checkpoints and encoder weights", '-v /path/to/weights:/weights:ro'),
    "/cache": ("the Hugging Face / torch download cache (HF_HOME)", '-v "$HOME/.cache/wsi-heatmaps:/cache"'),
}
PASS_THROUGH = {"-h", "--help", "--version"}


def mounted(mountinfo: str) -> set[str]:
    """Mount points listed in a ``/proc/self/mountinfo`` file (field 5, octal escapes decoded)."""
    points = set()
    with open(mountinfo, encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 4:
                points.add(fields[4].encode().decode("unicode_escape"))
    return points


def required(argv: list[str]) -> list[str]:
    """The mounts ``create-heatmaps argv`` needs."""
    if "--demo" in argv:
        return ["/output"]
    if "--scores" in argv:
        return ["/output", "/slides"]
    return ["/output", "/slides", "/weights"]


def check(argv: list[str], mounts: set[str]) -> tuple[list[str], list[str]]:
    """(errors, notes): one line per missing required mount, a note when /cache is absent."""
    errors = [f"error: {m} is not mounted ({MOUNTS[m][0]}); add {MOUNTS[m][1]} to podman/docker run"
              for m in required(argv) if m not in mounts]
    if not errors and "/output" in mounts and os.path.isdir("/output") and not os.access("/output", os.W_OK):
        errors.append(f"error: /output is mounted but not writable by uid {os.getuid()}; use podman run "
                      "--userns=keep-id, docker run --user $(id -u):$(id -g), or make the folder writable")
    notes = [] if "/cache" in mounts or "--scores" in argv else \
        [f"note: /cache is not mounted; hub downloads are lost when the container exits ({MOUNTS['/cache'][1]})"]
    return errors, notes


def main(argv: list[str]) -> int:
    command = os.environ.get("WSI_HEATMAPS_COMMAND", "create-heatmaps")
    if not PASS_THROUGH.intersection(argv) and os.environ.get("WSI_HEATMAPS_SKIP_MOUNT_CHECK") != "1":
        errors, notes = check(argv, mounted(os.environ.get("WSI_HEATMAPS_MOUNTINFO", "/proc/self/mountinfo")))
        for line in errors or notes:   # a note only when the command can run
            print(line, file=sys.stderr)
        if errors:
            return 2
    os.execvp(command, [command, *argv])
    return 127   # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
