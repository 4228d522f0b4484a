#!/usr/bin/env bash
# No circle among the server's files (issue 16): file A "uses" file B when an object
# of A refers to a symbol B defines.  The core calls its doors and its bus only through
# their tables, and they call the core's public functions: the graph has no loop.
#
#   scripts/check-layers.sh [OBJDIR]     (default build/release/obj/server)
#
# Prints the graph's loop (tsort's words) and exits 1 when there is one.
set -uo pipefail
dir=${1:-build/release/obj/server}
shopt -s nullglob
objs=("$dir"/*.o)
if [ ${#objs[@]} -eq 0 ]; then
    echo "check-layers: no objects in $dir (build first)"
    exit 1
fi
pairs=$(for o in "${objs[@]}"; do
    f=$(basename "$o" .o)
    nm "$o" | awk -v f="$f" '$2 ~ /^[TDBR]$/ { print "D", $3, f } $1 == "U" { print "U", $2, f }'
done | awk '$1 == "D" { def[$2] = $3; next }
            { use[NR] = $2 " " $3 }
            END { for (i in use) { split(use[i], a, " "); d = def[a[1]];
                                   if (d != "" && d != a[2]) print a[2], d } }' | sort -u)
if ! out=$(printf '%s\n' "$pairs" | tsort 2>&1 >/dev/null) || [ -n "$out" ]; then
    echo "check-layers: the files of $dir call each other in a circle:"
    printf '%s\n' "$out" | sed 's/^/    /'
    exit 1
fi
echo "check-layers: $(printf '%s\n' "$pairs" | wc -l) uses among $(ls "$dir"/*.o | wc -l) files of $dir, no circle"
