#!/usr/bin/env bash
# The mechanical rules of ../shared/STYLE.md, as a TAP program: one test
# per rule over every C file of the tree.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find fuse pool vtpmd tests -name '*.[ch]')
n=0 pass=0 fail=0

check() {
	local name=$1 found=$2
	n=$((n + 1))
	if [ -z "$found" ]; then
		echo "ok $n $name"
		pass=$((pass + 1))
	else
		echo "$found" | head -n 10 | sed 's/^/# /'
		echo "not ok $n $name"
		fail=$((fail + 1))
	fi
}

echo "TAP version 13"
echo "1..6"
# shellcheck disable=SC2086
check no_line_comments "$(grep -nE '^\s*//|[;{}]\s*//' $files | grep -v 'https\?://')"
# shellcheck disable=SC2086
check no_todo_fixme_hack "$(grep -nwE 'TODO|FIXME|HACK' $files)"
long=$(for f in $files; do
	expand -t 8 "$f" | awk -v f="$f" 'length($0) > 100 && $0 !~ /"/ { print f ":" FNR }'
done)
check lines_within_100_columns "$long"
check libtpms_only_in_pool_worker "$(git grep -lE '#include <libtpms/' -- '*.c' '*.h' |
	grep -vE '^pool/(engine|nvstore|worker|instance_main|manufacture|tcti)\.[ch]$')"
check curl_and_jsonc_only_in_vtpmd "$(git grep -lE '#include <(curl|json-c)/' -- '*.c' '*.h' |
	grep -vE '^(vtpmd/|tests/)')"
check fuse_and_pool_do_not_include_vtpmd "$(git grep -nE '#include "(conf|mux|rotate|log|event|hook|status|tpmcmd|util)\.h"' -- 'fuse/*' 'pool/*')"
echo "$pass passed, $fail failed, 0 skipped"
[ "$fail" = 0 ]
