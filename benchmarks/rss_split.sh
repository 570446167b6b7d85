#!/usr/bin/env bash
# Peak anonymous vs file-backed resident memory of a command (and its children), sampled from
# /proc every 0.5 s. Separates real process memory (RssAnon) from pages of memory-mapped files
# such as the waveform cache (RssFile: page cache, reclaimable).
#   benchmarks/rss_split.sh fsl train --data-dir BIG --steps 20 --out /tmp/r --force
set -uo pipefail
"$@" > /dev/null 2>&1 &
pid=$!
maxa=0; maxf=0
while kill -0 "$pid" 2>/dev/null; do
  for p in $pid $(pgrep -P "$pid"); do
    a=$(awk '/RssAnon/{print $2}' "/proc/$p/status" 2>/dev/null)
    f=$(awk '/RssFile/{print $2}' "/proc/$p/status" 2>/dev/null)
    [ -n "$a" ] && [ "$a" -gt "$maxa" ] && maxa=$a
    [ -n "$f" ] && [ "$f" -gt "$maxf" ] && maxf=$f
  done
  sleep 0.5
done
wait "$pid"; rc=$?
echo "peak RssAnon $((maxa / 1024)) MiB, peak RssFile $((maxf / 1024)) MiB (exit $rc)"
