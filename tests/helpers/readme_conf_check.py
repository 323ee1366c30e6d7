#!/usr/bin/env python3
"""Run every configuration example of the README through `vtpmd -n` and
fail on any syntax error (a "file:line: message" diagnostic).  Examples
that name files this machine lacks may fail the file checks; that is
fine here, a syntax or unknown-key error is not.

usage: readme_conf_check.py README.md VTPMD_BIN
"""
import os
import re
import subprocess
import sys
import tempfile


def main():
    text = open(sys.argv[1]).read()
    blocks = [b for b in re.findall(r"```\n(.*?)```", text, re.S)
              if re.search(r"^\[[a-z]", b, re.M)]
    bad = 0
    for b in blocks:
        if not re.search(r"^\[vtpmd\]", b, re.M):
            b = "[vtpmd]\nstate_dir = /nonexistent/s\nmountpoint = /nonexistent/m\n" + b
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
            f.write(b)
        p = subprocess.run([sys.argv[2], "-n", "-c", f.name], capture_output=True, text=True)
        os.unlink(f.name)
        for line in p.stderr.splitlines():
            if line.endswith(": No such file or directory"):
                continue    # a file of the example's machine, not a syntax error
            if re.match(re.escape(f.name) + r":\d+: ", line):
                print("README example:", line)
                bad += 1
    print(f"{len(blocks)} examples, {bad} syntax errors")
    return 1 if bad or not blocks else 0


if __name__ == "__main__":
    sys.exit(main())
