#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS] -- builds the fuzz targets with clang's
# libFuzzer, ASan and UBSan: the HTTP request path (fuzz_http.c, SECONDS,
# default 60, from tests/fuzz/corpus) and the wiki dump scanner and index
# (fuzz_wiki.c, SECONDS/2, from tests/fuzz/corpus-wiki); new finds go to a
# scratch copy, not the repository.  Exits non-zero on a crash, leaving the
# input in the scratch directory it names.
#   tests/fuzz/run.sh 3600    a longer run by hand
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
if ! command -v clang >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null
  else
    echo "fuzz: needs clang (apt-get install clang)" >&2; exit 1
  fi
fi
llsrc=/usr/share/llhttp llinc=/usr/share/include/llhttp
[[ -f $llsrc/llhttp.c ]] || { echo "fuzz: needs node-llhttp (apt-get install node-llhttp)" >&2; exit 1; }
out=build/fuzz
mkdir -p "$out"
san=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g -O1)
uring=()
[[ -f /usr/include/liburing.h ]] && uring=(-DPP_HAVE_URING -luring)
clang -std=c11 -D_GNU_SOURCE "${san[@]}" -Isrc/engine -I"$llinc" \
  tests/fuzz/fuzz_http.c src/engine/{arena,buf,queue,sync,thread,loop,net,conn,conn_write,accept,http,http_response,http_log,http_static}.c \
  "$llsrc"/{api,http,llhttp}.c -w -pthread "${uring[@]}" -o "$out/fuzz_http"
clang -std=c11 -D_GNU_SOURCE "${san[@]}" -Isrc/engine \
  tests/fuzz/fuzz_wiki.c src/engine/{wiki_scan,wiki_index}.c -w -o "$out/fuzz_wiki"
rc=0
work=$(mktemp -d)
cp tests/fuzz/corpus/* "$work/"
echo "fuzz: http, $secs s from $(ls tests/fuzz/corpus | wc -l) seeds (scratch corpus $work)"
"$out/fuzz_http" -max_total_time="$secs" -max_len=8192 -timeout=10 \
  -artifact_prefix="$work/" "$work" > "$work.log" 2>&1 || rc=1
tail -5 "$work.log"
wwork=$(mktemp -d)
cp tests/fuzz/corpus-wiki/* "$wwork/"
echo "fuzz: wiki, $((secs / 2)) s from $(ls tests/fuzz/corpus-wiki | wc -l) seeds (scratch corpus $wwork)"
"$out/fuzz_wiki" -max_total_time="$((secs / 2))" -max_len=16384 -timeout=10 \
  -artifact_prefix="$wwork/" "$wwork" > "$wwork.log" 2>&1 || rc=1
tail -5 "$wwork.log"
exit $rc
