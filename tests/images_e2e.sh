#!/usr/bin/env bash
# Tests (e2e): data.name images end to end. A generated folder of RGB and gray PNGs in two
# subfolders plus a file that is not an image: a 2-rank DCGAN run trains on it, rank 0 warns once
# naming the skipped file, log.jsonl has data_wait_s. A folder with no readable image stops the
# run with one line naming it. Usage: images_e2e.sh GANTRY CONFIGS MPIEXEC [MPI FLAGS...]
set -u
gantry=$1; configs=$2; mpiexec=$3; shift 3
mpi_flags=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL $*"; exit 1; }

mkdir -p "$work/images/a" "$work/images/b" "$work/empty"
python3 - "$work/images" <<'PY' || fail "cannot write the PNG fixtures"
import struct, sys, zlib
def png(path, w, h, comp, f):
    raw = b"".join(b"\0" + bytes(f(x, y, c) for x in range(w) for c in range(comp)) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, {1: 0, 3: 2}[comp], 0, 0, 0)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
for i in range(40):
    png(f"{sys.argv[1]}/{'ab'[i % 2]}/{i:03d}.png", 40, 36, 1 if i % 4 == 0 else 3,
        lambda x, y, c, i=i: (3 * x + 5 * y + 60 * c + i) % 256)
PY
head -c 500 /dev/urandom > "$work/images/b/broken.png"
printf 'not an image' > "$work/empty/readme.png"

small=(--set train.batch_size=16 --set model.dcgan.g_width=8 --set model.dcgan.d_width=8
       --set train.log_every=2 --set train.sample_every=0 --set checkpoint.every=0 --set data.workers=1)
"$mpiexec" "${mpi_flags[@]}" -np 2 "$gantry" train --config "$configs/images-dcgan.yaml" --set data.path="$work/images" \
  --set run.dir="$work/run" --set train.steps=4 "${small[@]}" > "$work/out" 2>&1 || { cat "$work/out"; fail "training on the folder"; }
[ "$(grep -c 'skipped 1 unreadable image(s) of 41: .*/b/broken.png' "$work/out")" -eq 1 ] ||
  { cat "$work/out"; fail "expected one warning naming b/broken.png"; }
grep -q 'images (40 records)' "$work/out" || { cat "$work/out"; fail "expected 40 records"; }
[ "$(grep -c '"data_wait_s"' "$work/run/log.jsonl")" -eq 2 ] || fail "log.jsonl lacks data_wait_s"
echo "ok   trains on 40 PNGs (RGB and gray, two subfolders), one warning for the broken file"

"$mpiexec" "${mpi_flags[@]}" -np 2 "$gantry" train --config "$configs/images-dcgan.yaml" --set data.path="$work/empty" \
  --set run.dir="$work/run-empty" --set train.steps=2 "${small[@]}" > "$work/out" 2>&1 && fail "an unreadable folder trained"
grep -q "$work/empty: no readable PNG or JPEG image" "$work/out" || { cat "$work/out"; fail "no error naming the folder"; }
echo "ok   a folder with no readable image: $(grep -m1 'no readable' "$work/out")"
