"""pillar.example shows every key of the formula with its default: the keys set in it are
defaults.yaml's, with defaults.yaml's values, and each per-release key
(osmajorreleasemap.yaml) is shown commented out once per release, "# KEY: VALUE  (RHEL N)"."""

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_TEXT = (REPO / "pillar.example").read_text()
EXAMPLE = yaml.safe_load(EXAMPLE_TEXT)["gpu"]
DEFAULTS = yaml.safe_load((REPO / "salt/gpu/defaults.yaml").read_text())["gpu"]
RELEASES = yaml.safe_load((REPO / "salt/gpu/osmajorreleasemap.yaml").read_text())

KEY_LINE = re.compile(r"^( *)([A-Za-z0-9_.:-]+):")
RELEASE_COMMENT = re.compile(r"^( *)# ([a-z_]+): (.*?)  \(RHEL ([0-9, ]+)\)$")


def leaves(tree, path=()):
    """{("driver", "stream"): value, ...}: every value that is not a mapping, by its path."""
    found = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            found.update(leaves(value, path + (key,)))
        else:
            found[path + (key,)] = value
    return found


def release_comments(text):
    """{(path, release): value} of the "# KEY: VALUE  (RHEL N, M)" lines, each placed under
    the keys above it by its indentation (gpu: at column 0, two spaces a level)."""
    found, stack = {}, []
    for line in text.splitlines():
        comment = RELEASE_COMMENT.match(line)
        if comment:
            depth = len(comment[1]) // 2
            path = tuple(stack[1:depth]) + (comment[2],)
            for release in re.split(r",\s*", comment[4]):
                assert (path, release) not in found, f"{path} shown twice for RHEL {release}"
                found[path, release] = yaml.safe_load(comment[3])
            continue
        key = KEY_LINE.match(line)
        if key:
            depth = len(key[1]) // 2
            stack[depth:] = [key[2]]
    return found


PER_RELEASE = {path for values in RELEASES.values() for path in leaves(values)}
COMMENTS = release_comments(EXAMPLE_TEXT)


@pytest.mark.parametrize("path", sorted(set(leaves(DEFAULTS)) - PER_RELEASE), ids=".".join)
def test_each_default_is_shown_with_its_value(path):
    shown = leaves(EXAMPLE)
    assert path in shown, f"pillar.example lacks gpu:{':'.join(path)} (default {leaves(DEFAULTS)[path]!r})"
    assert shown[path] == leaves(DEFAULTS)[path], f"gpu:{':'.join(path)}: pillar.example shows {shown[path]!r}"


def test_it_sets_no_key_the_defaults_lack_and_no_per_release_key():
    extra = set(leaves(EXAMPLE)) - (set(leaves(DEFAULTS)) - PER_RELEASE)
    assert not extra, f"pillar.example sets keys that are not release-independent defaults: {sorted(extra)}"


@pytest.mark.parametrize("release", sorted(RELEASES, key=int))
def test_each_per_release_default_is_shown_for_each_release(release):
    values = leaves(RELEASES[release])
    wrong = {path: (COMMENTS.get((path, release), "missing"), value) for path, value in values.items()
             if COMMENTS.get((path, release), "missing") != value}
    assert not wrong, f"RHEL {release}: pillar.example's comment vs osmajorreleasemap.yaml: {wrong}"
    unknown = {path for path, shown_for in COMMENTS if shown_for == release} - set(values)
    assert not unknown, f"RHEL {release}: pillar.example shows per-release keys the release lacks: {unknown}"
