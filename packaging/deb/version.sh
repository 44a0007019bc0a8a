#!/bin/sh
# Prints the Debian version of the checked-out tree, from `git describe`:
#   tag v1.2.3                 -> 1.2.3
#   3 commits after v1.2.3     -> 1.2.3+git3.gabc1234
#   no tag yet                 -> 0.0~git92.gabc1234 (92 = commits so far, so it grows)
#   uncommitted changes        -> ... + ".dirty"
# Always starts with a digit and uses only [0-9A-Za-z.+~], as Debian wants.
set -eu
if d=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
	d=${d#v}
	case $d in
	*-*-g*) base=${d%-*-g*}; rest=${d#"$base"-}; n=${rest%%-*}; h=${rest#*-}; v="$base+git$n.$h" ;;
	*) v=$d ;;
	esac
	v=$(printf %s "$v" | tr -- '-_' '~~')
else
	v="0.0~git$(git rev-list --count HEAD).g$(git rev-parse --short=7 HEAD)"
fi
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	v="$v.dirty"
fi
printf '%s\n' "$v"
